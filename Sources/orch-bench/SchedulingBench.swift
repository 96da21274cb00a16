import ArgumentParser
import Foundation
import NIOHTTP1
import OrchTestSupport

/// A manager and K simulated workers over loopback; T tasks submitted through the REST
/// gateway (keep-alive, concurrent); submissions/s and placements/s until all run.
struct SchedulingBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduling",
        abstract: "Scheduling throughput: T tasks on K simulated workers, through the REST gateway.",
        discussion: """
            Examples:
              orch-bench scheduling --workers 100,1000,10000 --tasks 100000
              orch-bench scheduling --smoke
            """)

    @Option(help: "Numbers of simulated workers, comma-separated.")
    var workers: IntList = IntList(argument: "100,1000")!

    @Option(help: "Tasks submitted per run.")
    var tasks: Int = 100_000

    @Option(help: "Concurrent submissions.")
    var concurrency: Int = 32

    @Option(help: "Processes the simulated workers run in.")
    var processes: Int = 2

    @Flag(help: "Tiny sizes, for CI.")
    var smoke = false

    static let task = #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.01, "memory": "6MiB"}}"#

    func run() async throws {
        let sizes = smoke ? [5] : workers.values
        let total = smoke ? 200 : tasks
        print("scheduling: \(total) tasks, \(concurrency) concurrent submissions; \(machineDescription())")
        var rows: [[String]] = []
        for k in sizes {
            let manager = try await ManagerProcess.start()
            let sims = try await startSimulatedWorkers(count: k, processes: smoke ? 1 : processes, wirePort: manager.wirePort, joinTokenFile: manager.joinTokenPath, prefix: "k\(k)p")
            try await waitUntil("\(k) nodes up", within: .seconds(300), every: .milliseconds(200)) {
                try await metric(manager.api, "orch_nodes", labels: "state=\"up\"") >= Double(k)
            }
            let clock = ContinuousClock()
            let start = clock.now
            let failures = try await submit(total, to: manager.api)
            let submitted = clock.now - start
            try await waitUntil("all running", within: .seconds(1800), every: .milliseconds(20)) {
                try await metric(manager.api, "orch_tasks", labels: "state=\"running\"") >= Double(total - failures)
            }
            let placed = clock.now - start
            let managerCPU = cpuSeconds(pid: manager.process.process.processIdentifier)
            rows.append([
                "\(k)", "\(total - failures)", format(Double(total) / seconds(submitted), 0), format(Double(total - failures) / seconds(placed), 0),
                format(seconds(placed) * 1e6 / Double(total), 1), format(managerCPU, 1),
            ])
            for sim in sims { sim.signal(SIGKILL) }
            await manager.stop()
        }
        table(["workers", "tasks", "submissions/s", "placements/s (to running)", "µs per task", "manager CPU s"], rows)
        print("target: at least 10000 placements/s at 1000 workers; cost per task flat in K")
    }

    /// Submits `count` tasks with `concurrency` requests in flight; the number refused.
    func submit(_ count: Int, to api: String) async throws -> Int {
        try await withThrowingTaskGroup(of: Int.self) { group in
            let perLane = count / concurrency, extra = count % concurrency
            for lane in 0..<concurrency {
                let share = perLane + (lane < extra ? 1 : 0)
                group.addTask {
                    var failures = 0
                    for _ in 0..<share {
                        let answer = try await send(.POST, api + "/tasks", body: Self.task)
                        if answer.status != 201 { failures += 1 }
                    }
                    return failures
                }
            }
            return try await group.reduce(0, +)
        }
    }
}
