import Foundation
import OrchCore

// The events stream: each line a task's history gains, and each change of a node, in the
// order they happened, for `GET /events`.
extension ManagerMachine {
    /// Journals a line of a task's history and makes it an event, shown once it is durable.
    mutating func history(_ entry: TaskHistoryEntry) {
        journal.append(.appendHistory(entry))
        let record = tasks[entry.task]
        eventLog.append(ClusterEventDTO(
            id: 0, at: entry.at, kind: .task, task: entry.task, name: record?.spec.name, service: record?.replica?.service,
            node: record?.node, nodeName: record?.node.flatMap { nodes[$0]?.record.name },
            state: entry.state.rawValue, message: entry.message), revision: issued + 1)
    }

    /// A change of a node; `durable` when it is journaled in this input (a drain, a removal).
    mutating func nodeEvent(_ id: NodeID, _ message: String, state: String? = nil, durable: Bool = false) {
        let entry = nodes[id]
        eventLog.append(ClusterEventDTO(
            id: 0, at: date, kind: .node, node: id, nodeName: entry?.record.name ?? id.rawValue,
            state: state ?? entry?.state.rawValue ?? "removed", message: message), revision: durable ? issued + 1 : 0)
    }

    /// The durable events after `id`, oldest first, at most `limit`, of one task, node or
    /// service when asked.
    public func events(after id: UInt64, limit: Int, task: TaskID? = nil, node: NodeID? = nil, service: String? = nil) -> EventPageDTO {
        eventLog.page(after: id, limit: limit, committed: committed) { event in
            (task == nil || event.task == task) && (node == nil || event.node == node) && (service == nil || event.service == service)
        }
    }

    /// The id of the newest durable event.
    public var lastEvent: UInt64 { eventLog.lastVisible(committed: committed) }
}
