import Foundation
import OrchCore

/// The manager's durable state: tasks, their history, nodes. The manager depends on this
/// protocol only, so that another store (PostgreSQL, for several managers) can be added
/// without touching it.
public protocol ManagerStore: Sendable {
    /// Everything kept, as the manager loads it when it starts.
    func load() async throws -> StoreSnapshot
    /// Applies `batches` in order, in one transaction, and records the last one's sequence
    /// number as the state's revision; durable when it returns (see `Durability`).
    func apply(_ batches: [StoreBatch]) async throws
    /// A task's history, oldest first.
    func history(of task: TaskID) async throws -> [TaskHistoryEntry]
    /// Every REST API token kept (revoked ones too: their names and times stay listed).
    func loadTokens() async throws -> [APITokenRecord]
    /// Inserts or replaces the token named `token.name`; durable when it returns.
    func saveToken(_ token: APITokenRecord) async throws
    /// Records when the live token `name` with `hash` was last used; changes nothing else,
    /// and nothing at all for a token revoked or replaced meanwhile.
    func recordTokenUse(name: String, hash: String, at: Date) async throws
}

/// How far a committed write survives.
public enum Durability: Sendable, Hashable {
    /// WAL with `synchronous = NORMAL`: survives a killed process.
    case processCrash
    /// WAL with `synchronous = FULL`: survives a power loss too (`--fsync`).
    case powerLoss
}

extension ManagerStore {
    /// Applies one batch of `changes` as the state's revision `revision`.
    public func apply(_ changes: [StoreChange], revision: UInt64) async throws {
        try await apply([StoreBatch(sequence: revision, changes: changes)])
    }
}
