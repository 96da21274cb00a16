import Foundation
import NIOCore
import OrchCore
import OrchWire

extension Cluster {
    /// The answer to a worker's hello: a link to talk to it, or a refusal.
    enum JoinAnswer: Sendable {
        case welcome(Welcome, NodeLink)
        case refused(Refused)
    }

    /// Welcomes (or refuses) a worker on `channel`. The welcome is written here, before the
    /// link is handed out, so that nothing the cluster sends on it can overtake it.
    func join(_ hello: Hello, on channel: any Channel, now: Date = Date()) -> JoinAnswer {
        guard let version = ProtocolVersion.negotiate(peerOldest: hello.oldestVersion, peerNewest: hello.newestVersion) else {
            return .refused(Refused(
                code: .noCommonVersion, permanent: true,
                reason: "this manager speaks protocol \(ProtocolVersion.oldest)...\(ProtocolVersion.newest), the worker \(hello.oldestVersion)...\(hello.newestVersion)"))
        }
        guard TaskID.problem(with: hello.nodeID.rawValue) == nil, !hello.name.isEmpty else {
            return .refused(Refused(code: .invalidHello, permanent: true, reason: "the node id or name is not valid"))
        }
        if let existing = nodes[hello.nodeID], existing.link != nil {
            return .refused(Refused(
                code: .duplicateNode, permanent: true,
                reason: "a live node with id \(hello.nodeID) (\(existing.record.name)) is connected already"))
        }
        let link = NodeLink(node: hello.nodeID, channel: channel)
        let capacity = NodeCapacity(
            millicores: Int(hello.capacity.millicores), memoryBytes: Int(clamping: hello.capacity.memoryBytes),
            diskBytes: Int(clamping: hello.capacity.diskBytes))
        var entry = nodes[hello.nodeID] ?? NodeEntry(
            record: NodeRecord(id: hello.nodeID, name: hello.name, addresses: hello.addresses, capacity: capacity,
                               labels: hello.labels, joinedAt: now, lastSeenAt: now),
            state: .up)
        entry.record.name = hello.name
        entry.record.addresses = hello.addresses
        entry.record.capacity = capacity
        entry.record.labels = hello.labels
        entry.record.lastSeenAt = now
        entry.state = .up
        entry.link = link
        entry.lastHeartbeat = clock.now
        entry.lastHeartbeatDate = now
        entry.tasksLostAt = nil
        nodes[hello.nodeID] = entry
        addSchedulingNode(hello.nodeID)
        refreshSchedulingNode(hello.nodeID)
        capacityChanged = true
        persist([.saveNode(entry.record)])
        logger.info("node \(hello.name) (\(hello.nodeID)) joined from \(hello.addresses.joined(separator: ", "))")
        let welcome = Welcome(version: version, heartbeatInterval: configuration.heartbeatInterval)
        link.send(.welcome(welcome))
        return .welcome(welcome, link)
    }

    func heartbeat(_ node: NodeID, _ beat: Heartbeat) {
        // One hash of the id, the entry changed in place: this runs for every heartbeat.
        guard let index = nodes.index(forKey: node), nodes.values[index].link != nil else { return }
        nodes.values[index].lastHeartbeat = clock.now
        nodes.values[index].lastHeartbeatDate = Date()
        nodes.values[index].metrics = beat.metrics
        recordMeasured(node, beat.metrics)
        metrics.heartbeat()
    }

    func goodbye(_ node: NodeID, _ goodbye: Goodbye) {
        guard var entry = nodes[node] else { return }
        switch goodbye.reason {
        case .restarting:
            entry.state = .restarting
            entry.tasksLostAt = clock.now + configuration.restartWindow
            logger.info("node \(entry.record.name) is restarting; its tasks are kept for \(DurationText.format(configuration.restartWindow))")
        case .draining:
            entry.state = .draining
            entry.tasksLostAt = nil
            logger.info("node \(entry.record.name) is draining; its tasks move")
        }
        nodes[node] = entry
        refreshSchedulingNode(node)
        if goodbye.reason == .draining {
            // Moved at once; the node, while still connected, is told to stop the old attempts.
            for id in entry.tasks.sorted() {
                guard let record = tasks[id] else { continue }
                entry.link?.send(.stopTask(StopTask(task: id, attempt: UInt64(record.attempt))))
            }
            loseTasks(of: node)
        }
    }

    /// A connection ended. A node that said goodbye keeps the state it asked for; any other
    /// is down once its heartbeats have been missing for the grace period.
    func disconnected(_ node: NodeID, link: NodeLink) {
        guard var entry = nodes[node], entry.link === link else { return }
        entry.link = nil
        link.close()
        logStreams.finishAll(from: node, reason: "the worker disconnected")
        if entry.state == .up {
            // Silent from now on: the grace period runs from its last heartbeat.
            entry.tasksLostAt = (entry.lastHeartbeat ?? clock.now) + configuration.heartbeatGrace
        }
        nodes[node] = entry
        refreshSchedulingNode(node)
        logger.info("node \(entry.record.name) disconnected")
    }

    /// The timer's work: nodes silent past the grace period go down and their tasks are
    /// lost; tasks whose backoff has passed are placed.
    func tick() {
        let now = clock.now
        let date = Date()
        for (id, entry) in nodes {
            if entry.state == .up, entry.link != nil, let last = entry.lastHeartbeat, now - last > configuration.heartbeatGrace {
                logger.warning("node \(entry.record.name) missed its heartbeats for \(DurationText.format(configuration.heartbeatGrace)): down")
                nodes[id]?.state = .down
                nodes[id]?.link?.close()
                nodes[id]?.link = nil
                nodes[id]?.tasksLostAt = now
                refreshSchedulingNode(id)
            }
            if let lostAt = nodes[id]?.tasksLostAt, lostAt <= now, nodes[id]?.link == nil {
                nodes[id]?.state = .down
                refreshSchedulingNode(id)
                nodes[id]?.tasksLostAt = nil
                loseTasks(of: id, now: date)
            }
        }
        releaseDueBackoffs()
        if !pending.isEmpty || capacityChanged {
            placePending(now: date)
        }
    }

    /// The node is gone: its tasks are lost, then placed again or given up by their policy.
    func loseTasks(of node: NodeID, now: Date = Date()) {
        guard let entry = nodes[node] else { return }
        let affected = entry.tasks.sorted()
        guard !affected.isEmpty else { return }
        logger.warning("node \(entry.record.name) is lost with \(affected.count) task\(affected.count == 1 ? "" : "s")")
        for id in affected {
            guard let record = tasks[id], record.node == node, record.holdsReservation else { continue }
            if change(id, .nodeLost, now: now) { attemptEnded(id, now: now) } else { release(id) }
        }
        placePending(now: now)
    }

    /// Forgets a node that is down (DELETE /nodes/{nodeID}).
    func removeNode(_ id: NodeID) throws(ClusterError) {
        guard let entry = nodes[id] else { throw .nodeNotFound(id.rawValue) }
        guard entry.link == nil, entry.state != .up else { throw .nodeIsUp(entry.record.name) }
        loseTasks(of: id)
        nodes[id] = nil
        removeSchedulingNode(id)
        persist([.deleteNode(id)])
    }
}
