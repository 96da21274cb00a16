import Foundation
import OrchCore
import OrchWire

/// What a request to the cluster can be refused for; the REST gateway maps each to a status.
public enum ClusterError: Error, Sendable, Hashable, CustomStringConvertible {
    case taskNotFound(String)
    case ambiguousTaskID(String, matches: [TaskID])
    case taskConflict(TaskID)
    case nodeNotFound(String)
    case nodeIsUp(String)
    case ambiguousNodeID(String, matches: [NodeID])
    case storage(String)
    case noLogs(String)
    case taskTooLarge(String)

    public var description: String {
        switch self {
        case .taskNotFound(let id): "no task with id \(id)"
        case .ambiguousTaskID(let prefix, let matches):
            "the id prefix \(prefix) matches \(matches.count) tasks: \(matches.prefix(5).map(\.rawValue).joined(separator: ", "))"
        case .taskConflict(let id): "a task with id \(id) exists already with another spec"
        case .nodeNotFound(let id): "no node with id \(id)"
        case .nodeIsUp(let name): "node \(name) is up; only a node that is down can be removed"
        case .ambiguousNodeID(let prefix, let matches):
            "the id prefix \(prefix) matches \(matches.count) nodes: \(matches.prefix(5).map(\.rawValue).joined(separator: ", "))"
        case .storage(let text): "the task could not be stored: \(text)"
        case .noLogs(let text): "no logs: \(text)"
        case .taskTooLarge(let text): text
        }
    }
}

extension Cluster {
    // MARK: - Submissions and stops

    /// Accepts a task: durable before this returns. The same id with the same spec is the
    /// same task (returned, `created` false); with another spec it is a conflict.
    func submit(_ spec: TaskSpec, now: Date = Date()) async throws(ClusterError) -> (record: TaskRecord, created: Bool) {
        let id = spec.id ?? TaskID.random()
        if let existing = tasks[id] {
            var normalized = spec
            normalized.id = id
            guard existing.spec == normalized else { throw .taskConflict(id) }
            return (existing, false)
        }
        let record = TaskRecord(id: id, spec: spec, now: now)
        // Its assignment must fit in one frame of the cluster protocol.
        let size = Frame.encode(.assignTask(AssignTask(task: id, attempt: 1, spec: record.spec))).readableBytes - 4
        guard size <= configuration.maximumFrameBytes else {
            throw .taskTooLarge("the task is \(ByteCount.format(size)) once encoded; the cluster protocol carries at most \(ByteCount.format(configuration.maximumFrameBytes))")
        }
        do {
            try await persistAndWait([
                .insertTask(record), .appendHistory(TaskHistoryEntry(task: id, at: now, state: .pending, message: "accepted")),
            ])
        } catch {
            throw .storage("\(error)")
        }
        // Another submission of the same id may have won while this one was being written.
        if let existing = tasks[id] { return (existing, false) }
        tasks[id] = record
        order.append(id)
        stateCounts[.pending, default: 0] += 1
        metrics.submitted()
        enqueuePending(id)
        placePending(now: now)
        return (tasks[id] ?? record, true)
    }

    /// Stops a task: its desired state becomes stop; it ends Completed once its worker
    /// reports the container stopped, and no restart policy applies.
    func stop(_ id: TaskID, now: Date = Date()) async throws(ClusterError) -> TaskRecord {
        guard let record = tasks[id] else { throw .taskNotFound(id.rawValue) }
        let before = record.state
        if change(id, .stopRequested, now: now), let after = tasks[id] {
            if after.state == .stopping, let node = after.node {
                nodes[node]?.link?.send(.stopTask(StopTask(task: id, attempt: UInt64(after.attempt))))
            }
            if after.state == .completed && (before == .pending || before == .lost) {
                notBefore[id] = nil
                release(id)
            }
        }
        try? await persistAndWait([])
        return tasks[id] ?? record
    }

    /// A task pinned to the node it was posted to (a worker's POST /tasks).
    func submitPinned(_ submit: SubmitTask, from node: NodeID) async -> SubmitResult {
        var spec = submit.spec
        if spec.constraints.node == nil { spec.constraints.node = node.rawValue }
        do {
            let (record, _) = try await self.submit(spec)
            return SubmitResult(requestID: submit.requestID, task: record.id, error: nil)
        } catch {
            return SubmitResult(requestID: submit.requestID, task: nil, error: error.description)
        }
    }

    // MARK: - What workers report

    func received(_ message: WireMessage, from node: NodeID, link: NodeLink) async {
        guard nodes[node]?.link === link else { return }
        switch message {
        case .heartbeat(let beat):
            heartbeat(node, beat)
        case .taskStatus(let status):
            await statusReported(status, by: node, link: link)
        case .taskList(let list):
            reconcile(list, from: node, link: link)
        case .goodbye(let bye):
            goodbye(node, bye)
        case .submitTask(let submit):
            link.send(.submitResult(await submitPinned(submit, from: node)))
        case .logChunk(let data):
            logStreams.deliver(data)
        case .logEnd(let end):
            logStreams.finish(end.streamID, error: end.error)
        default:
            logger.debug("ignoring \(message.kind) from \(node)")
        }
    }

    /// A worker's report on one attempt. Terminal statuses are acknowledged once recorded
    /// durably; a report on an attempt that is not current stops that attempt.
    func statusReported(_ status: TaskStatus, by node: NodeID, link: NodeLink, now: Date = Date()) async {
        let id = status.task
        guard let record = tasks[id], record.attempt == Int(status.attempt), record.node == node else {
            if !status.state.isTerminal { link.send(.stopTask(StopTask(task: id, attempt: status.attempt))) }
            link.send(.ack(Ack(statusID: status.statusID)))
            return
        }
        switch status.state {
        case .running:
            if record.state == .scheduled || record.state == .lost {
                if let container = status.container { change(id, .started(container: container, hostPorts: status.ports), now: now) }
                if record.state == .lost { reserve(id, on: node) }
            } else if record.state == .running, record.hostPorts != status.ports || record.containerID != status.container {
                tasks[id]?.hostPorts = status.ports
                if let container = status.container { tasks[id]?.containerID = container }
                if let updated = tasks[id] { persist([.saveTask(updated)]) }
            }
            if let current = tasks[id], current.state == .running, current.spec.healthCheck != nil, status.health != current.health {
                if status.health == .unhealthy {
                    // The manager decides: the attempt is ended and its policy restarts it.
                    link.send(.stopTask(StopTask(task: id, attempt: status.attempt)))
                    if change(id, .healthFailed, now: now) { attemptEnded(id, now: now) }
                } else if status.health != .none {
                    change(id, .healthChanged(status.health), now: now)
                }
            }
            link.send(.ack(Ack(statusID: status.statusID)))
        case .completed, .failed:
            if !record.state.isTerminal && record.state != .pending {
                let event: TaskEvent = status.exitCode.map { .exited(code: Int($0)) }
                    ?? .startFailed(reason: status.error ?? "the container could not be started")
                if change(id, event, now: now) {
                    if let error = status.error, status.exitCode == nil { tasks[id]?.error = error }
                    attemptEnded(id, now: now)
                }
                placePending(now: now)
            }
            do {
                try await persistAndWait([])
                link.send(.ack(Ack(statusID: status.statusID)))
            } catch {
                logger.error("could not record the status of \(id): \(error); the worker will send it again")
            }
        default:
            link.send(.ack(Ack(statusID: status.statusID)))
        }
    }

    /// A (re)connected worker's full task list against what the manager knows: attempts
    /// that are not current are stopped; current ones that the worker lost are ended;
    /// assignments that never arrived are sent again.
    func reconcile(_ list: TaskList, from node: NodeID, link: NodeLink, now: Date = Date()) {
        var held = Set<TaskID>()
        for entry in list.entries {
            guard let record = tasks[entry.task], record.attempt == Int(entry.attempt), record.node == node else {
                if !entry.state.isTerminal || entry.container != nil {
                    link.send(.stopTask(StopTask(task: entry.task, attempt: entry.attempt)))
                }
                continue
            }
            held.insert(entry.task)
            if record.desiredState == .stop && !entry.state.isTerminal {
                link.send(.stopTask(StopTask(task: entry.task, attempt: entry.attempt)))
            } else if entry.state == .running && (record.state == .lost || record.state == .scheduled || record.state == .running) {
                // Sent again so that the worker reports the attempt's full status (ports,
                // health) and learns its spec if it adopted the container after a restart.
                link.send(.assignTask(AssignTask(task: entry.task, attempt: entry.attempt, spec: record.spec)))
            }
        }
        for id in nodes[node]?.tasks.sorted() ?? [] where !held.contains(id) {
            guard let record = tasks[id], record.node == node else { continue }
            switch record.state {
            case .scheduled:
                link.send(.assignTask(AssignTask(task: id, attempt: UInt64(record.attempt), spec: record.spec)))
            case .running:
                if change(id, .startFailed(reason: "the worker no longer has this task"), now: now) { attemptEnded(id, now: now) }
            case .stopping:
                if change(id, .exited(code: 0), now: now) { release(id) }
            default:
                break
            }
        }
        placePending(now: now)
    }

    // MARK: - Logs

    /// Asks the worker that runs `id` for its output; the link to grant credit and end it.
    func openLogs(_ id: TaskID, tail: Int?, follow: Bool) throws(ClusterError) -> (stream: UInt64, events: AsyncStream<LogStreams.Event>, link: NodeLink) {
        guard let record = tasks[id] else { throw .taskNotFound(id.rawValue) }
        guard let node = record.node, record.containerID != nil else { throw .noLogs("task \(id) has not run yet (\(record.state.rawValue))") }
        guard let link = nodes[node]?.link else { throw .noLogs("the node of task \(id) is not connected") }
        let (stream, events) = logStreams.open(from: node)
        link.send(.logRequest(LogRequest(
            streamID: stream, task: id, tail: tail.map { UInt32(clamping: max($0, 0)) }, follow: follow, credit: LogStreams.credit)))
        return (stream, events, link)
    }

    // MARK: - Views

    func resolveTask(_ text: String) throws(ClusterError) -> TaskID {
        let exact = TaskID(rawValue: text)
        if tasks[exact] != nil { return exact }
        let matches = tasks.keys.filter { $0.rawValue.hasPrefix(text) }.sorted()
        if matches.count == 1 { return matches[0] }
        if matches.isEmpty { throw .taskNotFound(text) }
        throw .ambiguousTaskID(text, matches: matches)
    }

    func resolveNode(_ text: String) throws(ClusterError) -> NodeID {
        let exact = NodeID(rawValue: text)
        if nodes[exact] != nil { return exact }
        let matches = nodes.keys.filter { $0.rawValue.hasPrefix(text) || nodes[$0]?.record.name == text }.sorted()
        if matches.count == 1 { return matches[0] }
        if matches.isEmpty { throw .nodeNotFound(text) }
        throw .ambiguousNodeID(text, matches: matches)
    }

    func task(_ id: TaskID) -> TaskRecord? { tasks[id] }

    /// Tasks in the order they were accepted, filtered, from after `after`, at most `limit`.
    func listTasks(state: TaskState?, node: NodeID?, after: TaskID?, limit: Int) -> (tasks: [TaskDTO], more: Bool) {
        var start = 0
        if let after, let position = order.firstIndex(of: after) { start = position + 1 }
        var result: [TaskDTO] = []
        var index = start
        while index < order.count {
            defer { index += 1 }
            guard let record = tasks[order[index]] else { continue }
            if let state, record.state != state { continue }
            if let node, record.node != node { continue }
            if result.count == limit { return (result, true) }
            result.append(dto(record))
        }
        return (result, false)
    }

    func dto(_ record: TaskRecord, events: [TaskHistoryEntry]? = nil) -> TaskDTO {
        TaskDTO(record, nodeName: record.node.flatMap { nodes[$0]?.record.name }, events: events)
    }

    func listNodes() -> [NodeDTO] {
        nodes.values.sorted { ($0.record.name, $0.record.id) < ($1.record.name, $1.record.id) }.map { entry in
            let reserved = schedulingIndex[entry.record.id].map { schedulingNodes[$0].reserved } ?? .zero
            return NodeDTO(
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
                tasks: entry.tasks.count, joinedAt: entry.record.joinedAt, lastHeartbeat: entry.lastHeartbeatDate)
        }
    }

    /// Counts for /metrics.
    func counts() -> (tasksByState: [TaskState: Int], nodesByState: [NodeDTO.State: Int]) {
        let tasksByState = stateCounts
        var nodesByState: [NodeDTO.State: Int] = [:]
        for entry in nodes.values { nodesByState[entry.state, default: 0] += 1 }
        return (tasksByState, nodesByState)
    }
}
