import ArgumentParser
import Dispatch
import OrchSim
import Synchronization

/// `orch-sim`: the deterministic cluster simulator (the real manager and worker machines
/// against a simulated network, engine, store and clock, all from one seed).
@main
struct OrchSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orch-sim",
        abstract: "Runs the manager and worker machines in a deterministic, simulated cluster and checks its invariants.",
        subcommands: [Run.self, Replay.self])
}

/// `FIRST:COUNT`.
struct SeedRange: ExpressibleByArgument {
    var first: UInt64
    var count: Int

    init?(argument: String) {
        let parts = argument.split(separator: ":")
        guard parts.count == 2, let first = UInt64(parts[0]), let count = Int(parts[1]), count >= 0 else { return nil }
        self.first = first
        self.count = count
    }
}

struct ClusterOptions: ParsableArguments {
    @Option(help: "Worker nodes in the cluster.")
    var workers = 3

    @Option(help: "Steps of the fault phase (the quiet phase that follows runs until the cluster settles).")
    var steps = 2000

    @Option(name: .customLong("without"), parsing: .upToNextOption,
            help: "Fault kinds left out: resets, partitions, worker-crashes, worker-stops, manager-crashes, store-failures, event-losses, half-opens.")
    var without: [String] = []

    @Option(help: "The longest a crashed or stopped worker process stays down, in seconds.")
    var maxWorkerDowntime: Double?

    @Flag(help: "Add clients that claim a node with no certificate or another node's (invariant impostors-refused).")
    var impostors = false

    @Flag(help: "Add a client that creates, scales, updates, rolls back and removes services (invariants one-task-per-slot-version, service-replicas-kept).")
    var services = false

    @Flag(help: "Add an operator who drains and undrains nodes and removes ended tasks (invariant drained-node-gets-nothing).")
    var operators = false

    @Flag(help: "Several managers: another now and then takes the lease while the leader still acts, not knowing yet (invariant no-stale-commit).")
    var leaderChanges = false

    @Option(name: .customLong("ignore"), parsing: .upToNextOption,
            help: "Invariants not checked (to explore past a known violation).")
    var ignore: [String] = []

    func validate() throws {
        for name in ignore where Invariant(rawValue: name) == nil { throw ValidationError("unknown invariant '\(name)'") }
        let known: Set = ["resets", "partitions", "worker-crashes", "worker-stops", "manager-crashes", "store-failures", "event-losses", "half-opens"]
        for kind in without where !known.contains(kind) { throw ValidationError("unknown fault kind '\(kind)'") }
    }

    var profile: FaultProfile {
        var profile = FaultProfile()
        let off = Set(without)
        profile.connectionResets = !off.contains("resets")
        profile.partitions = !off.contains("partitions")
        profile.workerCrashes = !off.contains("worker-crashes")
        profile.workerStops = !off.contains("worker-stops")
        profile.managerCrashes = !off.contains("manager-crashes")
        profile.storeFailures = !off.contains("store-failures")
        profile.eventStreamLosses = !off.contains("event-losses")
        profile.halfOpens = !off.contains("half-opens")
        profile.impostors = impostors
        profile.services = services
        profile.operators = operators
        profile.leaderChanges = leaderChanges
        if let seconds = maxWorkerDowntime { profile.maximumWorkerDowntime = .milliseconds(Int(seconds * 1000)) }
        return profile
    }

    func simulation(seed: UInt64) -> Simulation {
        let simulation = Simulation(seed: seed, workers: workers, steps: steps)
        simulation.faults = profile
        simulation.ignoring = Set(ignore.compactMap(Invariant.init(rawValue:)))
        return simulation
    }
}

extension OrchSim {
    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Runs many seeds; prints each violating seed with the last steps before the violation.")

        @Option(help: "The seeds, as FIRST:COUNT.")
        var seeds: SeedRange

        @OptionGroup var cluster: ClusterOptions

        @Option(help: "Seeds run at once (default: one per core).")
        var jobs: Int?

        func run() throws {
            let jobs = max(1, self.jobs ?? Simulation.onlineCores)
            let cluster = self.cluster
            var totalSteps = 0, violating = 0
            // In chunks, each printed in seed order, so that the output does not depend on timing.
            let chunk = jobs * 16
            var start = 0
            while start < seeds.count {
                let count = min(chunk, seeds.count - start)
                let first = seeds.first + UInt64(start)
                let done = Self.runAll(count: count, jobs: jobs) { cluster.simulation(seed: first + UInt64($0)).run() }
                for result in done {
                    totalSteps += result.steps
                    guard let violation = result.violations.first else { continue }
                    violating += 1
                    print("seed \(violation.seed) step \(violation.step) \(violation.invariant.rawValue): \(violation.message)")
                    for line in violation.trace { print("    \(line)") }
                }
                start += count
            }
            print("seeds \(seeds.count), steps \(totalSteps), violations \(violating)")
            if violating > 0 { throw ExitCode(1) }
        }

        /// Runs `count` items on `jobs` threads; the results in order.
        static func runAll(count: Int, jobs: Int, _ body: @escaping @Sendable (Int) -> SimulationResult) -> [SimulationResult] {
            let results = Mutex<[Int: SimulationResult]>([:])
            let next = Atomic<Int>(0)
            DispatchQueue.concurrentPerform(iterations: min(jobs, count)) { _ in
                while true {
                    let index = next.add(1, ordering: .relaxed).oldValue
                    guard index < count else { return }
                    let result = body(index)
                    results.withLock { $0[index] = result }
                }
            }
            let done = results.withLock { $0 }
            return (0..<count).map { done[$0]! }
        }
    }

    struct Replay: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Runs one seed and prints it step by step.")

        @Option(help: "The seed.")
        var seed: UInt64

        @OptionGroup var cluster: ClusterOptions

        func run() throws {
            let simulation = cluster.simulation(seed: seed)
            simulation.recordsFullTrace = true
            let result = simulation.run()
            for line in result.trace { print(line) }
            print("-- \(result.counters)")
            for violation in result.violations { print("violation: \(violation)") }
            print("seeds 1, steps \(result.steps), violations \(result.violations.count)")
            if !result.violations.isEmpty { throw ExitCode(1) }
        }
    }
}
