import OrchCore

/// Membership and liveness: the handshake, heartbeats, goodbyes, lost connections, and the
/// deadlines after which a silent node is down and its tasks are given up on.
extension ManagerMachine {
    struct NodeEntry: Sendable {
        var record: NodeRecord
        var state: NodeDTO.State
        var connection: ConnectionID?
        /// When anything was last heard from it, and when its last heartbeat came (wall time, for people).
        var lastHeard: Moment?
        /// When a heartbeat on its connection was last answered (nil: none on this connection).
        var lastAnswered: Moment?
        var lastHeartbeatDate: Date?
        var metrics: MachineMetrics?
        /// Why its container engine does not answer, as its heartbeats say; nil while it does.
        var engineError: String?
        /// When the tasks of a node that is not connected are given up on.
        var tasksLostAt: Moment?
        /// Tasks whose current attempt is here and not ended; they reserve its resources.
        var tasks: Set<TaskID> = []
        /// Tasks with a disconnect policy, kept past the node's loss until their own deadline.
        var lingering: [TaskID: Moment] = [:]
    }

    enum ConnectionEntry: Sendable {
        /// Connected, no hello yet: closed at the deadline. `peer` is the node its
        /// certificate names, once the shell has said (nil inside: it presented none).
        case handshaking(deadline: Moment, peer: NodeID??)
        case joined(NodeID)
    }

    // MARK: - Connections

    mutating func connected(_ connection: ConnectionID) {
        connections[connection] = .handshaking(deadline: now + configuration.handshakeTimeout, peer: nil)
        wake(at: now + configuration.handshakeTimeout)
    }

    /// The TLS layer's word on who is at the other end: the node its certificate names, or
    /// nil for a connection without one (which may only join, outside the machine).
    mutating func authenticated(_ connection: ConnectionID, as node: NodeID?) {
        guard case .handshaking(let deadline, nil) = connections[connection] else { return }
        connections[connection] = .handshaking(deadline: deadline, peer: .some(node))
    }

    /// May a certificate naming `node` be issued? Not for a node removed from the cluster
    /// (its id is never given again); not to a new joiner while a node with that id is
    /// connected (the live one keeps it); a renewal (asked with the node's own certificate)
    /// may come while it is connected.
    mutating func admit(_ node: NodeID, renewing: Bool, request: RequestID) {
        if removed.contains(node) { return emit(.answer(request, .refused(.nodeRemoved(node.rawValue)))) }
        if TaskID.problem(with: node.rawValue) != nil { return emit(.answer(request, .refused(.nodeNotFound(node.rawValue)))) }
        if !renewing, let entry = nodes[node], entry.connection != nil {
            return emit(.answer(request, .refused(.nodeConnected(entry.record.name))))
        }
        emit(.answer(request, .admitted))
    }

    mutating func received(_ message: WireMessage, on connection: ConnectionID) {
        switch connections[connection] {
        case nil:
            return   // closed already; what was in flight on it does not count
        case .handshaking(_, let peer):
            guard case .hello(let hello) = message else {
                refuseProtocol(connection, "the first message must be hello, not \(message.kind)")
                return
            }
            guard case .some(.some(let certified)) = peer else {
                // No certificate: nothing but a closed connection (a joiner sends join_request,
                // which the shell answers before anything reaches the machine).
                note(.protocolViolation(connection, "a hello without a node certificate"))
                emit(.close(connection))
                dropConnection(connection)
                return
            }
            join(hello, certified: certified, on: connection)
        case .joined(let node):
            // One hash of the id, the entry changed in place: this runs for every frame.
            guard let index = nodes.index(forKey: node), nodes.values[index].connection == connection else { return }
            nodes.values[index].lastHeard = now
            receivedFromNode(message, from: node, on: connection)
        }
    }

    /// Closes a connection that broke the protocol, with an error frame saying why.
    mutating func refuseProtocol(_ connection: ConnectionID, _ text: String) {
        emit(.send(connection, .error(ErrorMessage(code: .unexpectedMessage, message: text))))
        emit(.close(connection))
        note(.protocolViolation(connection, text))
        dropConnection(connection)
    }

    private mutating func receivedFromNode(_ message: WireMessage, from node: NodeID, on connection: ConnectionID) {
        switch message {
        case .heartbeat(let beat): heartbeat(node, beat, on: connection)
        case .taskStatus(let status): statusReported(status, by: node, on: connection)
        case .taskList(let list): reconcile(list, from: node, on: connection)
        case .goodbye(let bye): goodbye(node, bye)
        case .submitTask(let submit): submitPinned(submit, from: node, on: connection)
        case .logChunk(let data): emit(.logData(data))
        case .logEnd(let end): emit(.logEnd(end))
        case .error(let error):
            // The worker closes after an error; its tasks wait for it like any lost connection.
            note(.protocolViolation(connection, "the worker sent error \(error.code): \(error.message)"))
            emit(.close(connection))
            dropConnection(connection)
        default:
            refuseProtocol(connection, "a worker does not send \(message.kind) after the handshake")
        }
    }

    // MARK: - Handshake

    private mutating func join(_ hello: Hello, certified: NodeID, on connection: ConnectionID) {
        func refuse(_ refused: Refused) {
            emit(.send(connection, .refused(refused)))
            emit(.close(connection))
            note(.nodeRefused(name: hello.name, hello.nodeID, reason: refused.reason))
            connections[connection] = nil
        }
        guard let version = ProtocolVersion.negotiate(peerOldest: hello.oldestVersion, peerNewest: hello.newestVersion) else {
            return refuse(Refused(
                code: .noCommonVersion, permanent: true,
                reason: "this manager speaks protocol \(ProtocolVersion.oldest)...\(ProtocolVersion.newest), the worker \(hello.oldestVersion)...\(hello.newestVersion)"))
        }
        guard TaskID.problem(with: hello.nodeID.rawValue) == nil, !hello.name.isEmpty else {
            return refuse(Refused(code: .invalidHello, permanent: true, reason: "the node id or name is not valid"))
        }
        // A node is the one its certificate names, whatever its hello claims.
        guard hello.nodeID == certified else {
            return refuse(Refused(
                code: .invalidHello, permanent: true,
                reason: "the hello names node \(hello.nodeID) but the certificate is node \(certified)'s"))
        }
        guard !removed.contains(certified) else {
            return refuse(Refused(
                code: .nodeRemoved, permanent: true,
                reason: "node \(certified) was removed from the cluster; to join again as a new node, remove node-id and node.crt from the worker's state directory and give it a join token"))
        }
        if let existing = nodes[hello.nodeID], let old = existing.connection {
            // A worker dialing again while its old connection looks open: that one is
            // half-open (its host rebooted, the socket was never closed) unless it was heard
            // from just now, in which case another live process claims the id: try later.
            if let heard = existing.lastHeard, now - heard < configuration.heartbeatInterval * 2 {
                return refuse(Refused(
                    code: .duplicateNode, permanent: false,
                    reason: "a live node with id \(hello.nodeID) (\(existing.record.name)) is connected already"))
            }
            note(.nodeReplacedConnection(name: existing.record.name))
            emit(.close(old))
            dropConnection(old)
        }
        let capacity = NodeCapacity(
            millicores: Int(hello.capacity.millicores), memoryBytes: Int(clamping: hello.capacity.memoryBytes),
            diskBytes: Int(clamping: hello.capacity.diskBytes))
        var entry = nodes[hello.nodeID] ?? NodeEntry(
            record: NodeRecord(id: hello.nodeID, name: hello.name, addresses: hello.addresses, capacity: capacity,
                               labels: hello.labels, joinedAt: date, lastSeenAt: date),
            state: .up)
        entry.record.name = hello.name
        entry.record.addresses = hello.addresses
        entry.record.capacity = capacity
        entry.record.labels = hello.labels
        entry.record.lastSeenAt = date
        entry.state = .up
        entry.connection = connection
        entry.lastHeard = now
        entry.lastAnswered = nil
        entry.lastHeartbeatDate = date
        entry.tasksLostAt = nil
        // Back in time: its tasks are its own again, and reconciled from its task list.
        entry.lingering = [:]
        nodes[hello.nodeID] = entry
        connections[connection] = .joined(hello.nodeID)
        addSchedulingNode(hello.nodeID)
        refreshSchedulingNode(hello.nodeID)
        capacityChanged = true
        journal.append(.saveNode(entry.record))
        note(.nodeJoined(hello.nodeID, name: hello.name, addresses: hello.addresses))
        nodeEvent(hello.nodeID, "joined from \(hello.addresses.joined(separator: ", "))")
        emit(.send(connection, .welcome(Welcome(
            version: version, heartbeatInterval: configuration.heartbeatInterval, serviceTables: UInt32(meshTables.count), epoch: configuration.epoch))))
        sendMeshTables(to: connection)
        wake(at: now + livenessCheckPeriod)
    }

    // MARK: - Liveness

    private mutating func heartbeat(_ node: NodeID, _ beat: Heartbeat, on connection: ConnectionID) {
        // One hash of the id, the entry changed in place: this runs for every heartbeat.
        guard let index = nodes.index(forKey: node) else { return }
        nodes.values[index].lastHeartbeatDate = date
        nodes.values[index].metrics = beat.metrics
        recordMeasured(node, beat.metrics)
        if nodes.values[index].engineError != beat.engineError {
            // Nothing is placed on a node whose engine does not answer; its tasks stay as
            // reported until the worker, its engine back, reports the exits it missed.
            nodes.values[index].engineError = beat.engineError
            note(.nodeEngine(name: nodes.values[index].record.name, error: beat.engineError))
            nodeEvent(node, beat.engineError.map { "its container engine does not answer: \($0)" } ?? "its container engine answers again")
            refreshSchedulingNode(node)
        }
        // The manager's side of liveness: the worker drops a connection it has not heard
        // from for its silence period (at least 4 intervals), so the manager answers a
        // heartbeat whenever it has answered none for 2.5 intervals: every third one, a
        // word at least every 3 intervals. Answering every one cost a write per beat.
        if let answered = nodes.values[index].lastAnswered, now - answered < configuration.heartbeatInterval * 2.5 {
            note(.heartbeat)
            return
        }
        nodes.values[index].lastAnswered = now
        emit(.send(connection, .heartbeat(Heartbeat(sequence: beat.sequence, metrics: .none))))
        note(.heartbeat)
    }

    private mutating func goodbye(_ node: NodeID, _ goodbye: Goodbye) {
        guard var entry = nodes[node] else { return }
        switch goodbye.reason {
        case .restarting:
            entry.state = .restarting
            entry.tasksLostAt = now + configuration.restartWindow
            wake(at: now + configuration.restartWindow)
            note(.nodeRestarting(name: entry.record.name, window: configuration.restartWindow))
            nodeEvent(node, "restarting; its tasks are kept for \(DurationText.format(configuration.restartWindow))", state: "restarting")
        case .draining:
            entry.state = .draining
            entry.tasksLostAt = nil
            note(.nodeDraining(name: entry.record.name))
            nodeEvent(node, "shutting down; its tasks move", state: "draining")
        }
        nodes[node] = entry
        refreshSchedulingNode(node)
        if goodbye.reason == .draining {
            // Moved at once; the node, while still connected, is told to stop the old attempts.
            for id in entry.tasks.sorted() {
                guard let record = tasks[id] else { continue }
                send(.stopTask(StopTask(task: id, attempt: UInt64(record.attempt), epoch: configuration.epoch)), to: node)
            }
            loseTasks(of: node, honouringDisconnect: false)
        }
    }

    mutating func disconnected(_ connection: ConnectionID) {
        dropConnection(connection)
    }

    /// Forgets a connection. A node that said goodbye keeps the state it asked for; any other
    /// is down once it has been silent for the grace period.
    mutating func dropConnection(_ connection: ConnectionID) {
        guard let entry = connections.removeValue(forKey: connection) else { return }
        guard case .joined(let node) = entry, var record = nodes[node], record.connection == connection else { return }
        record.connection = nil
        if record.state == .up {
            record.tasksLostAt = (record.lastHeard ?? now) + configuration.heartbeatGrace
            wake(at: (record.lastHeard ?? now) + configuration.heartbeatGrace)
        }
        nodes[node] = record
        refreshSchedulingNode(node)
        emit(.logsLost(node, reason: "the worker disconnected"))
        note(.nodeDisconnected(name: record.record.name))
        nodeEvent(node, "disconnected")
    }

    /// Deadlines: handshakes not finished, nodes silent past the grace period, the tasks of
    /// nodes gone past their window, lingering tasks past their disconnect deadline.
    mutating func checkLiveness() {
        for (connection, entry) in connections {
            if case .handshaking(let deadline, _) = entry, deadline <= now {
                emit(.send(connection, .error(ErrorMessage(code: .unexpectedMessage, message: "no hello within \(DurationText.format(configuration.handshakeTimeout))"))))
                emit(.close(connection))
                connections[connection] = nil
            }
        }
        for id in nodes.keys.sorted() {
            guard let entry = nodes[id] else { continue }
            if entry.state == .up, let connection = entry.connection, let heard = entry.lastHeard, now - heard > configuration.heartbeatGrace {
                note(.nodeDown(name: entry.record.name, silentFor: now - heard))
                nodeEvent(id, "silent for \(DurationText.format(now - heard)): down", state: "down")
                emit(.close(connection))
                dropConnection(connection)
                nodes[id]?.tasksLostAt = now
            }
            if let lostAt = nodes[id]?.tasksLostAt, lostAt <= now, nodes[id]?.connection == nil {
                nodes[id]?.state = .down
                nodes[id]?.tasksLostAt = nil
                refreshSchedulingNode(id)
                loseTasks(of: id, honouringDisconnect: true)
            }
            if let lingering = nodes[id]?.lingering, !lingering.isEmpty, nodes[id]?.connection == nil {
                let due = lingering.filter { $0.value <= now }.keys.sorted()
                for task in due {
                    nodes[id]?.lingering[task] = nil
                    loseTask(task, on: id)
                }
            }
        }
    }

    /// The node is gone: its tasks are lost, then placed again or given up by their policy.
    /// A task with a disconnect policy waits until its worker has surely stopped it.
    mutating func loseTasks(of node: NodeID, honouringDisconnect: Bool) {
        guard let entry = nodes[node] else { return }
        let affected = entry.tasks.sorted()
        guard !affected.isEmpty else { return }
        var lost = 0
        for id in affected {
            guard let record = tasks[id], record.node == node, record.holdsReservation else { continue }
            if honouringDisconnect, let stopAfter = record.spec.disconnect?.stopAfter {
                let heard = entry.lastHeard ?? now
                let deadline = heard + stopAfter + record.spec.stopGracePeriod + configuration.disconnectMargin
                if deadline > now {
                    nodes[node]?.lingering[id] = deadline
                    wake(at: deadline)
                    continue
                }
            }
            loseTask(id, on: node)
            lost += 1
        }
        if lost > 0 {
            note(.nodeLost(name: entry.record.name, tasks: lost))
            nodeEvent(node, "lost with \(lost) task\(lost == 1 ? "" : "s")")
        }
    }

    private mutating func loseTask(_ id: TaskID, on node: NodeID) {
        guard let record = tasks[id], record.node == node, record.holdsReservation else { return }
        if change(id, .nodeLost) { attemptEnded(id) } else { release(id) }
    }

    /// A task moved off a drained node: placed again at once whatever its restart policy
    /// says (the user asked), a replica by its service. A task that must never run twice (a
    /// disconnect policy) stays where it is until its end is known (the worker reports the
    /// stop, or the node is lost, which waits out its policy), and is placed again then (a
    /// replica by its service, then).
    private mutating func moveTask(_ id: TaskID, off node: NodeID, named name: String) {
        guard let record = tasks[id], record.node == node, record.holdsReservation else { return }
        if record.spec.disconnect != nil {
            movingOff[id] = (record.attempt, name)
            return
        }
        guard record.replica == nil else { return loseTask(id, on: node) }
        guard change(id, .nodeLost) else { return release(id) }
        release(id)
        if change(id, .requeued(reason: "moved off node \(name), drained")) { enqueue(id, after: .zero) }
    }

    mutating func removeNode(_ id: NodeID, request: RequestID) {
        guard let entry = nodes[id] else { return emit(.answer(request, .refused(.nodeNotFound(id.rawValue)))) }
        guard entry.connection == nil, entry.state != .up else { return emit(.answer(request, .refused(.nodeIsUp(entry.record.name)))) }
        if let failure = storeFailure { return emit(.answer(request, .refused(.unavailable(failure)))) }
        for task in entry.tasks.sorted() { loseTask(task, on: id) }
        nodeEvent(id, "removed", state: "removed", durable: true)
        nodes[id] = nil
        // Its certificate is honoured no more, and its id never given again.
        removed.insert(id)
        removeSchedulingNode(id)
        journal.append(.deleteNode(id))
        afterCommit(.answer(request, .nodeRemoved(revision: issued + 1)))
    }

    /// Drains a node (nothing new is placed there; with `move`, its tasks are stopped there
    /// and placed elsewhere at once) or undrains it. Kept across restarts of either side.
    mutating func drainNode(_ id: NodeID, drain: Bool, move: Bool, request: RequestID) {
        guard var entry = nodes[id] else { return emit(.answer(request, .refused(.nodeNotFound(id.rawValue)))) }
        if let failure = storeFailure { return emit(.answer(request, .refused(.unavailable(failure)))) }
        if drain != (entry.record.drainedAt != nil) {
            entry.record.drainedAt = drain ? date : nil
            nodes[id] = entry
            journal.append(.saveNode(entry.record))
            refreshSchedulingNode(id)
            nodeEvent(id, drain ? "drained: nothing new is placed here" : "undrained", durable: true)
        }
        if drain && move {
            for task in entry.tasks.sorted() {
                guard let record = tasks[task], record.desiredState == .run else { continue }
                send(.stopTask(StopTask(task: task, attempt: UInt64(record.attempt), epoch: configuration.epoch)), to: id)
                moveTask(task, off: id, named: entry.record.name)
            }
        }
        afterCommit(.answer(request, .nodeDrained(revision: issued + (journal.isEmpty ? 0 : 1))))
    }
}

extension MachineMetrics {
    /// Nothing measured: the manager's own heartbeats carry no metrics.
    public static let none = MachineMetrics(
        cpuMillicoresUsed: 0, memoryUsedBytes: 0, memoryTotalBytes: 0, diskUsedBytes: 0, diskTotalBytes: 0,
        load1Hundredths: 0, load5Hundredths: 0, load15Hundredths: 0, runningTasks: 0)
}
