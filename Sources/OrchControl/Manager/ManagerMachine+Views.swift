import OrchCore

/// What the shell reads of the machine: lookups and listings. Reading changes nothing.
extension ManagerMachine {
    public func task(_ id: TaskID) -> TaskRecord? { tasks[id] }

    /// The tasks and their order of acceptance, as values: a listing is built from this copy
    /// away from the cluster's actor, so that a large page does not hold up its heartbeats.
    public var taskTable: TaskTable {
        TaskTable(tasks: tasks, order: order, nodeNames: nodes.mapValues(\.record.name), backoffs: backoff.mapValues(wallDate))
    }

    /// When a task in its restart backoff is placed again.
    public func backoffUntil(_ id: TaskID) -> Date? { backoff[id].map(wallDate) }

    func wallDate(_ moment: Moment) -> Date { wallOrigin.addingTimeInterval(Double(moment.nanoseconds) / 1e9) }

    /// The task `text` names: its id; else its name (the live task of that name, or the
    /// newest ended one); else a unique prefix of its id, with or without the dashes (a
    /// short id: `TaskID.short`).
    public func resolveTask(_ text: String) throws(ClusterError) -> TaskID {
        let exact = TaskID(rawValue: text)
        if tasks[exact] != nil { return exact }
        if let named = taskNames[text] {
            if let live = liveTask(named: text) { return live.id }
            let newest = named.compactMap { tasks[$0] }.max { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
            if let newest { return newest.id }
        }
        let plain = text.filter { $0 != "-" }
        let matches = tasks.keys.filter { $0.rawValue.hasPrefix(text) || (!plain.isEmpty && $0.rawValue.filter { $0 != "-" }.hasPrefix(plain)) }.sorted()
        if matches.count == 1 { return matches[0] }
        if matches.isEmpty { throw .taskNotFound(text) }
        throw .ambiguousTaskID(text, matches: matches)
    }

    public func resolveNode(_ text: String) throws(ClusterError) -> NodeID {
        let exact = NodeID(rawValue: text)
        if nodes[exact] != nil { return exact }
        let matches = nodes.keys.filter { $0.rawValue.hasPrefix(text) || nodes[$0]?.record.name == text }.sorted()
        if matches.count == 1 { return matches[0] }
        if matches.isEmpty { throw .nodeNotFound(text) }
        throw .ambiguousNodeID(text, matches: matches)
    }

    public func nodeName(_ id: NodeID) -> String? { nodes[id]?.record.name }

    /// Where the output of `id` is read: the node, its connection and the attempt. The
    /// current attempt's, or with `previous` the newest that ended (its worker serves the
    /// copy it kept once the container is gone).
    public func logSource(of id: TaskID, previous: Bool = false) throws(ClusterError) -> (node: NodeID, connection: ConnectionID, attempt: Int) {
        guard let record = tasks[id] else { throw .taskNotFound(id.rawValue) }
        if previous {
            guard let ended = record.lastEnded else {
                throw .noLogs("task \(id) has no attempt that ended yet; without --previous, logs shows the current one's output")
            }
            guard let connection = nodes[ended.node]?.connection else {
                throw .noLogs("attempt \(ended.attempt) of task \(id) ran on \(nodes[ended.node]?.record.name ?? ended.node.rawValue), which is not connected")
            }
            return (ended.node, connection, ended.attempt)
        }
        guard let node = record.node, record.containerID != nil else {
            if record.lastEnded != nil {
                let why = record.error.map { ": \($0)" } ?? ""
                throw .noLogs("task \(id) is \(record.state.rawValue)\(why); its current attempt has not run yet, and --previous shows the output of the last one that ended")
            }
            throw .noLogs("task \(id) has not run yet (\(record.state.rawValue))")
        }
        guard let connection = nodes[node]?.connection else { throw .noLogs("the node of task \(id) is not connected") }
        return (node, connection, record.attempt)
    }

    public func listNodes() -> [NodeDTO] {
        nodes.values.sorted { ($0.record.name, $0.record.id) < ($1.record.name, $1.record.id) }.map(nodeDTO)
    }

    /// One node as the gateway shows it.
    public func node(_ id: NodeID) -> NodeDTO? { nodes[id].map(nodeDTO) }

    func nodeDTO(_ entry: NodeEntry) -> NodeDTO {
        let reserved = schedulingIndex[entry.record.id].map { schedulingNodes[$0].reserved } ?? .zero
        var dto = NodeDTO(
            id: entry.record.id, name: entry.record.name, addresses: entry.record.addresses, state: entry.state,
            labels: entry.record.labels, capacity: entry.record.capacity,
            reserved: NodeDTO.Resources(millicores: reserved.millicores, memoryBytes: reserved.memoryBytes),
            metrics: entry.metrics.map { metrics in
                NodeDTO.Metrics(
                    cpuMillicoresUsed: Int(metrics.cpuMillicoresUsed), memoryUsedBytes: Int(clamping: metrics.memoryUsedBytes),
                    memoryTotalBytes: Int(clamping: metrics.memoryTotalBytes), diskUsedBytes: Int(clamping: metrics.diskUsedBytes),
                    diskTotalBytes: Int(clamping: metrics.diskTotalBytes), load1: Double(metrics.load1Hundredths) / 100,
                    load5: Double(metrics.load5Hundredths) / 100, load15: Double(metrics.load15Hundredths) / 100,
                    runningTasks: Int(metrics.runningTasks))
            },
            tasks: entry.tasks.count, joinedAt: entry.record.joinedAt, lastHeartbeat: entry.lastHeartbeatDate,
            engineError: entry.engineError)
        dto.drained = entry.record.drainedAt != nil
        return dto
    }

    /// Counts for /metrics.
    public func counts() -> (tasksByState: [TaskState: Int], nodesByState: [NodeDTO.State: Int]) {
        var nodesByState: [NodeDTO.State: Int] = [:]
        for entry in nodes.values { nodesByState[entry.state, default: 0] += 1 }
        return (stateCounts, nodesByState)
    }

    /// Whether the store refuses writes (and why): `/healthz` says so.
    public var storeProblem: String? { storeFailure }

    // MARK: - For the simulator's invariants

    /// The pending tasks that are to run but sit in none of the placement queues.
    public var forgottenPendingTasks: [TaskID] {
        let queued = Set(ready).union(blocked).union(backoff.keys)
        return order.filter { id in
            guard let record = tasks[id] else { return false }
            return record.state == .pending && record.desiredState == .run && !queued.contains(id)
        }
    }

    /// Each node's reserved resources against its capacity, recomputed from the tasks.
    public var reservations: [(node: NodeID, reserved: ResourceAmount, capacity: ResourceAmount)] {
        nodes.keys.sorted().compactMap { id in
            guard let entry = nodes[id] else { return nil }
            var reserved = ResourceAmount.zero
            for task in entry.tasks {
                guard let spec = tasks[task]?.spec else { continue }
                reserved.millicores += spec.resources.millicores
                reserved.memoryBytes += spec.resources.memoryBytes
            }
            return (id, reserved, ResourceAmount(millicores: entry.record.capacity.millicores, memoryBytes: entry.record.capacity.memoryBytes))
        }
    }

    /// Whether a node is connected, as the machine sees it.
    public func isConnected(_ node: NodeID) -> Bool { nodes[node]?.connection != nil }

    /// The number of effects held for durability.
    public var heldCount: Int { held.count }
}

/// The tasks as of one moment, for listings built away from the actor.
public struct TaskTable: Sendable {
    public var tasks: [TaskID: TaskRecord]
    public var order: [TaskID]
    public var nodeNames: [NodeID: String]
    public var backoffs: [TaskID: Date] = [:]

    /// Tasks in the order they were accepted, filtered, from after `after`, at most `limit`.
    public func list(state: TaskState?, node: NodeID?, service: String? = nil, after: TaskID?, limit: Int) -> (tasks: [TaskDTO], more: Bool) {
        var start = 0
        if let after, let position = order.firstIndex(of: after) { start = position + 1 }
        var result: [TaskDTO] = []
        var index = start
        while index < order.count {
            defer { index += 1 }
            guard let record = tasks[order[index]] else { continue }
            if let state, record.state != state { continue }
            if let node, record.node != node { continue }
            if let service, record.replica?.service != service { continue }
            if result.count == limit { return (result, true) }
            result.append(TaskDTO(record, nodeName: record.node.flatMap { nodeNames[$0] }, backoffUntil: backoffs[record.id]))
        }
        return (result, false)
    }
}
