import ArgumentParser
import Foundation
import OrchCore
import OrchStore
import OrchTestSupport

/// Manager restart time with many tasks in SQLite: from the process's start to its REST
/// gateway answering with every task loaded.
struct RecoveryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovery",
        abstract: "Recovery: manager restart time with N tasks in SQLite.",
        discussion: """
            Examples:
              orch-bench recovery --tasks 100000
              orch-bench recovery --smoke
            """)

    @Option(help: "Numbers of stored tasks, comma-separated.")
    var tasks: IntList = IntList(argument: "10000,100000")!

    @Option(help: "Restarts timed (the median is printed).")
    var runs: Int = 3

    @Flag(help: "Tiny sizes, for CI.")
    var smoke = false

    func run() async throws {
        let sizes = smoke ? [100] : tasks.values
        let runs = smoke ? 1 : self.runs
        print("recovery: manager start until GET /healthz answers with every task loaded; \(machineDescription())")
        var rows: [[String]] = []
        for n in sizes {
            let data = temporaryDirectory("recovery")
            let store = try SQLiteStore(path: data + "/manager.sqlite")
            let now = Date()
            var batch: [StoreChange] = []
            for index in 0..<n {
                let record = TaskRecord(id: TaskID(rawValue: "t\(index)"), spec: TaskSpec(name: "bench", image: "orch-busybox:latest", command: ["sleep", "600"]), now: now)
                batch.append(.insertTask(record))
                batch.append(.appendHistory(TaskHistoryEntry(task: record.id, at: now, state: .pending, message: "accepted")))
                if batch.count >= 20_000 {
                    try await store.apply(batch, revision: UInt64(index))
                    batch = []
                }
            }
            try await store.apply(batch, revision: UInt64(n))
            let size = (try? FileManager.default.attributesOfItem(atPath: data + "/manager.sqlite")[.size] as? Int) ?? 0
            var times: [Double] = []
            for _ in 0..<runs {
                let clock = ContinuousClock()
                let start = clock.now
                let manager = try await ManagerProcess.start(data: data)
                let elapsed = seconds(clock.now - start)
                let pending = try await metric(manager.api, "orch_tasks", labels: "state=\"pending\"")
                guard pending >= Double(n) else { throw BenchError("only \(Int(pending)) of \(n) tasks came back") }
                times.append(elapsed)
                await manager.stop()
            }
            rows.append(["\(n)", format(Double(size) / 1_048_576, 1), format(median(times), 2)])
        }
        table(["tasks", "SQLite MiB", "restart s (median)"], rows)
    }
}
