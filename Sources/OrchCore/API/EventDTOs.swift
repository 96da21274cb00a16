import Foundation

/// One change in the cluster, as `GET /events` and `orchctl events` show it: a task's
/// change of state (the line its history gains) or a node's.
public struct ClusterEventDTO: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable, Hashable {
        case task, node
    }

    /// Numbers the events of this manager's run in order: ask with the last one seen
    /// (`?since=N`, or `Last-Event-ID` on a stream) for those after it.
    public var id: UInt64
    public var at: Date
    public var kind: Kind
    public var task: TaskID?
    /// The task's name, when it has one.
    public var name: String?
    /// The service the task is a replica of.
    public var service: String?
    /// The node: the task's, or the one the event is about.
    public var node: NodeID?
    public var nodeName: String?
    /// The state after the event: a task's (`running`) or a node's (`down`).
    public var state: String
    /// What happened and why, as the task's history says it.
    public var message: String

    public init(
        id: UInt64, at: Date, kind: Kind, task: TaskID? = nil, name: String? = nil, service: String? = nil,
        node: NodeID? = nil, nodeName: String? = nil, state: String, message: String
    ) {
        self.id = id
        self.at = at
        self.kind = kind
        self.task = task
        self.name = name
        self.service = service
        self.node = node
        self.nodeName = nodeName
        self.state = state
        self.message = message
    }
}

/// An answer of `GET /events`: the events after the one asked from, oldest first, and the
/// id to ask from next.
public struct EventPageDTO: Codable, Sendable, Hashable {
    public var events: [ClusterEventDTO]
    /// The id of the newest event given (or, with none, the one asked from).
    public var last: UInt64
    /// Events were dropped between the one asked from and the first given (the manager keeps
    /// the newest only, and forgets them when it restarts).
    public var gap: Bool

    public init(events: [ClusterEventDTO], last: UInt64, gap: Bool) {
        self.events = events
        self.last = last
        self.gap = gap
    }
}
