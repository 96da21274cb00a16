import Foundation

/// What the manager keeps of a worker node across its own restarts: identity and capacity.
/// Heartbeats and metrics stay in memory.
public struct NodeRecord: Sendable, Hashable, Codable {
    public var id: NodeID
    public var name: String
    /// The addresses the worker listens on (its HTTP API), `HOST:PORT`.
    public var addresses: [String]
    public var capacity: NodeCapacity
    public var labels: [String: String]
    public var joinedAt: Date
    public var lastSeenAt: Date
    /// When a user drained it (`orchctl node drain`): nothing new is placed on it until undrained.
    public var drainedAt: Date?

    public init(id: NodeID, name: String, addresses: [String], capacity: NodeCapacity, labels: [String: String], joinedAt: Date, lastSeenAt: Date) {
        self.id = id
        self.name = name
        self.addresses = addresses
        self.capacity = capacity
        self.labels = labels
        self.joinedAt = joinedAt
        self.lastSeenAt = lastSeenAt
    }
}

/// Labels a worker sets on itself (its `--label`s may not start with `orch.`).
public enum NodeLabel {
    public static let reservedPrefix = "orch."
    /// `haproxy`: the node runs the routing mesh's load balancer, so that a service's
    /// published ports listen on it. Absent: HAProxy was not found there.
    public static let mesh = "orch.mesh"
}

/// What a node offers, in millicores and bytes.
public struct NodeCapacity: Sendable, Hashable, Codable {
    public var millicores: Int
    public var memoryBytes: Int
    public var diskBytes: Int

    public init(millicores: Int, memoryBytes: Int, diskBytes: Int) {
        self.millicores = millicores
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
    }
}

/// One line of a task's history.
public struct TaskHistoryEntry: Sendable, Hashable, Codable {
    public var task: TaskID
    public var at: Date
    /// The state after the event.
    public var state: TaskState
    public var message: String

    public init(task: TaskID, at: Date, state: TaskState, message: String) {
        self.task = task
        self.at = at
        self.state = state
        self.message = message
    }
}
