import OrchControl
import OrchCore

/// One TCP connection between a worker process and a manager process.
///
/// Each direction is a pipe: frames (and the closing FIN) leave in order and arrive in order,
/// each after a random delay (0.1–20 ms) but never before the one sent ahead of it. A reset
/// loses what is in flight and each side learns of it after a delay. While the worker's node
/// is partitioned nothing arrives: a `hold` partition keeps the frames back until it heals
/// (TCP retransmits), a `drop` partition loses them and leaves the connection broken (nothing
/// more passes; when the partition heals, both sides get a reset). Nobody is told of a
/// partition while it lasts. A host that vanishes (`breakSilently`) leaves the other side's
/// end open and dead: nothing passes and nothing tells it.
struct SimConnection {
    enum Item { case frame(WireMessage), fin }

    struct Pipe {
        var items: [(ready: Moment, item: Item)] = []
        var head = 0
        var armed = false
        var lastReady: Moment = .zero

        var isEmpty: Bool { head >= items.count }
        var first: (ready: Moment, item: Item)? { isEmpty ? nil : items[head] }

        mutating func removeFirst() {
            head += 1
            if head > 64, head * 2 > items.count {
                items.removeFirst(head)
                head = 0
            }
        }

        mutating func clear() {
            items = []
            head = 0
        }
    }

    let id: ConnectionID
    let node: Int
    let workerIncarnation: Int
    let managerIncarnation: Int
    var random: SimRandom
    var welcomed = false
    var welcomedAt: Moment?
    /// Each side's view: open until it closed or learned of the close.
    var managerOpen = true
    var workerOpen = true
    /// Reset, or broken by a partition that dropped frames: nothing more passes.
    var broken = false
    var toManager = Pipe()
    var toWorker = Pipe()

    subscript(direction: Direction) -> Pipe {
        get { direction == .toManager ? toManager : toWorker }
        set { if direction == .toManager { toManager = newValue } else { toWorker = newValue } }
    }
}

extension Simulation {
    /// Most frames take well under a few milliseconds; some up to 20.
    func networkDelay(_ random: inout SimRandom) -> Duration {
        random.chance(0.8) ? random.duration(.microseconds(100)...(.milliseconds(3))) : random.duration(.milliseconds(3)...(.milliseconds(20)))
    }

    // MARK: - Sending

    func enqueue(_ item: SimConnection.Item, on id: ConnectionID, _ direction: Direction) {
        guard var connection = connections[id], !connection.broken else { return }
        let delay = networkDelay(&connection.random)
        var pipe = connection[direction]
        let ready = max(now + delay, pipe.lastReady)
        pipe.lastReady = ready
        pipe.items.append((ready, item))
        if !pipe.armed {
            pipe.armed = true
            schedule(.pump(id, direction), at: pipe.first!.ready)
        }
        connection[direction] = pipe
        connections[id] = connection
    }

    func managerSends(_ message: WireMessage, on id: ConnectionID) {
        guard let connection = connections[id], connection.managerOpen, connection.managerIncarnation == managerIncarnation else { return }
        checkActsWithinLease(message)
        if sabotage.dropAcks, case .ack = message { return }
        if sabotage.dropStops, case .stopTask = message { return }
        if sabotage.dropServiceTables, case .serviceTable(let table) = message, table.index % 2 == 1 { return }
        enqueue(.frame(message), on: id, .toWorker)
    }

    /// The manager closes a connection: its side forgets it (its shell reports the close as
    /// it does any other), the worker learns after what was sent before.
    func managerCloses(_ id: ConnectionID) {
        guard var connection = connections[id], connection.managerOpen, connection.managerIncarnation == managerIncarnation else { return }
        enqueue(.fin, on: id, .toWorker)
        connection = connections[id]!
        connection.managerOpen = false
        connections[id] = connection
        schedule(.managerInput(.disconnected(id), incarnation: managerIncarnation), at: now)
        forgetIfClosed(id)
    }

    /// What a worker writes goes on its welcomed connection; without one it is dropped.
    func workerSends(_ index: Int, _ message: WireMessage) {
        guard let id = nodes[index].process?.connection, let connection = connections[id], connection.welcomed, connection.workerOpen else { return }
        enqueue(.frame(message), on: id, .toManager)
    }

    /// The worker closes its connection (on the machine's `dropConnection`, a refusal, a
    /// handshake that took too long): the manager learns after what was sent before.
    func workerCloses(_ index: Int, _ id: ConnectionID) {
        guard var connection = connections[id], connection.workerOpen else { return }
        enqueue(.fin, on: id, .toManager)
        connection = connections[id]!
        connection.workerOpen = false
        connections[id] = connection
        if nodes[index].process?.connection == id { nodes[index].process?.connection = nil }
        forgetIfClosed(id)
    }

    func workerDropsConnection(_ index: Int) {
        guard let process = nodes[index].process, let id = process.connection else { return }
        let welcomed = connections[id]?.welcomed ?? false
        workerCloses(index, id)
        if welcomed { schedule(.workerInput(node: index, incarnation: process.incarnation, .disconnected), at: now) }
        scheduleDial(index)
    }

    func forgetIfClosed(_ id: ConnectionID) {
        guard let connection = connections[id], !connection.managerOpen, !connection.workerOpen else { return }
        connections[id] = nil
    }

    // MARK: - Delivery

    func pump(_ id: ConnectionID, _ direction: Direction) -> TraceRecord? {
        guard var connection = connections[id] else { return nil }
        var pipe = connection[direction]
        pipe.armed = false
        guard let head = pipe.first else {
            connection[direction] = pipe
            connections[id] = connection
            return nil
        }
        if connection.broken {
            pipe.clear()
            connection[direction] = pipe
            connections[id] = connection
            return nil
        }
        if let partition = nodes[connection.node].partition {
            switch partition.mode {
            case .hold:
                // Kept back; the heal arms the pump again.
                connection[direction] = pipe
                connections[id] = connection
                return nil
            case .drop:
                pipe.clear()
                connection[direction] = pipe
                connection.broken = true
                connections[id] = connection
                return nil
            }
        }
        if head.ready > now {
            pipe.armed = true
            schedule(.pump(id, direction), at: head.ready)
            connection[direction] = pipe
            connections[id] = connection
            return nil
        }
        pipe.removeFirst()
        if let next = pipe.first {
            pipe.armed = true
            schedule(.pump(id, direction), at: next.ready)
        }
        connection[direction] = pipe
        connections[id] = connection
        switch direction {
        case .toManager: return deliverToManager(head.item, on: id)
        case .toWorker: return deliverToWorker(head.item, on: id)
        }
    }

    func deliverToManager(_ item: SimConnection.Item, on id: ConnectionID) -> TraceRecord? {
        guard var connection = connections[id], connection.managerOpen, connection.managerIncarnation == managerIncarnation, manager != nil else { return nil }
        switch item {
        case .frame(let message):
            return feedManager(.received(id, message))
        case .fin:
            connection.managerOpen = false
            connections[id] = connection
            forgetIfClosed(id)
            return feedManager(.disconnected(id))
        }
    }

    func deliverToWorker(_ item: SimConnection.Item, on id: ConnectionID) -> TraceRecord? {
        guard var connection = connections[id], connection.workerOpen else { return nil }
        let index = connection.node
        guard let process = nodes[index].process, process.incarnation == connection.workerIncarnation, process.connection == id else { return nil }
        switch item {
        case .fin:
            connection.workerOpen = false
            connections[id] = connection
            nodes[index].process?.connection = nil
            forgetIfClosed(id)
            scheduleDial(index)
            if connection.welcomed { return feedWorker(index, .disconnected) }
            return simRecord("\(nodeName(index)) \(id) closed by the manager before a welcome")
        case .frame(let message):
            if connection.welcomed { return feedWorker(index, .received(message)) }
            switch message {
            case .welcome(let welcome):
                connection.welcomed = true
                connection.welcomedAt = now
                connections[id] = connection
                nodes[index].process?.failedDials = 0
                counters.connections += 1
                return feedWorker(index, .connected(welcome))
            case .refused(let refused):
                workerCloses(index, id)
                if refused.permanent {
                    // Every simulated worker is valid: a refusal for good (the real worker
                    // exits 3, for a person to look at) is a node lost to a mistake.
                    violate(.validWorkersAdmitted, "\(nodeName(index)) was refused for good on \(id): \(refused.reason)")
                    // The worker ends; its supervisor (systemd) starts it again later.
                    workerProcessEnds(index)
                    schedule(.workerRestart(node: index), at: now + nodes[index].random.duration(.seconds(2)...(.seconds(6))))
                    nodes[index].restartPending = true
                    return simRecord("\(nodeName(index)) refused for good (\(refused.reason)): the process ends")
                }
                scheduleDial(index)
                return simRecord("\(nodeName(index)) refused (\(refused.reason)): dials again")
            default:
                workerCloses(index, id)
                scheduleDial(index)
                return simRecord("\(nodeName(index)) got \(message.kind) before a welcome: closes")
            }
        }
    }

    // MARK: - Resets

    /// Both sides lose the connection; what is in flight is lost.
    func reset(_ id: ConnectionID) {
        guard var connection = connections[id] else { return }
        connection.broken = true
        connection.toManager.clear()
        connection.toWorker.clear()
        let managerDelay = networkDelay(&connection.random), workerDelay = networkDelay(&connection.random)
        connections[id] = connection
        if connection.managerOpen { schedule(.resetNotice(id, .manager), at: now + managerDelay) }
        if connection.workerOpen { schedule(.resetNotice(id, .worker), at: now + workerDelay) }
    }

    /// The connection dies with one side gone and the other never told: nothing more passes,
    /// and the side still open learns only from its own deadlines (or a later heal's reset).
    func breakSilently(_ id: ConnectionID) {
        guard var connection = connections[id] else { return }
        connection.broken = true
        connection.toManager.clear()
        connection.toWorker.clear()
        connections[id] = connection
    }

    func resetNotice(_ id: ConnectionID, _ side: Side) -> TraceRecord? {
        guard var connection = connections[id] else { return nil }
        if let partition = nodes[connection.node].partition {
            // A reset cannot cross a partition either.
            schedule(.resetNotice(id, side), at: partition.until + networkDelay(&connection.random))
            connections[id] = connection
            return nil
        }
        switch side {
        case .manager:
            guard connection.managerOpen else { return nil }
            connection.managerOpen = false
            connections[id] = connection
            forgetIfClosed(id)
            guard connection.managerIncarnation == managerIncarnation else { return nil }
            return feedManager(.disconnected(id))
        case .worker:
            guard connection.workerOpen else { return nil }
            connection.workerOpen = false
            connections[id] = connection
            forgetIfClosed(id)
            let index = connection.node
            guard let process = nodes[index].process, process.incarnation == connection.workerIncarnation, process.connection == id else { return nil }
            nodes[index].process?.connection = nil
            scheduleDial(index)
            if connection.welcomed { return feedWorker(index, .disconnected) }
            return simRecord("\(nodeName(index)) \(id) reset before a welcome")
        }
    }

    // MARK: - Dialing

    /// Dials again after the n-th backoff: a random wait in 0..min(10 s, 100 ms × 2^n).
    func scheduleDial(_ index: Int) {
        guard let process = nodes[index].process, !process.dialScheduled, process.connection == nil else { return }
        let exponent = min(process.failedDials, 10)
        let cap = min(Duration.seconds(10), .milliseconds(100) * (1 << exponent))
        let delay = nodes[index].random.duration(.zero...cap)
        nodes[index].process?.failedDials += 1
        nodes[index].process?.dialScheduled = true
        schedule(.dial(node: index, incarnation: process.incarnation), at: now + delay)
    }

    func dial(_ index: Int, incarnation: Int) -> TraceRecord? {
        guard let process = nodes[index].process, process.incarnation == incarnation else { return nil }
        nodes[index].process?.dialScheduled = false
        guard process.connection == nil else { return nil }
        if nodes[index].partition != nil {
            nodes[index].process?.dialScheduled = true
            schedule(.dialFailed(node: index, incarnation: incarnation, reason: "connect timed out"), at: now + nodes[index].random.duration(.seconds(1)...(.seconds(3))))
            return simRecord("\(nodeName(index)) dials (partitioned: no answer)")
        }
        guard manager != nil else {
            scheduleDial(index)
            return simRecord("\(nodeName(index)) dials: connection refused (no manager)")
        }
        let id = ConnectionID(rawValue: nextConnection)
        nextConnection += 1
        var connection = SimConnection(
            id: id, node: index, workerIncarnation: incarnation, managerIncarnation: managerIncarnation, random: nodes[index].random.split())
        let delay = networkDelay(&connection.random)
        connections[id] = connection
        nodes[index].process?.connection = id
        schedule(.established(id), at: now + delay)
        return simRecord("\(nodeName(index)) dials: \(id)")
    }

    func dialFailed(_ index: Int, incarnation: Int, reason: String) -> TraceRecord? {
        guard let process = nodes[index].process, process.incarnation == incarnation else { return nil }
        nodes[index].process?.dialScheduled = false
        scheduleDial(index)
        return simRecord("\(nodeName(index)) dial failed: \(reason)")
    }

    /// The connection is up: the manager accepts it, the worker says hello.
    func established(_ id: ConnectionID) -> TraceRecord? {
        guard let connection = connections[id], connection.workerOpen else { return nil }
        let index = connection.node
        if connection.broken {
            // The far host vanished while the connection was being made: no answer comes,
            // and the dial times out (without this the worker waited on it for ever).
            connections[id] = nil
            guard let process = nodes[index].process, process.connection == id else { return nil }
            nodes[index].process?.connection = nil
            nodes[index].process?.dialScheduled = true
            schedule(
                .dialFailed(node: index, incarnation: process.incarnation, reason: "connect timed out"),
                at: now + nodes[index].random.duration(.seconds(1)...(.seconds(3))))
            return simRecord("\(nodeName(index)) \(id): the far host is gone before the handshake")
        }
        guard manager != nil, connection.managerIncarnation == managerIncarnation, nodes[index].partition == nil else {
            // The manager went away, or a partition began, before the handshake: it fails.
            connections[id] = nil
            if nodes[index].process?.connection == id { nodes[index].process?.connection = nil }
            scheduleDial(index)
            return simRecord("\(nodeName(index)) \(id) could not be established")
        }
        let record = feedManager(.connected(id))
        // The certificate's node, as the TLS layer tells it: here every worker presents its own.
        _ = feedManager(.authenticated(id, nodes[index].id))
        var capacity = Capacity(millicores: Self.workerMillicores, memoryBytes: Self.workerMemory, diskBytes: 10 << 30)
        if sabotage.shrinkCapacityOnRestart, nodes[index].incarnation > 1 {
            capacity = Capacity(millicores: capacity.millicores / 10, memoryBytes: capacity.memoryBytes / 10, diskBytes: capacity.diskBytes)
        }
        let future = ProtocolVersion.newest + 1
        let hello = Hello(
            oldestVersion: sabotage.helloFromTheFuture ? future : ProtocolVersion.oldest,
            newestVersion: sabotage.helloFromTheFuture ? future : ProtocolVersion.newest,
            nodeID: nodes[index].id, name: nodes[index].name, addresses: ["10.0.0.\(index + 1):5557"], capacity: capacity,
            labels: ["zone": "z\(index % 2)"])
        enqueue(.frame(.hello(hello)), on: id, .toManager)
        schedule(.handshakeDeadline(id), at: now + .seconds(10))
        return record
    }

    /// No welcome within 10 s: the worker gives up on this connection and dials again.
    func handshakeDeadline(_ id: ConnectionID) -> TraceRecord? {
        guard let connection = connections[id], connection.workerOpen, !connection.welcomed else { return nil }
        let index = connection.node
        guard nodes[index].process?.connection == id else { return nil }
        workerCloses(index, id)
        scheduleDial(index)
        return simRecord("\(nodeName(index)) \(id): no welcome within 10s")
    }

    /// Whether the worker of `index` is in contact with the running manager (welcomed on a
    /// connection open at both ends, not partitioned), and since when.
    func contactSince(_ index: Int) -> Moment? {
        guard manager != nil, nodes[index].partition == nil, let id = nodes[index].process?.connection,
              let connection = connections[id], connection.welcomed, connection.managerOpen, connection.workerOpen, !connection.broken,
              connection.managerIncarnation == managerIncarnation, let welcomedAt = connection.welcomedAt else { return nil }
        return max(welcomedAt, nodes[index].healedAt)
    }

    // MARK: - Partitions

    func partition(_ index: Int, mode: Partition.Mode, for duration: Duration) {
        guard nodes[index].partition == nil else { return }
        let id = nextPartition
        nextPartition += 1
        nodes[index].partition = Partition(id: id, mode: mode, until: now + duration)
        counters.partitions += 1
        schedule(.heal(node: index, partition: id), at: now + duration)
    }

    func heal(_ index: Int, partition id: Int) -> TraceRecord? {
        guard let partition = nodes[index].partition, partition.id == id else { return nil }
        nodes[index].partition = nil
        nodes[index].healedAt = now
        for connectionID in connections.keys.sorted() {
            guard var connection = connections[connectionID], connection.node == index else { continue }
            if connection.broken {
                // The stream lost frames: the first packet after the heal draws a reset.
                reset(connectionID)
                continue
            }
            for direction in [Direction.toManager, .toWorker] where !connection[direction].isEmpty && !connection[direction].armed {
                connection[direction].armed = true
                schedule(.pump(connectionID, direction), at: now + networkDelay(&connection.random))
            }
            connections[connectionID] = connection
        }
        return simRecord("\(nodeName(index)) partition (\(partition.mode.rawValue)) heals")
    }
}
