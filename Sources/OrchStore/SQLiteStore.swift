import Foundation
import GRDB
import OrchCore

/// The manager's state in one SQLite file (WAL) through GRDB.
///
/// Writes are grouped: changes that arrive while a transaction commits are committed
/// together in the next one (group commit), and nobody's `apply` returns before its own
/// changes are committed.
public final class SQLiteStore: ManagerStore {
    private let writer: any DatabaseWriter
    private let queue: GroupCommit

    /// Opens (creating when missing) the store at `path` and migrates it to the current schema.
    public init(path: String, durability: Durability = .processCrash) throws {
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            if durability == .powerLoss { try db.execute(sql: "PRAGMA synchronous = FULL") }
        }
        let pool = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(pool)
        writer = pool
        queue = GroupCommit(writer: pool)
    }

    /// An in-memory store, for unit tests.
    public init(inMemory: Void = ()) throws {
        let database = try DatabaseQueue()
        try Self.migrator.migrate(database)
        writer = database
        queue = GroupCommit(writer: database)
    }

    /// The schema, one migration per version; never edit a migration that has shipped.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: tasks, task history, nodes") { db in
            try db.create(table: "task") { table in
                table.primaryKey("id", .text)
                table.column("state", .text).notNull()
                table.column("node", .text)
                table.column("createdAt", .datetime).notNull()
                table.column("record", .blob).notNull()
            }
            try db.create(table: "taskHistory") { table in
                table.autoIncrementedPrimaryKey("id")
                table.column("taskId", .text).notNull().indexed()
                table.column("at", .datetime).notNull()
                table.column("state", .text).notNull()
                table.column("message", .text).notNull()
            }
            try db.create(table: "node") { table in
                table.primaryKey("id", .text)
                table.column("name", .text).notNull()
                table.column("record", .blob).notNull()
            }
        }
        return migrator
    }

    /// The names of the migrations applied to the file.
    public func appliedMigrations() async throws -> [String] {
        try await writer.read { db in try Self.migrator.appliedMigrations(db) }
    }

    public func load() async throws -> StoreSnapshot {
        try await writer.read { db in
            let decoder = JSONDecoder()
            let tasks = try Data.fetchAll(db, sql: "SELECT record FROM task ORDER BY createdAt, id")
                .map { try decoder.decode(TaskRecord.self, from: $0) }
            let nodes = try Data.fetchAll(db, sql: "SELECT record FROM node ORDER BY id")
                .map { try decoder.decode(NodeRecord.self, from: $0) }
            return StoreSnapshot(tasks: tasks, nodes: nodes)
        }
    }

    public func apply(_ changes: [StoreChange]) async throws {
        guard !changes.isEmpty else { return }
        try await queue.commit(changes)
    }

    public func history(of task: TaskID) async throws -> [TaskHistoryEntry] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT at, state, message FROM taskHistory WHERE taskId = ? ORDER BY id", arguments: [task.rawValue])
                .map { row in
                    TaskHistoryEntry(
                        task: task, at: row["at"], state: TaskState(rawValue: row["state"]) ?? .pending, message: row["message"])
                }
        }
    }

    /// Writes one batch of changes inside an open transaction.
    static func write(_ changes: [StoreChange], _ db: Database) throws {
        let encoder = JSONEncoder()
        for change in changes {
            switch change {
            case .saveTask(let task):
                try db.execute(
                    sql: "INSERT OR REPLACE INTO task (id, state, node, createdAt, record) VALUES (?, ?, ?, ?, ?)",
                    arguments: [task.id.rawValue, task.state.rawValue, task.node?.rawValue, task.createdAt, try encoder.encode(task)])
            case .appendHistory(let entry):
                try db.execute(
                    sql: "INSERT INTO taskHistory (taskId, at, state, message) VALUES (?, ?, ?, ?)",
                    arguments: [entry.task.rawValue, entry.at, entry.state.rawValue, entry.message])
            case .saveNode(let node):
                try db.execute(
                    sql: "INSERT OR REPLACE INTO node (id, name, record) VALUES (?, ?, ?)",
                    arguments: [node.id.rawValue, node.name, try encoder.encode(node)])
            case .deleteNode(let id):
                try db.execute(sql: "DELETE FROM node WHERE id = ?", arguments: [id.rawValue])
            }
        }
    }
}

/// Group commit: every batch queued while a transaction commits goes into the next one.
actor GroupCommit {
    private let writer: any DatabaseWriter
    private var waiting: [(changes: [StoreChange], done: CheckedContinuation<Void, any Error>)] = []
    private var committing = false

    init(writer: any DatabaseWriter) { self.writer = writer }

    func commit(_ changes: [StoreChange]) async throws {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            waiting.append((changes, done))
            if !committing {
                committing = true
                // The committer outlives no caller: it ends as soon as nobody waits.
                Task { await self.drain() }
            }
        }
    }

    private func drain() async {
        while !waiting.isEmpty {
            let batch = waiting
            waiting = []
            do {
                try await writer.write { db in
                    for item in batch { try SQLiteStore.write(item.changes, db) }
                }
                for item in batch { item.done.resume() }
            } catch {
                for item in batch { item.done.resume(throwing: error) }
            }
        }
        committing = false
    }
}
