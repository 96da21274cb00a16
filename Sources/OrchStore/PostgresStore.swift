import Foundation
import Logging
import NIOCore
import OrchCore
import PostgresNIO

/// The manager's state in PostgreSQL (postgres-nio), for several managers on one database:
/// the same tables as ``SQLiteStore`` (tasks with their spec apart, their history, nodes,
/// removed nodes, services, API tokens, the revision), each batch in one transaction.
///
/// Opened from a URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (the port defaults
/// to 5432; `?sslmode=require` asks for TLS, without it the connection is plain, as on
/// loopback). Its schema is migrated on open, one named step at a time, each in a
/// transaction that also records it (`schema_migration`), so that managers starting at once
/// on a new database do not run a step twice (an advisory lock serializes them).
public final class PostgresStore: ManagerStore {
    private let client: PostgresClient
    private let runner: Task<Void, Never>
    private let logger: Logger
    /// Where it connects, without the password: for messages.
    public let location: String
    /// The longest one operation may take: past it, it fails (the pool would otherwise wait
    /// for a connection to a server that is gone for about a minute, and so would the
    /// manager's commits and the requests waiting on them).
    public let operationTimeout: Duration

    /// The parts of a store URL.
    public struct Address: Sendable, Hashable {
        public var host: String
        public var port: Int
        public var user: String
        public var password: String?
        public var database: String
        public var requireTLS: Bool

        /// Parses `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=require]`
        /// (`postgresql://` too); the error says what is wrong.
        public init(url text: String) throws(StoreURLError) {
            guard let components = URLComponents(string: text), let scheme = components.scheme,
                  scheme == "postgres" || scheme == "postgresql" else {
                throw StoreURLError(text: text, reason: "not a postgres:// URL")
            }
            guard let host = components.host, !host.isEmpty else { throw StoreURLError(text: text, reason: "no host") }
            guard let user = components.user, !user.isEmpty else { throw StoreURLError(text: text, reason: "no user (postgres://USER@HOST/DATABASE)") }
            let database = String(components.path.drop { $0 == "/" })
            guard !database.isEmpty, !database.contains("/") else { throw StoreURLError(text: text, reason: "no database (postgres://USER@HOST/DATABASE)") }
            self.host = host
            port = components.port ?? 5432
            self.user = user.removingPercentEncoding ?? user
            password = components.password.map { $0.removingPercentEncoding ?? $0 }
            self.database = database
            let mode = components.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
            guard ["disable", "require"].contains(mode) else { throw StoreURLError(text: text, reason: "sslmode must be disable or require, not \(mode)") }
            requireTLS = mode == "require"
        }

        /// The URL without its password.
        public var description: String { "postgres://\(user)@\(host):\(port)/\(database)" }
    }

    /// Connects to the database at `url` and migrates it to the current schema. Fails when
    /// the server does not answer within `timeout`, saying so.
    public init(
        url: String, timeout: Duration = .seconds(10), operationTimeout: Duration = .seconds(5), logger: Logger = Logger(label: "orch.store")
    ) async throws {
        let address = try Address(url: url)
        var configuration = PostgresClient.Configuration(
            host: address.host, port: address.port, username: address.user, password: address.password, database: address.database,
            tls: address.requireTLS ? .require(.makeClientConfiguration()) : .disable)
        configuration.options.connectTimeout = timeout
        configuration.options.maximumConnections = 8
        self.logger = logger
        self.operationTimeout = operationTimeout
        location = address.description
        // One connection of its own first: the pool retries a server that refuses for a
        // while before it gives up, where this says at once what is wrong (refused, no such
        // database, a bad password), and migrates the schema.
        var first = PostgresConnection.Configuration(
            host: address.host, port: address.port, username: address.user, password: address.password, database: address.database,
            tls: address.requireTLS ? .require(try .init(configuration: .makeClientConfiguration())) : .disable)
        first.options.connectTimeout = .nanoseconds(timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        do {
            let connection = try await PostgresConnection.connect(configuration: first, id: 0, logger: logger)
            do {
                try await Self.migrate(connection, logger: logger)
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
        } catch {
            throw StoreOpenError(location: location, reason: Self.describe(error))
        }
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let client = client
        runner = Task { await client.run() }
    }

    deinit { runner.cancel() }

    /// Closes its connections.
    public func close() { runner.cancel() }

    // MARK: - The schema

    /// The schema, one step per version, in order; never edit a step that has shipped.
    static let migrations: [(name: String, sql: [String])] = [
        ("v1: tasks, task history, nodes, removed nodes, services, tokens, meta", [
            """
            CREATE TABLE task (
                id TEXT PRIMARY KEY, state TEXT NOT NULL, node TEXT, created_at TIMESTAMPTZ NOT NULL,
                spec BYTEA NOT NULL, record BYTEA NOT NULL)
            """,
            "CREATE INDEX task_by_creation ON task (created_at, id)",
            """
            CREATE TABLE task_history (
                id BIGSERIAL PRIMARY KEY, task_id TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL)
            """,
            "CREATE INDEX task_history_by_task ON task_history (task_id, id)",
            "CREATE TABLE node (id TEXT PRIMARY KEY, name TEXT NOT NULL, record BYTEA NOT NULL)",
            "CREATE TABLE removed_node (id TEXT PRIMARY KEY, removed_at TIMESTAMPTZ NOT NULL)",
            "CREATE TABLE service (name TEXT PRIMARY KEY, record BYTEA NOT NULL)",
            """
            CREATE TABLE api_token (
                name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at TIMESTAMPTZ NOT NULL,
                last_used_at TIMESTAMPTZ, revoked_at TIMESTAMPTZ)
            """,
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        ]),
        ("v2: the managers' lease", [
            """
            CREATE TABLE lease (
                id INT PRIMARY KEY CHECK (id = 1), holder TEXT, epoch BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)
            """,
            "INSERT INTO lease (id, holder, epoch, expires_at) VALUES (1, NULL, 0, '-infinity')",
        ]),
        ("v3: the managers, and the secrets they share", [
            """
            CREATE TABLE manager (
                name TEXT PRIMARY KEY, api_url TEXT NOT NULL, wire_address TEXT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL, seen_at TIMESTAMPTZ NOT NULL)
            """,
            "CREATE TABLE cluster_secret (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
        ]),
    ]

    private static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.withTransaction(logger: logger) { connection in
            // One manager migrates at a time; the others find the steps done.
            try await connection.query("SELECT pg_advisory_xact_lock(7263540001)", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS schema_migration (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                logger: logger)
            var applied = Set<String>()
            for try await name in try await connection.query("SELECT name FROM schema_migration", logger: logger).decode(String.self) {
                applied.insert(name)
            }
            for migration in migrations where !applied.contains(migration.name) {
                for statement in migration.sql { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await connection.query("INSERT INTO schema_migration (name) VALUES (\(migration.name))", logger: logger)
            }
        }
    }

    /// The names of the migrations applied, in order.
    public func appliedMigrations() async throws -> [String] {
        var names: [String] = []
        for try await name in try await client.query("SELECT name FROM schema_migration ORDER BY applied_at, name", logger: logger).decode(String.self) {
            names.append(name)
        }
        return names
    }

    // MARK: - Reading

    public func load() async throws -> StoreSnapshot {
        try await withDeadline("loading the state") { try await self.loadNow() }
    }

    private func loadNow() async throws -> StoreSnapshot {
        try await client.withConnection { connection in
            let decoder = JSONDecoder()
            var tasks: [TaskRecord] = []
            let taskRows = try await connection.query("SELECT id, spec, record FROM task ORDER BY created_at, id", logger: logger)
            for try await (id, spec, record) in taskRows.decode((String, Data, Data).self) {
                tasks.append(try decoder.decode(TaskStateRow.self, from: record)
                    .record(id: TaskID(rawValue: id), spec: try decoder.decode(TaskSpec.self, from: spec)))
            }
            var nodes: [NodeRecord] = []
            for try await record in try await connection.query("SELECT record FROM node ORDER BY id", logger: logger).decode(Data.self) {
                nodes.append(try decoder.decode(NodeRecord.self, from: record))
            }
            var revision: UInt64 = 0
            for try await value in try await connection.query("SELECT value FROM meta WHERE key = 'revision'", logger: logger).decode(Int64.self) {
                revision = UInt64(max(0, value))
            }
            var removed = Set<NodeID>()
            for try await id in try await connection.query("SELECT id FROM removed_node", logger: logger).decode(String.self) {
                removed.insert(NodeID(rawValue: id))
            }
            var services: [ServiceRecord] = []
            for try await record in try await connection.query("SELECT record FROM service ORDER BY name", logger: logger).decode(Data.self) {
                services.append(try decoder.decode(ServiceRecord.self, from: record))
            }
            return StoreSnapshot(tasks: tasks, nodes: nodes, revision: revision, removedNodes: removed, services: services)
        }
    }

    public func history(of task: TaskID) async throws -> [TaskHistoryEntry] {
        try await withDeadline("reading a task's history") { try await self.historyNow(of: task) }
    }

    private func historyNow(of task: TaskID) async throws -> [TaskHistoryEntry] {
        var entries: [TaskHistoryEntry] = []
        let rows = try await client.query(
            "SELECT at, state, message FROM task_history WHERE task_id = \(task.rawValue) ORDER BY id", logger: logger)
        for try await (at, state, message) in rows.decode((Date, String, String).self) {
            entries.append(TaskHistoryEntry(task: task, at: at, state: TaskState(rawValue: state) ?? .pending, message: message))
        }
        return entries
    }

    // MARK: - Writing

    public func apply(_ batches: [StoreBatch]) async throws {
        guard let last = batches.last else { return }
        try await write(batches.flatMap(\.changes).compacted(), revision: Int64(clamping: last.sequence), fence: nil)
    }

    /// One transaction: the fence checked first (when given), the revision, the changes.
    private func write(_ changes: [StoreChange], revision: Int64, fence: Int64?) async throws {
        do {
            try await withDeadline("committing") { try await self.transaction(changes, revision: revision, fence: fence) }
        } catch let error as PostgresTransactionError {
            // Rolled back: the fence's own error says why.
            if let stale = error.closureError as? StaleEpochError { throw stale }
            throw error
        }
    }

    private func transaction(_ changes: [StoreChange], revision: Int64, fence: Int64?) async throws {
        let logger = logger
        try await client.withTransaction(logger: logger) { connection in
            if let fence {
                let rows = try await connection.query("SELECT epoch FROM lease WHERE id = 1 AND epoch = \(fence) FOR SHARE", logger: logger)
                var held = false
                for try await _ in rows.decode(Int64.self) { held = true }
                guard held else { throw StaleEpochError(epoch: fence) }
            }
            try await connection.query(
                """
                INSERT INTO meta (key, value) VALUES ('revision', \(revision))
                ON CONFLICT (key) DO UPDATE SET value = excluded.value
                """, logger: logger)
            let encoder = JSONEncoder()
            // The task rows and history lines of a run of changes go in one statement each
            // (arrays, unnest), in the order insert, save, history: they touch different rows,
            // or an insert comes before a save of its task. Any other change ends the run
            // first, so that a removal stays after what came before it and before what follows.
            var run = TaskRun()
            for change in changes {
                switch change {
                case .insertTask(let task):
                    run.inserts.append((task, try encoder.encode(TaskStateRow(task)), try encoder.encode(task.spec)))
                case .saveTask(let task):
                    run.saves.append((task, try encoder.encode(TaskStateRow(task))))
                case .appendHistory(let entry):
                    run.history.append(entry)
                case .saveNode(let node):
                    try await run.flush(connection, logger: logger)
                    let record = try encoder.encode(node)
                    try await connection.query(
                        """
                        INSERT INTO node (id, name, record) VALUES (\(node.id.rawValue), \(node.name), \(record))
                        ON CONFLICT (id) DO UPDATE SET name = excluded.name, record = excluded.record
                        """, logger: logger)
                case .deleteNode(let id):
                    try await run.flush(connection, logger: logger)
                    try await connection.query("DELETE FROM node WHERE id = \(id.rawValue)", logger: logger)
                    try await connection.query(
                        "INSERT INTO removed_node (id, removed_at) VALUES (\(id.rawValue), now()) ON CONFLICT (id) DO NOTHING", logger: logger)
                case .deleteTask(let id):
                    try await run.flush(connection, logger: logger)
                    try await connection.query("DELETE FROM task WHERE id = \(id.rawValue)", logger: logger)
                    try await connection.query("DELETE FROM task_history WHERE task_id = \(id.rawValue)", logger: logger)
                case .saveService(let service):
                    try await run.flush(connection, logger: logger)
                    let record = try encoder.encode(service)
                    try await connection.query(
                        """
                        INSERT INTO service (name, record) VALUES (\(service.name), \(record))
                        ON CONFLICT (name) DO UPDATE SET record = excluded.record
                        """, logger: logger)
                case .deleteService(let name):
                    try await run.flush(connection, logger: logger)
                    try await connection.query("DELETE FROM service WHERE name = \(name)", logger: logger)
                }
            }
            try await run.flush(connection, logger: logger)
        }
    }

    /// Task rows and history lines waiting to be written together.
    private struct TaskRun {
        var inserts: [(task: TaskRecord, record: Data, spec: Data)] = []
        var saves: [(task: TaskRecord, record: Data)] = []
        var history: [TaskHistoryEntry] = []

        mutating func flush(_ connection: PostgresConnection, logger: Logger) async throws {
            if !inserts.isEmpty {
                let ids = inserts.map(\.task.id.rawValue), states = inserts.map(\.task.state.rawValue)
                let nodes = inserts.map { $0.task.node?.rawValue ?? "" }, created = inserts.map(\.task.createdAt)
                let specs = inserts.map { ByteBuffer(bytes: $0.spec) }, records = inserts.map { ByteBuffer(bytes: $0.record) }
                try await connection.query(
                    """
                    INSERT INTO task (id, state, node, created_at, spec, record)
                    SELECT id, state, NULLIF(node, ''), created_at, spec, record
                    FROM unnest(\(ids)::text[], \(states)::text[], \(nodes)::text[], \(created)::timestamptz[], \(specs)::bytea[], \(records)::bytea[])
                        AS row(id, state, node, created_at, spec, record)
                    ON CONFLICT (id) DO UPDATE SET state = excluded.state, node = excluded.node, created_at = excluded.created_at,
                        spec = excluded.spec, record = excluded.record
                    """, logger: logger)
                inserts = []
            }
            if !saves.isEmpty {
                let ids = saves.map(\.task.id.rawValue), states = saves.map(\.task.state.rawValue)
                let nodes = saves.map { $0.task.node?.rawValue ?? "" }, records = saves.map { ByteBuffer(bytes: $0.record) }
                try await connection.query(
                    """
                    UPDATE task SET state = row.state, node = NULLIF(row.node, ''), record = row.record
                    FROM unnest(\(ids)::text[], \(states)::text[], \(nodes)::text[], \(records)::bytea[]) AS row(id, state, node, record)
                    WHERE task.id = row.id
                    """, logger: logger)
                saves = []
            }
            if !history.isEmpty {
                let tasks = history.map(\.task.rawValue), at = history.map(\.at), states = history.map(\.state.rawValue), messages = history.map(\.message)
                // WITH ORDINALITY, ordered: the lines keep their order (their ids follow it).
                try await connection.query(
                    """
                    INSERT INTO task_history (task_id, at, state, message)
                    SELECT task_id, at, state, message
                    FROM unnest(\(tasks)::text[], \(at)::timestamptz[], \(states)::text[], \(messages)::text[])
                        WITH ORDINALITY AS line(task_id, at, state, message, position)
                    ORDER BY position
                    """, logger: logger)
                history = []
            }
        }
    }

    // MARK: - Tokens

    public func loadTokens() async throws -> [APITokenRecord] {
        try await withDeadline("loading the tokens") { try await self.loadTokensNow() }
    }

    private func loadTokensNow() async throws -> [APITokenRecord] {
        var tokens: [APITokenRecord] = []
        let rows = try await client.query(
            "SELECT name, role, hash, created_at, last_used_at, revoked_at FROM api_token ORDER BY created_at, name", logger: logger)
        for try await (name, role, hash, created, used, revoked) in rows.decode((String, String, String, Date, Date?, Date?).self) {
            tokens.append(APITokenRecord(
                name: name, role: APIRole(rawValue: role) ?? .viewer, hash: hash, createdAt: created, lastUsedAt: used, revokedAt: revoked))
        }
        return tokens
    }

    public func saveToken(_ token: APITokenRecord) async throws {
        try await withDeadline("saving a token") { try await self.saveTokenNow(token) }
    }

    private func saveTokenNow(_ token: APITokenRecord) async throws {
        // An upsert on the name: a clash on the hash is an error, never a replacement of the other token.
        try await client.query(
            """
            INSERT INTO api_token (name, role, hash, created_at, last_used_at, revoked_at)
            VALUES (\(token.name), \(token.role.rawValue), \(token.hash), \(token.createdAt), \(token.lastUsedAt), \(token.revokedAt))
            ON CONFLICT (name) DO UPDATE SET role = excluded.role, hash = excluded.hash, created_at = excluded.created_at,
                last_used_at = excluded.last_used_at, revoked_at = excluded.revoked_at
            """, logger: logger)
    }

    public func recordTokenUse(name: String, hash: String, at date: Date) async throws {
        try await withDeadline("noting a token's use") { try await self.recordTokenUseNow(name: name, hash: hash, at: date) }
    }

    private func recordTokenUseNow(name: String, hash: String, at date: Date) async throws {
        try await client.query(
            "UPDATE api_token SET last_used_at = \(date) WHERE name = \(name) AND hash = \(hash) AND revoked_at IS NULL", logger: logger)
    }

    // MARK: - The lease

    /// Takes the lease for `holder` when it is free or has expired by the database's clock
    /// (or is `holder`'s own), with the next epoch, for `duration` from the database's now;
    /// else says who holds it.
    public func acquireLease(holder: String, for duration: Duration) async throws -> LeaseAnswer {
        try await withDeadline("taking the lease") { try await self.acquireLeaseNow(holder: holder, for: duration) }
    }

    private func acquireLeaseNow(holder: String, for duration: Duration) async throws -> LeaseAnswer {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        let rows = try await client.query(
            """
            UPDATE lease SET holder = \(holder), epoch = epoch + 1, expires_at = now() + make_interval(secs => \(seconds))
            WHERE id = 1 AND (holder IS NULL OR expires_at < now() OR holder = \(holder))
            RETURNING epoch
            """, logger: logger)
        for try await epoch in rows.decode(Int64.self) { return .held(epoch: epoch) }
        return try await currentLeaseNow()
    }

    /// Renews the lease `holder` holds with `epoch`, for `duration` from the database's now;
    /// else says who holds it now.
    public func renewLease(holder: String, epoch: Int64, for duration: Duration) async throws -> LeaseAnswer {
        try await withDeadline("renewing the lease") { try await self.renewLeaseNow(holder: holder, epoch: epoch, for: duration) }
    }

    private func renewLeaseNow(holder: String, epoch: Int64, for duration: Duration) async throws -> LeaseAnswer {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        let rows = try await client.query(
            """
            UPDATE lease SET expires_at = now() + make_interval(secs => \(seconds))
            WHERE id = 1 AND holder = \(holder) AND epoch = \(epoch)
            RETURNING epoch
            """, logger: logger)
        for try await epoch in rows.decode(Int64.self) { return .held(epoch: epoch) }
        return try await currentLeaseNow()
    }

    /// Gives the lease up, if `holder` still holds it with `epoch`: another takes it at once.
    public func releaseLease(holder: String, epoch: Int64) async throws {
        try await withDeadline("releasing the lease") { try await self.releaseLeaseNow(holder: holder, epoch: epoch) }
    }

    private func releaseLeaseNow(holder: String, epoch: Int64) async throws {
        try await client.query(
            "UPDATE lease SET holder = NULL, expires_at = '-infinity' WHERE id = 1 AND holder = \(holder) AND epoch = \(epoch)", logger: logger)
        // The standbys listening take it at once, instead of at their next try.
        try await client.query("SELECT pg_notify(\(Self.leaseChannel), \(holder))", logger: logger)
    }

    /// The channel a released lease is announced on (LISTEN/NOTIFY).
    static let leaseChannel = "orch_lease_released"

    /// Calls `released` each time a holder releases the lease, until cancelled; throws when
    /// the connection it listens on is lost (the caller listens again).
    public func listenForReleases(_ released: @escaping @Sendable () async -> Void) async throws {
        try await client.withConnection { connection in
            try await connection.listen(on: Self.leaseChannel) { notifications in
                for try await _ in notifications { await released() }
            }
        }
    }

    // MARK: - Managers

    /// Says that `manager` is running, and where it serves (its row's `seen_at` is the
    /// database's now); rows not seen for an hour are removed.
    public func announce(_ manager: ManagerAnnouncement) async throws {
        try await withDeadline("announcing this manager") {
            try await self.client.query(
                """
                INSERT INTO manager (name, api_url, wire_address, started_at, seen_at)
                VALUES (\(manager.name), \(manager.apiURL), \(manager.wireAddress), \(manager.startedAt), now())
                ON CONFLICT (name) DO UPDATE SET api_url = excluded.api_url, wire_address = excluded.wire_address,
                    started_at = excluded.started_at, seen_at = now()
                """, logger: self.logger)
            try await self.client.query("DELETE FROM manager WHERE seen_at < now() - interval '1 hour'", logger: self.logger)
        }
    }

    /// Removes `name`'s row (a planned stop).
    public func forgetManager(_ name: String) async throws {
        try await withDeadline("forgetting this manager") {
            try await self.client.query("DELETE FROM manager WHERE name = \(name)", logger: self.logger)
        }
    }

    /// Every manager announced, with how long ago each was last seen by the database's
    /// clock, and who leads (the lease's live holder and epoch).
    public func managers() async throws -> (managers: [ManagerRow], leader: (name: String, epoch: Int64)?) {
        try await withDeadline("listing the managers") {
            var rows: [ManagerRow] = []
            let query = try await self.client.query(
                """
                SELECT name, api_url, wire_address, started_at, EXTRACT(EPOCH FROM now() - seen_at)::float8
                FROM manager ORDER BY name
                """, logger: self.logger)
            for try await (name, api, wire, started, seen) in query.decode((String, String, String, Date, Double).self) {
                rows.append(ManagerRow(name: name, apiURL: api, wireAddress: wire, startedAt: started, seenSecondsAgo: seen))
            }
            let leader: (name: String, epoch: Int64)?
            if case .heldBy(let holder, let epoch) = try await self.currentLeaseNow() { leader = (holder, epoch) } else { leader = nil }
            return (rows, leader)
        }
    }

    // MARK: - Shared secrets

    /// The secret named `name`, made by `make` and stored when there is none; when several
    /// managers make it at once, the first stored wins and every one gets that one.
    public func secret(_ name: String, orMake make: @escaping @Sendable () throws -> [UInt8]) async throws -> [UInt8] {
        try await withDeadline("reading the secret \(name)") {
            if let stored = try await self.storedSecret(name) { return stored }
            let made = try make()
            try await self.client.query(
                "INSERT INTO cluster_secret (name, value) VALUES (\(name), \(ByteBuffer(bytes: made))) ON CONFLICT (name) DO NOTHING",
                logger: self.logger)
            return try await self.storedSecret(name) ?? made
        }
    }

    /// Replaces the secret named `name` (a rotation).
    public func setSecret(_ name: String, to value: [UInt8]) async throws {
        try await withDeadline("writing the secret \(name)") {
            try await self.client.query(
                """
                INSERT INTO cluster_secret (name, value) VALUES (\(name), \(ByteBuffer(bytes: value)))
                ON CONFLICT (name) DO UPDATE SET value = excluded.value
                """, logger: self.logger)
        }
    }

    /// The secret named `name`, if it is stored.
    public func storedSecret(_ name: String) async throws -> [UInt8]? {
        for try await value in try await client.query("SELECT value FROM cluster_secret WHERE name = \(name)", logger: logger).decode(ByteBuffer.self) {
            return Array(buffer: value)
        }
        return nil
    }

    /// Who holds the lease now (by the database's clock), if anyone.
    public func currentLease() async throws -> LeaseAnswer {
        try await withDeadline("reading the lease") { try await self.currentLeaseNow() }
    }

    private func currentLeaseNow() async throws -> LeaseAnswer {
        let rows = try await client.query(
            "SELECT holder, epoch FROM lease WHERE id = 1 AND holder IS NOT NULL AND expires_at >= now()", logger: logger)
        for try await (holder, epoch) in rows.decode((String, Int64).self) { return .heldBy(holder: holder, epoch: epoch) }
        return .free
    }

    /// Applies `batches` as ``apply(_:)`` does, only while `epoch` is the lease's: the check
    /// is in the same transaction, and holds the lease row shared until the commit, so that
    /// no other manager takes the lease in between. A deposed leader commits nothing.
    public func apply(_ batches: [StoreBatch], fencedBy epoch: Int64) async throws {
        guard let last = batches.last else { return }
        try await write(batches.flatMap(\.changes).compacted(), revision: Int64(clamping: last.sequence), fence: epoch)
    }

    /// Runs `operation`, failing with ``StoreTimeoutError`` past ``operationTimeout`` (the
    /// operation is cancelled: a commit cut short may or may not have been made, as with any
    /// commit whose answer is lost, and the manager's retry writes it again).
    private func withDeadline<T: Sendable>(_ what: String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        let timeout = operationTimeout, location = location
        return try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw StoreTimeoutError(location: location, what: what, timeout: timeout)
            }
            defer { group.cancelAll() }
            guard let first = try await group.next() else { throw CancellationError() }
            return first
        }
    }

    // MARK: - Errors

    /// What went wrong, for a person: the server's own message when it sent one.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            let underlying = error.underlying.map { "\($0)" } ?? ""
            if underlying.contains("Connection refused") { return "connection refused (is PostgreSQL running there?)" }
            if underlying.localizedCaseInsensitiveContains("timed out") || underlying.contains("connectTimeout") { return "no answer within the connect timeout" }
            return "\(error.code)" + (underlying.isEmpty ? "" : ": \(underlying)")
        }
        return "\(error)"
    }
}

/// A store URL that cannot be used, and why.
public struct StoreURLError: Error, CustomStringConvertible, Sendable {
    public var text: String
    public var reason: String
    public var description: String { "\(reason): \(text)" }
}

/// A store that could not be opened, and why.
public struct StoreOpenError: Error, CustomStringConvertible, Sendable {
    public var location: String
    public var reason: String
    public var description: String { "cannot open the store at \(location): \(reason)" }
}

/// A manager as it announces itself to the others.
public struct ManagerAnnouncement: Sendable, Hashable {
    public var name: String
    /// Its REST gateway, as clients reach it (`http://HOST:PORT`).
    public var apiURL: String
    /// Its cluster port, as workers reach it (`HOST:PORT`).
    public var wireAddress: String
    public var startedAt: Date

    public init(name: String, apiURL: String, wireAddress: String, startedAt: Date) {
        self.name = name
        self.apiURL = apiURL
        self.wireAddress = wireAddress
        self.startedAt = startedAt
    }
}

/// A manager's row, as the store lists them.
public struct ManagerRow: Sendable, Hashable {
    public var name: String
    public var apiURL: String
    public var wireAddress: String
    public var startedAt: Date
    /// How long ago it last announced itself, by the database's clock.
    public var seenSecondsAgo: Double
}

/// What the database says of the lease.
public enum LeaseAnswer: Sendable, Hashable {
    /// The caller holds it, with this epoch.
    case held(epoch: Int64)
    /// Another holds it, live.
    case heldBy(holder: String, epoch: Int64)
    /// Nobody holds it.
    case free
}

/// A write fenced by an epoch that is no longer the lease's: nothing of it was committed.
public struct StaleEpochError: Error, CustomStringConvertible, Sendable {
    public var epoch: Int64
    public var description: String { "epoch \(epoch) no longer holds the lease: nothing was written" }
}

/// The database did not answer an operation in time.
public struct StoreTimeoutError: Error, CustomStringConvertible, Sendable {
    public var location: String
    public var what: String
    public var timeout: Duration
    public var description: String { "\(location) did not answer within \(DurationText.format(timeout)) (\(what))" }
}
