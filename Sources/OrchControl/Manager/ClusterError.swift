import OrchCore

/// What a request to the manager can be refused for; the REST gateway maps each to a status.
public enum ClusterError: Error, Sendable, Hashable, CustomStringConvertible {
    case taskNotFound(String)
    case ambiguousTaskID(String, matches: [TaskID])
    case taskConflict(TaskID)
    /// A task that has not ended holds the name: another spec may not take it.
    case nameTaken(String, TaskID, TaskState)
    /// Only an ended task can be purged.
    case taskNotEnded(TaskID, TaskState)
    case invalidTask([SpecProblem])
    case nodeNotFound(String)
    case nodeIsUp(String)
    /// A node removed from the cluster: its id is not given again.
    case nodeRemoved(String)
    /// A node with that id is connected: a joiner may not take its id.
    case nodeConnected(String)
    case ambiguousNodeID(String, matches: [NodeID])
    /// The store refuses writes: nothing is accepted until it takes them again (503).
    case unavailable(String)
    case noLogs(String)
    case taskTooLarge(String)
    case serviceNotFound(String)
    /// A service of that name exists with another spec (changes go through PUT).
    case serviceConflict(String)
    case invalidService([SpecProblem])
    /// The service is being removed: it takes no change.
    case serviceRemoving(String)
    /// There is no earlier version to go back to.
    case nothingToRollBack(String)

    public var description: String {
        switch self {
        case .taskNotFound(let id): "no task with id \(id)"
        case .ambiguousTaskID(let prefix, let matches):
            "the id prefix \(prefix) matches \(matches.count) tasks: \(matches.prefix(5).map(\.rawValue).joined(separator: ", "))"
        case .taskConflict(let id): "a task with id \(id) exists already with another spec"
        case .nameTaken(let name, let id, let state):
            "a task named \(name) is \(state.rawValue) (\(id)) with another spec: stop it first (orchctl stop \(name)), "
                + "give this one another name, or run several as a service (orchctl service create)"
        case .taskNotEnded(let id, let state):
            state == .stopping ? "task \(id) is stopping; it can be removed once it has ended"
                               : "task \(id) is \(state.rawValue): stop it first (orchctl stop \(id)); only an ended task is removed"
        case .invalidTask(let problems): "the task is not valid: \(problems.map(\.description).joined(separator: "; "))"
        case .nodeNotFound(let id): "no node with id \(id)"
        case .nodeIsUp(let name): "node \(name) is up; only a node that is down can be removed"
        case .nodeRemoved(let id):
            "node \(id) was removed from the cluster; to join again as a new node, remove node-id and node.crt from the worker's state directory"
        case .nodeConnected(let name): "a node with this id (\(name)) is connected; a worker joining may not take its id"
        case .ambiguousNodeID(let prefix, let matches):
            "the id prefix \(prefix) matches \(matches.count) nodes: \(matches.prefix(5).map(\.rawValue).joined(separator: ", "))"
        case .unavailable(let text): "the manager cannot store changes now (\(text)); try again later (a task submitted again with the same id is the same task)"
        case .noLogs(let text): "no logs: \(text)"
        case .taskTooLarge(let text): text
        case .serviceNotFound(let name): "no service named \(name)"
        case .serviceConflict(let name): "a service named \(name) exists already with another spec; change it with PUT /services/\(name) (orchctl service update)"
        case .invalidService(let problems): "the service is not valid: \(problems.map(\.description).joined(separator: "; "))"
        case .serviceRemoving(let name): "service \(name) is being removed; it takes no change"
        case .nothingToRollBack(let text): text
        }
    }
}
