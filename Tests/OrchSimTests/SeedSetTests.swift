import OrchCore
import OrchSim
import Testing

/// The fixed seed set: every seed runs the whole fault model (resets, partitions, worker and
/// manager crashes, graceful worker restarts, store failures, lost event streams, hosts that vanish leaving half-open connections, clients
/// submitting, re-submitting and stopping) and then the quiet phase, with every invariant
/// checked after every step. `orch-sim replay --seed S --steps 400` shows a failing seed.
@Suite("Simulator seed set")
struct SeedSetTests {
    static let seeds: Range<UInt64> = 0..<2000
    static let steps = 400

    @Test("2,000 seeds, every invariant after every step, no violation", .timeLimit(.minutes(15)))
    func fixedSeedSet() {
        let results = runSeeds(Self.seeds, steps: Self.steps)
        let violations = results.compactMap(\.violations.first)

        // Not vacuous: the set exercised what the invariants are about.
        let total = results.reduce(into: Counters()) { sum, result in
            let c = result.counters
            sum.submissions += c.submissions
            sum.acknowledged += c.acknowledged
            sum.stops += c.stops
            sum.containersStarted += c.containersStarted
            sum.resets += c.resets
            sum.partitions += c.partitions
            sum.managerCrashes += c.managerCrashes
            sum.workerCrashes += c.workerCrashes
            sum.workerStops += c.workerStops
            sum.storeFailures += c.storeFailures
            sum.eventStreamLosses += c.eventStreamLosses
            sum.halfOpens += c.halfOpens
        }
        #expect(total.acknowledged > 10 * Self.seeds.count)
        #expect(total.stops > Self.seeds.count)
        #expect(total.managerCrashes > Self.seeds.count / 4)
        #expect(total.workerCrashes > Self.seeds.count / 4)
        #expect(total.workerStops > Self.seeds.count / 8)
        #expect(total.partitions > Self.seeds.count)
        #expect(total.storeFailures > Self.seeds.count / 2)
        #expect(total.halfOpens > Self.seeds.count / 2)
        // Every run that did not stop at a violation went through both phases.
        #expect(results.filter(\.violations.isEmpty).allSatisfy { $0.steps > Self.steps && $0.counters.quietTime > .zero })

        if !violations.isEmpty {
            var byInvariant: [Invariant: Int] = [:]
            for violation in violations { byInvariant[violation.invariant, default: 0] += 1 }
            let counts = byInvariant.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue): \($0.value)" }.joined(separator: ", ")
            let lines = violations.map { "  \($0)" }.joined(separator: "\n")
            let traces = violations.prefix(3).map { "seed \($0.seed), last steps:\n" + $0.trace.map { "    " + $0 }.joined(separator: "\n") }.joined(separator: "\n")
            Issue.record("\(violations.count) of \(Self.seeds.count) seeds violate an invariant (\(counts)):\n\(lines)\n\(traces)")
        }
    }

    /// Impostors on top of every other fault: clients claiming a node with no certificate or
    /// with another node's. None is ever welcomed, none takes a node's connection, and the
    /// rest of the run is held to every other invariant as well.
    @Test("500 seeds with impostors, no violation", .timeLimit(.minutes(10)))
    func seedsWithImpostors() {
        let results = runSeeds(0..<500, steps: Self.steps) { $0.faults.impostors = true }
        let violations = results.compactMap(\.violations.first)
        #expect(violations.isEmpty, "\(violations.prefix(5).map(\.description))")
        #expect(results.reduce(0) { $0 + $1.counters.impostors } > 500 * 5, "impostors came")
    }

    /// Services on top of every fault: a client creates one to three services, scales them,
    /// rolls new templates out (some whose tasks fail), changes their update policies, rolls
    /// back, removes them and creates them again. No slot ever has two live tasks of one
    /// version, and at the end every deploy has ended and every service runs its replicas.
    @Test("300 seeds with services, no violation", .timeLimit(.minutes(15)))
    func seedsWithServices() {
        let count = 300
        let results = runSeeds(0..<UInt64(count), steps: Self.steps) { $0.faults.services = true }
        let violations = results.compactMap(\.violations.first)
        #expect(violations.isEmpty, "\(violations.count) of \(count) seeds: \(violations.prefix(5).map(\.description))")
        // Not vacuous: the services were created and changed, and the manager answered.
        let total = results.reduce(into: Counters()) { sum, result in
            let c = result.counters
            sum.serviceCreates += c.serviceCreates
            sum.serviceScales += c.serviceScales
            sum.serviceTemplates += c.serviceTemplates
            sum.serviceFailingTemplates += c.serviceFailingTemplates
            sum.serviceRollbacks += c.serviceRollbacks
            sum.serviceRemovals += c.serviceRemovals
            sum.serviceAnswers += c.serviceAnswers
        }
        #expect(total.serviceCreates > count)
        #expect(total.serviceScales > count)
        #expect(total.serviceTemplates > count)
        #expect(total.serviceFailingTemplates > count / 4)
        #expect(total.serviceRollbacks > count / 4)
        #expect(total.serviceRemovals > count / 10)
        #expect(total.serviceAnswers > 3 * count)
    }

    /// An operator on top of every fault: nodes drained (their tasks moved, or not) and
    /// undrained, ended tasks removed and their ids given again. Nothing is placed on a node
    /// whose drain was answered, and every other invariant holds as well.
    @Test("400 seeds with an operator, no violation", .timeLimit(.minutes(10)))
    func seedsWithAnOperator() {
        let count = 400
        let results = runSeeds(0..<UInt64(count), steps: Self.steps) { $0.faults.operators = true }
        let violations = results.compactMap(\.violations.first)
        #expect(violations.isEmpty, "\(violations.count) of \(count) seeds: \(violations.prefix(5).map(\.description))")
        let drains = results.reduce(0) { $0 + $1.counters.drains }
        let undrains = results.reduce(0) { $0 + $1.counters.undrains }
        let purges = results.reduce(0) { $0 + $1.counters.purges }
        #expect(drains > count && undrains > count && purges > count / 2, "drains \(drains), undrains \(undrains), purges \(purges)")
    }

    /// Three managers leading by the lease (the real `LeaseMachine`) on a simulated database:
    /// leaders paused, managers cut off from the database, a slow database, its clock
    /// jumping. A leader paused past its lease acts on for a moment once it resumes, beside
    /// the new one. Nothing of a deposed leader is committed, no leader not paused acts once
    /// a later epoch is taken, no task ever has two current attempts across the changes, and
    /// every other invariant holds.
    @Test("300 seeds with leader changes, no violation", .timeLimit(.minutes(10)))
    func seedsWithLeaderChanges() {
        let count = 300
        let results = runSeeds(0..<UInt64(count), steps: Self.steps) { $0.faults.leaderChanges = true }
        let violations = results.compactMap(\.violations.first)
        #expect(violations.isEmpty, "\(violations.count) of \(count) seeds: \(violations.prefix(5).map(\.description))")
        let terms = results.reduce(0) { $0 + $1.counters.takeovers }
        let deposed = results.reduce(0) { $0 + $1.counters.leaderChanges }
        let fenced = results.reduce(0) { $0 + $1.counters.fencedCommits }
        let pauses = results.reduce(0) { $0 + $1.counters.pauses }, cutOffs = results.reduce(0) { $0 + $1.counters.cutOffs }
        #expect(terms > count && pauses > count / 10 && cutOffs > count / 10 && deposed > 0 && fenced > 0,
                "terms \(terms), deposed while acting \(deposed), commits fenced off \(fenced), pauses \(pauses), cut off \(cutOffs)")
    }

    /// Seeds of `orch-sim run --operators` (2,000 steps) that failed, each kept with what it
    /// found: a task with a disconnect policy moved off a drained node while its worker still
    /// ran it (0); an id given again after its removal whose attempts began below the old
    /// ones, refused by the worker as stale (38); a store failure at the collection time that
    /// made the manager's timer spin (50); and the simulator's own mistakes: a late stop that
    /// ran through a second downtime (87), a purge refused before it was applied taken as
    /// applied (215), a stop answered in the same commit as the purge after it (338), a purge
    /// refused in a failed commit with the id already given again in it, taken as not applied
    /// (80012).
    @Test("Seeds of the operator", .timeLimit(.minutes(2)), arguments: [UInt64(0), 38, 50, 87, 215, 338, 80012])
    func seedOfTheOperator(seed: UInt64) {
        let results = runSeeds(seed..<(seed + 1), steps: 2000) { $0.faults.operators = true }
        #expect(results.flatMap(\.violations).isEmpty, "\(results.flatMap(\.violations).map(\.description))")
        #expect(results.allSatisfy { $0.steps > 2000 }, "the run went through both phases")
    }

    /// Seeds found failing in wider runs than the set above, each kept with what it found.
    /// The simulator was wrong in both, not the machines: a dial whose far host vanished
    /// before the handshake was never answered nor timed out (7365), and a worker down again
    /// while the stop it began on its return still ran had that copy counted (20551).
    @Test("Seeds from wider runs", .timeLimit(.minutes(2)), arguments: [(UInt64(7365), 400), (20551, 2000)])
    func seedFromAWiderRun(seed: UInt64, steps: Int) {
        let results = runSeeds(seed..<(seed + 1), steps: steps)
        #expect(results.count == 1)
        #expect(results.flatMap(\.violations).isEmpty, "\(results.flatMap(\.violations).map(\.description))")
        #expect(results.allSatisfy { $0.steps > steps }, "the run went through both phases")
    }
}
