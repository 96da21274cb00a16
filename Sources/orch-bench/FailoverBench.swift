import ArgumentParser
import Foundation
import Logging
import OrchCore
import OrchRuntime
import OrchTestSupport

/// Time from a worker's death (SIGKILL) to its node marked down and to its tasks running on
/// another worker, with real Docker.
struct FailoverBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Failure detection: a worker killed, its node down, its tasks running elsewhere.",
        discussion: """
            Examples:
              orch-bench failover --tasks 5 --runs 3
              orch-bench failover --smoke
            """)

    @Option(help: "Tasks on the worker that dies.")
    var tasks: Int = 5

    @Option(help: "Runs (the median is printed).")
    var runs: Int = 3

    @Option(help: "The manager's heartbeat grace.")
    var grace: String = "5s"

    @Flag(help: "Also cut a worker off silently: it runs in a network namespace whose veth link is taken down.")
    var cut = false

    @Flag(help: "Tiny sizes, for CI.")
    var smoke = false

    func run() async throws {
        let runs = smoke ? 1 : self.runs
        let count = smoke ? 1 : tasks
        let grace = smoke ? "1s" : self.grace
        print("failover: \(count) tasks, heartbeat grace \(grace); \(machineDescription())")
        let runtime = try await DockerRuntime.connect(logger: Logger(label: "bench"))
        var rows: [[String]] = []
        for mode in cut && !smoke ? ["SIGKILL", "link cut"] : ["SIGKILL"] {
            let (down, moved) = try await measure(mode: mode, runs: runs, count: count, grace: grace, runtime: runtime)
            rows.append([mode, "\(count)", grace, format(median(down)), format(median(moved))])
        }
        try? await runtime.shutdown()
        table(["death", "tasks", "grace", "to node down s", "to tasks running elsewhere s"], rows)
        print("target: within the heartbeat grace plus Docker's start time (Swarm: about 15 s to mark a node down; Nomad: 20 to 30 s)")
    }

    func measure(mode: String, runs: Int, count: Int, grace: String, runtime: DockerRuntime) async throws -> (down: [Double], moved: [Double]) {
        var down: [Double] = [], moved: [Double] = []
        for _ in 0..<runs {
            let namespace = mode == "link cut" ? try NetworkNamespace.create() : nil
            defer { namespace?.remove() }
            let manager = try await ManagerProcess.start(
                wireHost: namespace?.hostAddress ?? "127.0.0.1", extra: ["--heartbeat-interval", "1s", "--heartbeat-grace", grace])
            let victimDir = temporaryDirectory("victim")
            let victim = try startWorker("victim", manager: manager, stateDir: victimDir, namespace: namespace)
            try await waitUntil("the victim to join", within: .seconds(60)) { try await metric(manager.api, "orch_nodes", labels: "state=\"up\"") >= 1 }
            for _ in 0..<count {
                _ = try await send(.POST, manager.api + "/tasks", body: #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "restartPolicy": "on-failure", "stopGracePeriod": "1s"}"#)
            }
            try await waitUntil("tasks running", within: .seconds(120)) {
                try await metric(manager.api, "orch_tasks", labels: "state=\"running\"") >= Double(count)
            }
            let survivorDir = temporaryDirectory("survivor")
            let survivor = try startWorker("survivor", manager: manager, stateDir: survivorDir)
            try await waitUntil("the survivor to join", within: .seconds(60)) { try await metric(manager.api, "orch_nodes", labels: "state=\"up\"") >= 2 }
            let victimNode = try String(contentsOfFile: victimDir + "/node-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)

            let clock = ContinuousClock()
            let start = clock.now
            if let namespace { namespace.cut() } else { victim.signal(SIGKILL) }
            var downAt: Duration?
            try await waitUntil("the tasks running elsewhere", within: .seconds(120), every: .milliseconds(20)) {
                if downAt == nil, try await metric(manager.api, "orch_nodes", labels: "state=\"down\"") >= 1 { downAt = clock.now - start }
                let list = try JSONSerialization.jsonObject(with: Data(buffer: try await get(manager.api + "/tasks").body)) as? [[String: Any]] ?? []
                return list.count == count && list.allSatisfy { $0["state"] as? String == "running" && $0["node"] as? String != victimNode }
            }
            moved.append(seconds(clock.now - start))
            down.append(downAt.map(seconds) ?? .nan)
            survivor.signal(SIGKILL)
            victim.signal(SIGKILL)
            await manager.stop()
            let survivorNode = (try? String(contentsOfFile: survivorDir + "/node-id", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            for node in [victimNode, survivorNode].compactMap({ $0 }) {
                for container in (try? await runtime.list(labels: [ContainerLabel.node: node])) ?? [] { try? await runtime.remove(container.id) }
            }
        }
        return (down, moved)
    }

    func startWorker(_ name: String, manager: ManagerProcess, stateDir: String, namespace: NetworkNamespace? = nil) throws -> LaunchedProcess {
        let arguments = [
            "worker", "--manager", "\(manager.wireHost):\(manager.wirePort)", "--http", "127.0.0.1:0", "--name", name, "--state-dir", stateDir,
            "--log-level", "warning", "--join-token-file", manager.joinTokenPath,
        ]
        guard let namespace else { return try LaunchedProcess(orchctl: arguments) }
        let inside = namespace.command(orchctlPath, arguments)
        return try LaunchedProcess(executable: inside.executable, inside.arguments)
    }
}
