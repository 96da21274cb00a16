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
    /// Forgets a task and its history (an ended replica a service no longer needs).
    case deleteTask(TaskID)
    /// Inserts or replaces a service.
    case saveService(ServiceRecord)
    case deleteService(String)
}

extension [StoreChange] {
    /// The same changes with every task or node saved only in its last version: one
    /// transaction writes the batch, so the versions before it would be overwritten anyway.
    /// Inserts stay (a later save of the same task follows them).
    public func compacted() -> [StoreChange] {
        var lastTask: [TaskID: Int] = [:]
        var lastNode: [NodeID: Int] = [:]
        var lastService: [String: Int] = [:]
        for (index, change) in enumerated() {
            switch change {
            case .saveTask(let task): lastTask[task.id] = index
            case .saveService(let service): lastService[service.name] = index
            case .insertTask, .deleteTask, .deleteService: break
            case .saveNode(let node): lastNode[node.id] = index
            case .deleteNode(let id): lastNode[id] = index
            case .appendHistory: break
            }
        }
        return enumerated().compactMap { index, change in
            switch change {
            case .saveTask(let task): lastTask[task.id] == index ? change : nil
            case .saveService(let service): lastService[service.name] == index ? change : nil
            case .insertTask, .deleteTask, .deleteService: change
            case .saveNode(let node): lastNode[node.id] == index ? change : nil
            case .deleteNode(let id): lastNode[id] == index ? change : nil
            case .appendHistory: change
            }
        }
    }
}

/// One commit's worth of changes, under its sequence number.
public struct StoreBatch: Sendable, Hashable {
    public var sequence: UInt64
    public var changes: [StoreChange]

    public init(sequence: UInt64, changes: [StoreChange]) {
        self.sequence = sequence
        self.changes = changes
    }
}

/// Everything kept, as the manager loads it when it starts.
public struct StoreSnapshot: Sendable, Hashable {
    public var tasks: [TaskRecord]
    public var nodes: [NodeRecord]
    /// The sequence number of the last batch committed: the revision the state resumes at.
    public var revision: UInt64
    /// Nodes removed from the cluster (`deleteNode`): their certificates stay refused.
    public var removedNodes: Set<NodeID>
    public var services: [ServiceRecord]

    public init(tasks: [TaskRecord], nodes: [NodeRecord], revision: UInt64 = 0, removedNodes: Set<NodeID> = [], services: [ServiceRecord] = []) {
        self.services = services
        self.tasks = tasks
        self.nodes = nodes
        self.revision = revision
        self.removedNodes = removedNodes
    }
}
