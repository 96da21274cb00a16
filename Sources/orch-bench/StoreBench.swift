import ArgumentParser
import Foundation
import OrchCore
import OrchStore
import OrchTestSupport

/// The stores side by side: placements per second (a task's placement and its history line,
/// as the manager's commit loop writes them) into SQLite and into PostgreSQL on this machine,
/// one batch per transaction, with batches of 1 (one placement at a time) and of 64 (what
/// the commit loop groups under load). PostgreSQL is a server of the benchmark's own with
/// its default durability (`fsync`, `synchronous_commit` on), against SQLite's WAL with
/// `synchronous = NORMAL` (the default) and `FULL` (`--fsync`).
struct StoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Stores: placements per second into SQLite and PostgreSQL, side by side.",
        discussion: """
            Examples:
              orch-bench store --placements 20000
              orch-bench store --smoke
            """)

    @Option(help: "Placements written per case.")
    var placements: Int = 20_000

    @Option(help: "Runs per case (the median is shown).")
    var runs: Int = 3

    @Flag(help: "Tiny sizes, for CI.")
    var smoke = false

    func run() async throws {
        let count = smoke ? 200 : placements
        let runs = smoke ? 1 : self.runs
        print("store: \(count) placements (a saved task and a history line each), one transaction a batch; \(machineDescription())")
        var rows: [[String]] = []
        let server = try PostgresServer.start(durable: true)
        defer { server.stop() }
        for batch in [1, 64] {
            var rates: [String: Double] = [:]
            for (label, open) in [
                ("SQLite (NORMAL)", { () async throws -> any ManagerStore in try SQLiteStore(path: temporaryDirectory("bench-store") + "/m.sqlite") }),
                ("SQLite (FULL, --fsync)", { () async throws -> any ManagerStore in try SQLiteStore(path: temporaryDirectory("bench-store") + "/m.sqlite", durability: .powerLoss) }),
                ("PostgreSQL", { () async throws -> any ManagerStore in try await PostgresStore(url: try server.createDatabase("b\(UUID().uuidString.prefix(8).lowercased())")) }),
            ] {
                var measured: [Double] = []
                for _ in 0..<runs { measured.append(try await Self.placementsPerSecond(try await open(), count: count, batch: batch)) }
                rates[label] = median(measured)
                rows.append(["\(batch)", label, format(median(measured), 0), "-"])
            }
            if let postgres = rates["PostgreSQL"], let sqlite = rates["SQLite (NORMAL)"], let full = rates["SQLite (FULL, --fsync)"] {
                rows[rows.count - 1][3] = "\(format(postgres / sqlite, 2))x NORMAL, \(format(postgres / full, 2))x FULL"
            }
        }
        table(["batch", "store", "placements/s (median)", "PostgreSQL against SQLite"], rows)
    }

    /// Writes `count` tasks (untimed), then their placements, `batch` to a transaction (timed).
    static func placementsPerSecond(_ store: any ManagerStore, count: Int, batch: Int) async throws -> Double {
        let now = Date()
        var tasks = (0..<count).map { index in
            TaskRecord(id: TaskID(rawValue: "t\(index)"), spec: TaskSpec(name: "bench", image: "orch-busybox:latest", command: ["sleep", "600"]), now: now)
        }
        var revision: UInt64 = 0
        for start in stride(from: 0, to: count, by: 500) {
            revision += 1
            try await store.apply(tasks[start..<min(count, start + 500)].map { .insertTask($0) }, revision: revision)
        }
        let node = NodeID(rawValue: "node-1")
        let clock = ContinuousClock()
        let began = clock.now
        for start in stride(from: 0, to: count, by: batch) {
            var changes: [StoreChange] = []
            for index in start..<min(count, start + batch) {
                try tasks[index].apply(.placed(on: node), at: now)
                changes.append(.saveTask(tasks[index]))
                changes.append(.appendHistory(TaskHistoryEntry(task: tasks[index].id, at: now, state: .scheduled, message: "placed on node-1")))
            }
            revision += 1
            try await store.apply(changes, revision: revision)
        }
        return Double(count) / seconds(clock.now - began)
    }
}
