import OrchControl
import OrchCore

/// What the simulated clients asked and were answered.
struct ClientBook {
    enum Kind {
        case new
        /// The same id again, with the same spec or another one.
        case again(sameSpec: Bool)
    }

    struct Request {
        var spec: TaskSpec?
        var task: TaskID?
        var kind: Kind
        var at: Moment
    }

    /// Requests not answered yet (a manager crash loses them: the client sees its connection break).
    var pending: [RequestID: Request] = [:]
    var nextRequest: UInt64 = 1
    var nextTask = 1
    /// Tasks answered 2xx (`submitted`), with the spec they were accepted with.
    var acknowledged: [TaskID: TaskSpec] = [:]
    /// Tasks whose stop was answered, when, and the task's attempt then.
    var stopped: [TaskID: (at: Moment, attempt: Int)] = [:]
    /// Every explicit id submitted and the spec first sent with it.
    var explicit: [(id: TaskID, spec: TaskSpec)] = []
    /// Ids learned from answers (including generated ones), in order.
    var known: [TaskID] = []
}

extension Simulation {
    // MARK: - Clients

    /// A client request: mostly submissions (new tasks, with or without an id, and the same
    /// id again), sometimes a stop.
    func client() -> TraceRecord? {
        guard phase == .faults else { return nil }
        let burst = now < Moment.zero + .seconds(2)
        schedule(.client, at: now + (burst ? clientRandom.duration(.milliseconds(50)...(.milliseconds(400))) : clientRandom.duration(.milliseconds(300)...(.seconds(4)))))
        guard manager != nil else { return simRecord("client: the manager is down (connection refused)") }
        guard !leaderPaused else { return simRecord("client: the manager does not answer (paused); the client gives up") }
        let request = RequestID(rawValue: clients.nextRequest)
        clients.nextRequest += 1
        let choice = burst ? 0 : clientRandom.weighted([clients.known.count < 30 ? 45 : 0, clients.known.count < 30 ? 15 : 0, 15, 25])
        switch choice {
        case 0, 1:
            var id: TaskID?
            if choice == 0 {
                id = TaskID(rawValue: "t\(clients.nextTask)")
                clients.nextTask += 1
            }
            let spec = Workload.spec(id: id, using: &clientRandom)
            if let id { clients.explicit.append((id, spec)) }
            clients.pending[request] = .init(spec: spec, task: id, kind: .new, at: now)
            counters.submissions += 1
            return feedManager(.submit(request, spec))
        case 2:
            guard !clients.explicit.isEmpty else { return simRecord("client: nothing to submit again") }
            let (id, first) = clientRandom.pick(clients.explicit)
            let same = clientRandom.chance(0.6)
            let spec = same ? (clients.acknowledged[id] ?? first) : Workload.altered(clients.acknowledged[id] ?? first)
            clients.pending[request] = .init(spec: spec, task: id, kind: .again(sameSpec: same), at: now)
            counters.submissions += 1
            return feedManager(.submit(request, spec))
        default:
            let candidates = clients.known + clients.explicit.map(\.id)
            let id = candidates.isEmpty || clientRandom.chance(0.05) ? TaskID(rawValue: "missing-\(request.rawValue)") : clientRandom.pick(candidates)
            clients.pending[request] = .init(spec: nil, task: id, kind: .new, at: now)
            counters.stops += 1
            return feedManager(.stop(request, id))
        }
    }

    /// The manager answers a request; the answers are checked against what was acknowledged.
    func answered(_ id: RequestID, _ answer: ManagerMachine.Answer) {
        if let request = serviceClient.pending.removeValue(forKey: id) { return serviceAnswered(request, answer) }
        if let request = operators.pending.removeValue(forKey: id) { return operatorAnswered(request, answer) }
        guard let request = clients.pending.removeValue(forKey: id) else { return }
        switch answer {
        case .submitted(let record, _, _):
            guard let spec = request.spec else { return }
            var expected = spec
            expected.id = record.id
            if record.spec != expected {
                violate(.submissionAnswersConsistent, "\(id) for \(record.id.short) was answered submitted with another spec than it sent")
            }
            if let earlier = clients.acknowledged[record.id], earlier != record.spec {
                violate(.submissionAnswersConsistent, "\(id): \(record.id.short) was acknowledged with one spec, then accepted with another (a conflict missed)")
            }
            clients.acknowledged[record.id] = record.spec
            counters.acknowledged += 1
            if !clients.known.contains(record.id) { clients.known.append(record.id) }
        case .stopped(let record, _):
            if record.desiredState != .stop {
                violate(.stoppedStaysStopped, "\(id): the stop of \(record.id.short) was answered with desired state \(record.desiredState.rawValue)")
            }
            if clients.stopped[record.id] == nil { clients.stopped[record.id] = (now, record.attempt) }
        case .refused(let error):
            if case .taskConflict(let task) = error, let spec = request.spec, var acknowledged = clients.acknowledged[task] {
                acknowledged.id = task
                var sent = spec
                sent.id = task
                if sent == acknowledged {
                    violate(.submissionAnswersConsistent, "\(id): the same spec as the acknowledged \(task.short) was refused as a conflict")
                }
            }
        case .nodeRemoved, .admitted, .service, .purged, .nodeDrained:
            break
        }
    }

    // MARK: - The store

    func persist(_ batch: StoreBatch) {
        if batch.sequence != store.lastSequence + 1 {
            violate(.storeBatchesInOrder, "batch \(batch.sequence) handed over after \(store.lastSequence)")
        }
        store.lastSequence = batch.sequence
        store.queued.append(batch)
        scheduleCommit(after: storeRandom.chance(0.95) ? storeRandom.duration(.microseconds(200)...(.milliseconds(5)))
                       : storeRandom.duration(.milliseconds(20)...(.milliseconds(200))))
    }

    func scheduleCommit(after delay: Duration) {
        guard !store.commitScheduled else { return }
        store.commitScheduled = true
        store.commitToken += 1
        schedule(.commit(incarnation: managerIncarnation, token: store.commitToken), at: now + delay)
    }

    /// Commits every batch queued, together; or fails (an outage, or now and then), and the
    /// shell tries again after a backoff with all that is queued by then.
    func commit(incarnation: Int, token: Int) -> TraceRecord? {
        guard manager != nil, incarnation == managerIncarnation, token == store.commitToken, store.commitScheduled else { return nil }
        store.commitScheduled = false
        guard let last = store.queued.last else { return nil }
        if let epoch = manager?.epoch, epoch < store.epoch, !sabotage.storeIgnoresFence {
            // The fence: the lease's epoch has moved on, nothing of this is written (the
            // shell retries until the machine is stopped: it does not know yet).
            store.failures += 1
            store.fencedCommits += 1
            counters.fencedCommits += 1
            let backoff = min(Duration.milliseconds(50) * (1 << min(store.failures, 6)), .seconds(2))
            scheduleCommit(after: backoff.scaled(by: 0.5 + storeRandom.unit()))
            return feedManager(.commitFailed(through: last.sequence, reason: "simulated: epoch \(epoch) no longer holds the lease (\(store.epoch) does)"))
        }
        if let epoch = manager?.epoch, epoch < store.epoch {
            violate(.noStaleCommit, "batches \(store.queued.first!.sequence)...\(last.sequence) of epoch \(epoch) committed while epoch \(store.epoch) holds the lease")
        }
        let outage = (store.failingUntil.map { now < $0 } ?? false) || (manager?.slot.map(isCutOff) ?? false)
        if outage || (phase == .faults && faults.storeFailures && storeRandom.chance(0.02)) {
            store.failures += 1
            store.failedCommits += 1
            counters.storeFailures += 1
            let backoff = min(Duration.milliseconds(50) * (1 << min(store.failures, 6)), .seconds(2))
            scheduleCommit(after: backoff.scaled(by: 0.5 + storeRandom.unit()))
            return feedManager(.commitFailed(through: last.sequence, reason: outage ? "simulated: disk full" : "simulated: I/O error"))
        }
        store.failures = 0
        store.commits += 1
        var batches = store.queued
        store.queued = []
        if sabotage.storeForgetsTasks {
            batches = batches.map { StoreBatch(sequence: $0.sequence, changes: $0.changes.filter { if case .insertTask = $0 { false } else { true } }) }
        }
        if sabotage.duplicateReplicas { batches = batches.map(Self.duplicatingReplicas) }
        if sabotage.storeForgetsDrains {
            batches = batches.map { batch in
                StoreBatch(sequence: batch.sequence, changes: batch.changes.map { change in
                    guard case .saveNode(var node) = change else { return change }
                    node.drainedAt = nil
                    return .saveNode(node)
                })
            }
        }
        store.apply(batches)
        return feedManager(.committed(through: last.sequence))
    }

    /// The batch with a copy of every replica it inserts, under another id (``Sabotage/duplicateReplicas``).
    static func duplicatingReplicas(_ batch: StoreBatch) -> StoreBatch {
        StoreBatch(sequence: batch.sequence, changes: batch.changes.flatMap { change -> [StoreChange] in
            guard case .insertTask(let record) = change, record.replica != nil else { return [change] }
            var copy = record
            copy.id = TaskID(rawValue: record.id.rawValue + "-copy")
            copy.spec.id = copy.id
            return [change, .insertTask(copy)]
        })
    }

    // MARK: - Crashes and restarts

    /// The manager process dies: what it had not committed is lost, its connections reset,
    /// requests in flight are never answered.
    ///
    /// `silently`: its host is gone (power, kernel panic, a cable): no reset reaches the
    /// workers, whose connections stay open on their side, dead, until they notice the
    /// silence themselves.
    func crashManager(silently: Bool = false) {
        guard manager != nil else { return }
        if let slot = manager?.slot { leaseSlotCrashed(slot) }
        manager = nil
        counters.managerCrashes += 1
        if silently { counters.halfOpens += 1 }
        store.managerCrashed()
        clients.pending = [:]
        serviceClient.pending = [:]
        operatorRequestsLost()
        for id in connections.keys.sorted() {
            guard var connection = connections[id], connection.managerIncarnation == managerIncarnation else { continue }
            connection.managerOpen = false
            connections[id] = connection
            if silently { breakSilently(id) } else { reset(id) }
            forgetIfClosed(id)
        }
        managerRestartPending = true
        let down = chaosRandom.chance(0.8) ? chaosRandom.duration(.milliseconds(200)...(.seconds(5))) : chaosRandom.duration(.seconds(5)...(.seconds(20)))
        schedule(.managerRestart, at: now + down)
    }

    func restartManager() -> TraceRecord? {
        if leases != nil {
            managerRestartPending = false
            return restartLeaseSlots()
        }
        guard manager == nil else { return nil }
        managerRestartPending = false
        startManager(fresh: false)
        return simRecord("manager restarts from the store at revision \(store.revision) (\(store.tasks.count) tasks, \(store.nodes.count) nodes)")
    }

    /// The worker process ends (crash, stop, permanent refusal): its containers stay on the
    /// engine, its connection resets, the starts it asked for settle, its probes end.
    ///
    /// `silently`: its host went away at once (a reboot, the power): no reset reaches the
    /// manager, whose side of the connection stays open, dead, until it closes it itself.
    func workerProcessEnds(_ index: Int, silently: Bool = false) {
        guard nodes[index].process != nil else { return }
        if let id = nodes[index].process?.connection, var connection = connections[id] {
            if connection.workerOpen {
                connection.workerOpen = false
                connections[id] = connection
                if silently { breakSilently(id) } else { reset(id) }
                forgetIfClosed(id)
            }
        }
        nodes[index].lastContact = nodes[index].process?.machine.lastHeardFromManager
        nodes[index].process = nil
        nodes[index].downSince = now
        settleStarts(of: index)
        nodes[index].watches = [:]
    }

    func crashWorker(_ index: Int, downFor: Duration, silently: Bool = false) {
        guard nodes[index].process != nil else { return }
        counters.workerCrashes += 1
        if silently { counters.halfOpens += 1 }
        workerProcessEnds(index, silently: silently)
        nodes[index].restartPending = true
        schedule(.workerRestart(node: index), at: now + downFor)
    }

    /// A graceful stop: goodbye (restarting), the connection closed, the process gone; its
    /// containers keep running, and it comes back (in the restart window, or not).
    func stopWorker(_ index: Int, downFor: Duration) {
        guard let process = nodes[index].process else { return }
        counters.workerStops += 1
        if let id = process.connection, connections[id]?.welcomed == true {
            workerSends(index, .goodbye(Goodbye(reason: .restarting, message: "\(nodes[index].name) is stopping")))
            workerCloses(index, id)
        } else if let id = process.connection {
            workerCloses(index, id)
        }
        workerProcessEnds(index)
        nodes[index].restartPending = true
        schedule(.workerRestart(node: index), at: now + downFor)
    }

    /// The runtime's event stream breaks for a while: exits meanwhile are not seen until the
    /// worker lists the node's containers again. The worker counts its engine as not
    /// answering meanwhile (its heartbeats say so, and the manager places nothing there), as
    /// the real one does when its stream cannot be had again.
    func eventsRestored(_ index: Int, generation: Int) -> TraceRecord? {
        guard nodes[index].eventsGeneration == generation, nodes[index].eventsLost != nil else { return nil }
        nodes[index].eventsLost = nil
        guard nodes[index].process != nil else { return simRecord("\(nodeName(index)) event stream back (no process)") }
        let listed = feedWorker(index, .found(foundContainers(index)))
        _ = feedWorker(index, .engine(error: nil))
        return listed
    }

    // MARK: - Chaos

    /// One random fault, and the next one planned.
    func chaos() -> TraceRecord? {
        guard phase == .faults else { return nil }
        schedule(.chaos, at: now + chaosRandom.duration(.milliseconds(200)...(.seconds(3))))
        let index = chaosRandom.int(0...(workerCount - 1))
        let name = nodeName(index)
        let weights = [
            faults.connectionResets ? 20 : 0, faults.partitions ? 15 : 0, faults.workerCrashes ? 8 : 0, faults.workerStops ? 5 : 0,
            faults.managerCrashes ? 4 : 0, faults.storeFailures ? 5 : 0, faults.eventStreamLosses ? 4 : 0,
            faults.halfOpens ? 5 : 0, 12, faults.leaderChanges ? 6 : 0,
        ]
        switch chaosRandom.weighted(weights) {
        case 0:
            let open = connections.keys.sorted().filter { connections[$0].map { !$0.broken && ($0.managerOpen || $0.workerOpen) } ?? false }
            guard !open.isEmpty else { return nil }
            let id = chaosRandom.pick(open)
            reset(id)
            counters.resets += 1
            return simRecord("fault: \(id) (\(nodeName(connections[id]!.node))) resets")
        case 1:
            guard nodes[index].partition == nil else { return nil }
            let mode: Partition.Mode = chaosRandom.chance(0.5) ? .hold : .drop
            let duration: Duration
            switch chaosRandom.weighted([40, 30, 30]) {
            case 0: duration = chaosRandom.duration(.milliseconds(200)...(.seconds(3)))
            case 1: duration = chaosRandom.duration(.seconds(3)...(.seconds(8)))
            default: duration = chaosRandom.duration(.seconds(8)...(.seconds(25)))
            }
            partition(index, mode: mode, for: duration)
            return simRecord("fault: \(name) partitioned (\(mode.rawValue)) for \(DurationText.format(duration))")
        case 2:
            guard nodes[index].process != nil else { return nil }
            let down = chaosRandom.chance(0.8) ? chaosRandom.duration(.milliseconds(200)...(.seconds(8))) : chaosRandom.duration(.seconds(8)...(.seconds(40)))
            crashWorker(index, downFor: min(down, faults.maximumWorkerDowntime))
            return simRecord("fault: \(name) process crashes (back in \(DurationText.format(min(down, faults.maximumWorkerDowntime))))")
        case 3:
            guard nodes[index].process != nil else { return nil }
            let down = chaosRandom.chance(0.7) ? chaosRandom.duration(.milliseconds(500)...(.seconds(10))) : chaosRandom.duration(.seconds(30)...(.seconds(45)))
            stopWorker(index, downFor: min(down, faults.maximumWorkerDowntime))
            return simRecord("fault: \(name) stops gracefully (back in \(DurationText.format(min(down, faults.maximumWorkerDowntime))))")
        case 4:
            guard manager != nil else { return nil }
            crashManager()
            return simRecord("fault: the manager crashes (store at revision \(store.revision))")
        case 5:
            let duration = chaosRandom.duration(.milliseconds(200)...(.seconds(6)))
            store.failingUntil = now + duration
            return simRecord("fault: the store fails for \(DurationText.format(duration))")
        case 6:
            guard nodes[index].eventsLost == nil else { return nil }
            nodes[index].eventsGeneration += 1
            nodes[index].eventsLost = nodes[index].eventsGeneration
            counters.eventStreamLosses += 1
            let duration = chaosRandom.duration(.milliseconds(500)...(.seconds(5)))
            schedule(.eventsRestored(node: index, generation: nodes[index].eventsGeneration), at: now + duration)
            _ = feedWorker(index, .engine(error: "simulated: the engine's event stream broke"))
            return simRecord("fault: \(name) loses the runtime's event stream for \(DurationText.format(duration))")
        case 7:
            // A host vanishes without a word: the other side's connection stays half-open.
            if chaosRandom.chance(0.7) {
                guard nodes[index].process != nil else { return nil }
                let down = min(chaosRandom.duration(.milliseconds(200)...(.seconds(12))), faults.maximumWorkerDowntime)
                crashWorker(index, downFor: down, silently: true)
                return simRecord("fault: \(name)'s host goes away silently (back in \(DurationText.format(down))); the manager is not told")
            }
            guard manager != nil else { return nil }
            crashManager(silently: true)
            return simRecord("fault: the manager's host goes away silently (store at revision \(store.revision)); the workers are not told")
        case 9:
            return leaseFault()
        default:
            return nil
        }
    }

    /// A client that is not the node it claims: no certificate, or another node's. The
    /// manager must not welcome it, and the node it claims keeps its connection.
    func impostor() -> TraceRecord? {
        guard phase == .faults else { return nil }
        schedule(.impostor, at: now + impostorRandom.duration(.milliseconds(500)...(.seconds(4))))
        guard manager != nil, !leaderPaused else { return nil }
        let claimed = impostorRandom.int(0...(workerCount - 1))
        let claimedID = nodes[claimed].id
        let other = (claimed + 1) % workerCount
        var certified: NodeID? = workerCount > 1 && impostorRandom.chance(0.5) ? nodes[other].id : nil
        if sabotage.trustTheHello { certified = claimedID }
        let id = ConnectionID(rawValue: nextConnection)
        nextConnection += 1
        let wasConnected = manager!.machine.isConnected(claimedID)
        var effects = manager!.machine.handle(.connected(id), now: now)
        effects += manager!.machine.handle(.authenticated(id, certified), now: now)
        effects += manager!.machine.handle(.received(id, .hello(Hello(
            nodeID: claimedID, name: nodes[claimed].name, addresses: ["10.0.9.9:5557"],
            capacity: Capacity(millicores: Self.workerMillicores, memoryBytes: Self.workerMemory, diskBytes: 10 << 30)))), now: now)
        let welcomed = effects.contains { if case .send(id, .welcome) = $0 { true } else { false } }
        let displaced = wasConnected && !manager!.machine.isConnected(claimedID)
        effects += manager!.machine.handle(.disconnected(id), now: now)
        // Its frames go nowhere (the network knows no such connection); the rest is carried out.
        for effect in effects { applyManager(effect) }
        counters.impostors += 1
        let as_ = certified.map { "with \($0)'s certificate" } ?? "without a certificate"
        if welcomed { violate(.impostorsRefused, "\(id) \(as_) was welcomed as \(claimedID)") }
        if displaced { violate(.impostorsRefused, "\(id) \(as_) took \(claimedID)'s connection") }
        return simRecord("fault: \(id) claims \(nodeName(claimed)) \(as_)")
    }

    // MARK: - Phases

    /// Faults stop: partitions heal, the store works, crashed processes come back soon.
    func beginQuiet() {
        guard phase == .faults else { return }
        phase = .quiet
        quietSince = now
        store.failingUntil = nil
        if leases != nil {
            for slot in 0..<LeaseBook.slotCount {
                leases!.slots[slot].pausedUntil = nil
                leases!.slots[slot].cutOffUntil = nil
            }
            leases!.slowUntil = nil
        }
        for index in nodes.indices {
            if let partition = nodes[index].partition {
                schedule(.heal(node: index, partition: partition.id), at: now)
            }
            if nodes[index].eventsLost != nil {
                schedule(.eventsRestored(node: index, generation: nodes[index].eventsGeneration), at: now + .milliseconds(100))
            }
            if nodes[index].process == nil {
                schedule(.workerRestart(node: index), at: now + chaosRandom.duration(.milliseconds(100)...(.seconds(3))))
            }
        }
        if manager == nil { schedule(.managerRestart, at: now + chaosRandom.duration(.milliseconds(100)...(.seconds(2)))) }
        schedule(.quietCheck, at: now + .seconds(1))
    }

    /// Every second of the quiet phase: has the cluster settled (the end state holds and
    /// nothing more is planned)? At the latest after `maximumQuiet`, the end state is judged.
    func quietCheck() -> TraceRecord? {
        guard phase == .quiet, let since = quietSince, !finished else { return nil }
        let elapsed = now - since
        if elapsed >= minimumQuiet, isSettled, finalViolations().isEmpty {
            finish(elapsed)
            return nil
        }
        if elapsed >= maximumQuiet {
            for (invariant, message) in finalViolations() { violate(invariant, message) }
            finish(elapsed)
            return nil
        }
        schedule(.quietCheck, at: now + .seconds(1))
        return nil
    }

    func finish(_ quiet: Duration) {
        counters.quietTime = quiet
        finished = true
    }

    /// Nothing more is planned: no process to come back, no start, exit, verdict or commit
    /// pending, no partition, every worker in contact.
    var isSettled: Bool {
        guard manager != nil, deposed == nil, !managerRestartPending, store.queued.isEmpty, (manager?.machine.heldCount ?? 0) == 0 else { return false }
        for node in nodes {
            guard node.process != nil, node.partition == nil, node.eventsLost == nil, node.starts.isEmpty, contactSince(node.index) != nil else { return false }
            if node.containers.values.contains(where: { $0.isRunning && $0.exitAt != nil }) { return false }
            if node.watches.values.contains(where: \.pending) { return false }
        }
        return true
    }
}
