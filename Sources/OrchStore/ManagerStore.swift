import Foundation
import OrchCore

/// One change to the manager's durable state.
public enum StoreChange: Sendable, Hashable {
    /// A new task: its spec (written once; it never changes) and its state.
    case insertTask(TaskRecord)
    /// A task's state after a change (its spec is not written again).
    case saveTask(TaskRecord)
    /// Appends a line to a task's history.
    case appendHistory(TaskHistoryEntry)
    /// Inserts or replaces a node.
    case saveNode(NodeRecord)
    case deleteNode(NodeID)
}

extension [StoreChange] {
    /// The same changes with every task or node saved only in its last version: one
    /// transaction writes the batch, so the versions before it would be overwritten anyway.
    /// Inserts stay (a later save of the same task follows them).
    public func compacted() -> [StoreChange] {
        var lastTask: [TaskID: Int] = [:]
        var lastNode: [NodeID: Int] = [:]
        for (index, change) in enumerated() {
            switch change {
            case .saveTask(let task): lastTask[task.id] = index
            case .insertTask: break
            case .saveNode(let node): lastNode[node.id] = index
            case .deleteNode(let id): lastNode[id] = index
            case .appendHistory: break
            }
        }
        return enumerated().compactMap { index, change in
            switch change {
            case .saveTask(let task): lastTask[task.id] == index ? change : nil
            case .insertTask: change
            case .saveNode(let node): lastNode[node.id] == index ? change : nil
            case .deleteNode(let id): lastNode[id] == index ? change : nil
            case .appendHistory: change
            }
        }
    }
}

/// The manager's durable state: tasks, their history, nodes. The manager depends on this
/// protocol only, so that another store (PostgreSQL, for several managers) can be added
/// without touching it.
public protocol ManagerStore: Sendable {
    /// Everything kept, as the manager loads it when it starts.
    func load() async throws -> StoreSnapshot
    /// Applies `changes` in one transaction; durable when it returns (see `Durability`).
    func apply(_ changes: [StoreChange]) async throws
    /// A task's history, oldest first.
    func history(of task: TaskID) async throws -> [TaskHistoryEntry]
}

public struct StoreSnapshot: Sendable, Hashable {
    public var tasks: [TaskRecord]
    public var nodes: [NodeRecord]

    public init(tasks: [TaskRecord], nodes: [NodeRecord]) {
        self.tasks = tasks
        self.nodes = nodes
    }
}

/// How far a committed write survives.
public enum Durability: Sendable, Hashable {
    /// WAL with `synchronous = NORMAL`: survives a killed process.
    case processCrash
    /// WAL with `synchronous = FULL`: survives a power loss too (`--fsync`).
    case powerLoss
}
