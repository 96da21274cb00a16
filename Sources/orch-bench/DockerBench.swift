import ArgumentParser
import Foundation
import Logging
import NIOHTTP1
import OrchCore
import OrchRuntime
import OrchTestSupport

/// N long-running containers until all run: (a) through the Docker Engine API directly,
/// (b) as tasks of a local manager and worker, (c) as a Docker Swarm service.
struct DockerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "docker",
        abstract: "Start latency on real Docker: the Engine API directly, the orchestrator, Docker Swarm.",
        discussion: """
            Examples:
              orch-bench docker --counts 1,20,100 --runs 3
              orch-bench docker --smoke            (no Swarm)
            """)

    @Option(help: "Numbers of containers, comma-separated.")
    var counts: IntList = IntList(argument: "1,20,100")!

    @Option(help: "Runs per size (the median is printed).")
    var runs: Int = 3

    @Option(help: "Containers created and started at once through the API (the worker's own limit).")
    var concurrency: Int = 4

    @Flag(inversion: .prefixedNo, help: "Measure Docker Swarm too.")
    var swarm = true

    @Flag(help: "Tiny sizes, no Swarm, for CI.")
    var smoke = false

    static let image = "orch-busybox:latest"
    /// The same limits for every contender: the task default (0.1 CPU, 64 MiB). A smaller CPU
    /// quota slows the container's own start (1% of a CPU: 1.7 s instead of 0.4 s here).
    static let resources = Resources.default

    func run() async throws {
        let sizes = smoke ? [2] : counts.values
        let runs = smoke ? 1 : self.runs
        print("docker: time until N containers run (median of \(runs)); \(machineDescription())")
        let runtime = try await DockerRuntime.connect(logger: Logger(label: "bench"))
        let manager = try await ManagerProcess.start()
        // The worker offers 16 CPUs, so that 100 tasks of 0.1 CPU fit on this 2-core machine.
        let workerDir = temporaryDirectory("worker")
        let worker = try LaunchedProcess(orchctl: [
            "worker", "--manager", "127.0.0.1:\(manager.wirePort)", "--http", "127.0.0.1:0", "--name", "bench",
            "--state-dir", workerDir, "--cpus", "16", "--log-level", "warning", "--join-token-file", manager.joinTokenPath,
        ])
        try await waitUntil("the worker to join", within: .seconds(60)) {
            try await metric(manager.api, "orch_nodes", labels: "state=\"up\"") >= 1
        }
        var swarmReady = false
        if swarm && !smoke { swarmReady = initSwarm() }
        var rows: [[String]] = []
        for n in sizes {
            var direct: [Double] = [], orch: [Double] = [], swarmTimes: [Double] = []
            for _ in 0..<runs {
                direct.append(try await runDirect(n, runtime: runtime))
                orch.append(try await runOrchestrator(n, api: manager.api, runtime: runtime, node: try nodeID(workerDir)))
                if swarmReady, let time = try? await runSwarm(n) { swarmTimes.append(time) }
            }
            let a = median(direct), b = median(orch), c = median(swarmTimes)
            rows.append([
                "\(n)", format(a), format(b), swarmTimes.isEmpty ? "-" : format(c), format(b / a), swarmTimes.isEmpty ? "-" : format(b / c),
            ])
        }
        if swarmReady { leaveSwarm() }
        worker.signal(SIGTERM)
        _ = try? await worker.waitForExit(within: .seconds(20))
        if let node = try? nodeID(workerDir) {
            for container in (try? await runtime.list(labels: [ContainerLabel.node: node])) ?? [] { try? await runtime.remove(container.id) }
        }
        await manager.stop()
        try? await runtime.shutdown()
        table(["N", "a: Docker API s", "b: orchestrator s", "c: Swarm s", "b/a", "b/c"], rows)
        if swarm && !smoke && !swarmReady { print("Swarm: could not start here (docker swarm init failed); c left out") }
        print("targets: b/a at most 1.10, b/c at most 0.45 (N = 20)")
    }

    // MARK: (a) the Engine API directly

    func runDirect(_ n: Int, runtime: DockerRuntime) async throws -> Double {
        let label = ["orch.bench": UUID().uuidString.lowercased()]
        let clock = ContinuousClock()
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<concurrency {
                group.addTask {
                    var index = lane
                    while index < n {
                        let id = try await runtime.create(ContainerConfig(
                            image: Self.image, command: ["sleep", "600"], resources: Self.resources, stopGracePeriod: .seconds(1), labels: label))
                        try await runtime.start(id)
                        guard try await runtime.inspect(id).running else { throw BenchError("container \(id.short) is not running") }
                        index += concurrency
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = seconds(clock.now - start)
        for container in try await runtime.list(labels: label) { try? await runtime.remove(container.id) }
        return elapsed
    }

    // MARK: (b) the orchestrator

    func nodeID(_ stateDir: String) throws -> String {
        try String(contentsOfFile: stateDir + "/node-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func runOrchestrator(_ n: Int, api: String, runtime: DockerRuntime, node: String) async throws -> Double {
        let before = try await metric(api, "orch_tasks", labels: "state=\"running\"")
        let clock = ContinuousClock()
        let start = clock.now
        let ids = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<n {
                group.addTask {
                    let answer = try await send(.POST, api + "/tasks", body: #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "stopGracePeriod": "1s"}"#)
                    guard answer.status == 201, let object = try JSONSerialization.jsonObject(with: Data(buffer: answer.body)) as? [String: Any],
                          let id = object["id"] as? String else { throw BenchError("submission refused: \(String(buffer: answer.body))") }
                    return id
                }
            }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        try await waitUntil("\(n) tasks running", within: .seconds(300), every: .milliseconds(10)) {
            try await metric(api, "orch_tasks", labels: "state=\"running\"") >= before + Double(n)
        }
        let elapsed = seconds(clock.now - start)
        for id in ids { _ = try await send(.DELETE, api + "/tasks/\(id)") }
        try await waitUntil("the tasks' containers gone", within: .seconds(300), every: .milliseconds(100)) {
            let gone = try await runtime.list(labels: [ContainerLabel.node: node]).isEmpty
            let running = try await metric(api, "orch_tasks", labels: "state=\"running\"")
            return gone && running <= before
        }
        return elapsed
    }

    // MARK: (c) Docker Swarm

    func initSwarm() -> Bool {
        if docker(["info", "--format", "{{.Swarm.LocalNodeState}}"]).output == "active" { return true }
        let result = docker(["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377"])
        if result.status != 0 { note("docker swarm init: \(result.output.prefix(300))") }
        return result.status == 0
    }

    func leaveSwarm() { _ = docker(["swarm", "leave", "--force"]) }

    func runSwarm(_ n: Int) async throws -> Double {
        let name = "orch-bench-\(UUID().uuidString.prefix(8).lowercased())"
        let clock = ContinuousClock()
        let start = clock.now
        let created = docker(["service", "create", "--detach", "--no-resolve-image", "--name", name, "--replicas", "\(n)",
                              "--stop-grace-period", "1s", "--reserve-cpu", "0.1", "--limit-memory", "64m", Self.image, "sleep", "600"])
        guard created.status == 0 else { throw BenchError("docker service create: \(created.output)") }
        defer { _ = docker(["service", "rm", name]) }
        // Polled every 50 ms: all replicas Running.
        try await waitUntil("\(n) replicas running", within: .seconds(300), every: .milliseconds(50)) {
            let states = docker(["service", "ps", name, "--filter", "desired-state=running", "--format", "{{.CurrentState}}"]).output
            return states.split(separator: "\n").filter { $0.hasPrefix("Running") }.count >= n
        }
        let elapsed = seconds(clock.now - start)
        _ = docker(["service", "rm", name])
        try await waitUntil("the service's containers gone", within: .seconds(120), every: .milliseconds(200)) {
            docker(["ps", "-aq", "--filter", "label=com.docker.swarm.service.name=\(name)"]).output.isEmpty
        }
        return elapsed
    }

    func docker(_ arguments: [String]) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["docker"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch { return (127, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
