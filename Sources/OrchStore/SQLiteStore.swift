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
        migrator.registerMigration("v2: a task's spec apart from its state") { db in
            // The spec never changes; written once, it is not encoded again on every change of state.
            try db.alter(table: "task") { table in table.add(column: "spec", .blob) }
            let decoder = JSONDecoder()
            for row in try Row.fetchAll(db, sql: "SELECT id, record FROM task") {
                let record = try decoder.decode(TaskRecord.self, from: row["record"] as Data)
                try db.execute(
                    sql: "UPDATE task SET spec = ?, record = ? WHERE id = ?",
                    arguments: [try JSONEncoder().encode(record.spec), try JSONEncoder().encode(TaskStateRow(record)), row["id"] as String])
            }
        }
        migrator.registerMigration("v3: the state's revision") { db in
            try db.execute(sql: "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)")
        }
        migrator.registerMigration("v4: REST API tokens, hashed") { db in
            try db.create(table: "apiToken") { table in
                table.primaryKey("name", .text)
                table.column("role", .text).notNull()
                table.column("hash", .text).notNull().unique()
                table.column("createdAt", .datetime).notNull()
                table.column("lastUsedAt", .datetime)
                table.column("revokedAt", .datetime)
            }
        }
        migrator.registerMigration("v5: nodes removed from the cluster") { db in
            try db.create(table: "removedNode") { table in
                table.primaryKey("id", .text)
                table.column("removedAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v6: services") { db in
            try db.create(table: "service") { table in
                table.primaryKey("name", .text)
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
            let tasks = try Row.fetchAll(db, sql: "SELECT id, spec, record FROM task ORDER BY createdAt, id").map { row in
                let spec = try decoder.decode(TaskSpec.self, from: row["spec"] as Data)
                return try decoder.decode(TaskStateRow.self, from: row["record"] as Data).record(id: TaskID(rawValue: row["id"]), spec: spec)
            }
            let nodes = try Data.fetchAll(db, sql: "SELECT record FROM node ORDER BY id")
                .map { try decoder.decode(NodeRecord.self, from: $0) }
            let revision = try UInt64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'revision'") ?? 0
            let removed = try String.fetchAll(db, sql: "SELECT id FROM removedNode").map { NodeID(rawValue: $0) }
            let services = try Data.fetchAll(db, sql: "SELECT record FROM service ORDER BY name")
                .map { try decoder.decode(ServiceRecord.self, from: $0) }
            return StoreSnapshot(tasks: tasks, nodes: nodes, revision: revision, removedNodes: Set(removed), services: services)
        }
    }

    public func apply(_ batches: [StoreBatch]) async throws {
        guard let last = batches.last else { return }
        let changes = batches.flatMap(\.changes).compacted()
        try await queue.commit(changes, revision: last.sequence)
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

    public func loadTokens() async throws -> [APITokenRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT name, role, hash, createdAt, lastUsedAt, revokedAt FROM apiToken ORDER BY createdAt, name").map { row in
                APITokenRecord(
                    name: row["name"], role: APIRole(rawValue: row["role"]) ?? .viewer, hash: row["hash"],
                    createdAt: row["createdAt"], lastUsedAt: row["lastUsedAt"], revokedAt: row["revokedAt"])
            }
        }
    }

    public func saveToken(_ token: APITokenRecord) async throws {
        try await writer.write { db in
            try db.execute(
                // An upsert on the name: a clash on the hash is an error, never a replacement
                // of the other token (INSERT OR REPLACE would delete it).
                sql: """
                    INSERT INTO apiToken (name, role, hash, createdAt, lastUsedAt, revokedAt) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET role = excluded.role, hash = excluded.hash, createdAt = excluded.createdAt,
                        lastUsedAt = excluded.lastUsedAt, revokedAt = excluded.revokedAt
                    """,
                arguments: [token.name, token.role.rawValue, token.hash, token.createdAt, token.lastUsedAt, token.revokedAt])
        }
    }

    public func recordTokenUse(name: String, hash: String, at date: Date) async throws {
        try await writer.write { db in
            try db.execute(
                sql: "UPDATE apiToken SET lastUsedAt = ? WHERE name = ? AND hash = ? AND revokedAt IS NULL",
                arguments: [date, name, hash])
        }
    }

    /// Writes one batch of changes inside an open transaction, and the revision they reach.
    static func write(_ changes: [StoreChange], revision: UInt64?, _ db: Database) throws {
        let encoder = JSONEncoder()
        // Prepared once per connection and reused (GRDB's statement cache): the statements
        // of a batch are the same few, run thousands of times.
        func run(_ sql: String, _ arguments: StatementArguments) throws {
            try db.cachedStatement(sql: sql).execute(arguments: arguments)
        }
        if let revision {
            try run("INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?)", [Int64(clamping: revision)])
        }
        for change in changes {
            switch change {
            case .insertTask(let task):
                try run(
                    "INSERT OR REPLACE INTO task (id, state, node, createdAt, record, spec) VALUES (?, ?, ?, ?, ?, ?)",
                    [task.id.rawValue, task.state.rawValue, task.node?.rawValue, task.createdAt,
                     try encoder.encode(TaskStateRow(task)), try encoder.encode(task.spec)])
            case .saveTask(let task):
                try run(
                    "UPDATE task SET state = ?, node = ?, record = ? WHERE id = ?",
                    [task.state.rawValue, task.node?.rawValue, try encoder.encode(TaskStateRow(task)), task.id.rawValue])
            case .appendHistory(let entry):
                try run(
                    "INSERT INTO taskHistory (taskId, at, state, message) VALUES (?, ?, ?, ?)",
                    [entry.task.rawValue, entry.at, entry.state.rawValue, entry.message])
            case .saveNode(let node):
                try run("INSERT OR REPLACE INTO node (id, name, record) VALUES (?, ?, ?)", [node.id.rawValue, node.name, try encoder.encode(node)])
            case .deleteNode(let id):
                try run("DELETE FROM node WHERE id = ?", [id.rawValue])
                try run("INSERT OR IGNORE INTO removedNode (id, removedAt) VALUES (?, ?)", [id.rawValue, Date()])
            case .deleteTask(let id):
                try run("DELETE FROM task WHERE id = ?", [id.rawValue])
                try run("DELETE FROM taskHistory WHERE taskId = ?", [id.rawValue])
            case .saveService(let service):
                try run("INSERT OR REPLACE INTO service (name, record) VALUES (?, ?)", [service.name, try encoder.encode(service)])
            case .deleteService(let name):
                try run("DELETE FROM service WHERE name = ?", [name])
            }
        }
    }
}

/// Group commit: every batch queued while a transaction commits goes into the next one.
actor GroupCommit {
    private let writer: any DatabaseWriter
    private var waiting: [(changes: [StoreChange], revision: UInt64?, done: CheckedContinuation<Void, any Error>)] = []
    private var committing = false

    init(writer: any DatabaseWriter) { self.writer = writer }

    func commit(_ changes: [StoreChange], revision: UInt64?) async throws {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            waiting.append((changes, revision, done))
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
                    for item in batch { try SQLiteStore.write(item.changes, revision: item.revision, db) }
                }
                for item in batch { item.done.resume() }
            } catch {
                for item in batch { item.done.resume(throwing: error) }
            }
        }
        committing = false
    }
}

/// What changes of a task, as stored in its row's `record` column (the spec is apart).
struct TaskStateRow: Codable {
    var desiredState: DesiredState
    var state: TaskState
    var node: NodeID?
    var containerID: ContainerID?
    var attempt: Int
    var restartCount: Int
    var exitCode: Int?
    var error: String?
    var health: TaskHealth
    var hostPorts: [PublishedPort]
    var createdAt: Date
    var updatedAt: Date
    var startedAt: Date?
    var finishedAt: Date?
    var healthyAt: Date?
    var replica: ServiceSlot?
    /// Absent in rows written before revisions were kept.
    var revision: UInt64?
    /// Absent in rows written before they were kept.
    var lastEnded: TaskRecord.EndedAttempt?
    var attemptBase: Int?

    init(_ record: TaskRecord) {
        desiredState = record.desiredState
        state = record.state
        node = record.node
        containerID = record.containerID
        attempt = record.attempt
        restartCount = record.restartCount
        exitCode = record.exitCode
        error = record.error
        health = record.health
        hostPorts = record.hostPorts
        createdAt = record.createdAt
        updatedAt = record.updatedAt
        startedAt = record.startedAt
        finishedAt = record.finishedAt
        healthyAt = record.healthyAt
        replica = record.replica
        revision = record.revision
        lastEnded = record.lastEnded
        attemptBase = record.attemptBase
    }

    func record(id: TaskID, spec: TaskSpec) -> TaskRecord {
        var record = TaskRecord(id: id, spec: spec, now: createdAt)
        record.desiredState = desiredState
        record.state = state
        record.node = node
        record.containerID = containerID
        record.attempt = attempt
        record.restartCount = restartCount
        record.exitCode = exitCode
        record.error = error
        record.health = health
        record.hostPorts = hostPorts
        record.updatedAt = updatedAt
        record.startedAt = startedAt
        record.finishedAt = finishedAt
        record.healthyAt = healthyAt
        record.replica = replica
        record.revision = revision ?? 0
        record.lastEnded = lastEnded
        record.attemptBase = attemptBase
        return record
    }
}
