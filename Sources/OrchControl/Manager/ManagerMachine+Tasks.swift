import OrchCore

/// Tasks: submissions, stops, what workers report, and reconciliation with a worker's list.
extension ManagerMachine {
    // MARK: - Submissions and stops

    mutating func submit(_ spec: TaskSpec, request: RequestID, by caller: String? = nil) {
        switch accept(spec, by: caller.map { "token \($0)" }) {
        case .success(let (record, created)):
            afterCommit(.answer(request, .submitted(record, created: created, revision: max(record.revision, issued + (journal.isEmpty ? 0 : 1)))))
        case .failure(let error):
            emit(.answer(request, .refused(error)))
        }
    }

    /// Accepts a task into memory and the journal. The same id with the same spec is the same
    /// task (`created` false); with another spec it is a conflict. A task is in `tasks` from
    /// the moment it is accepted, so a second submission of its id, even before the first is
    /// durable, is judged against it and answered after the same commit.
    mutating func accept(_ spec: TaskSpec, by caller: String? = nil, replica: ServiceSlot? = nil) -> Result<(TaskRecord, Bool), ClusterError> {
        if let failure = storeFailure { return .failure(.unavailable(failure)) }
        var problems = spec.validationProblems()
        if replica == nil {
            for (index, port) in spec.ports.enumerated() where port.publish != nil {
                problems.append(SpecProblem(
                    path: "ports[\(index)].publish",
                    message: "only a service's ports are published on every worker's load balancer: run it as a service (orchctl service create)"))
            }
        }
        guard problems.isEmpty else { return .failure(.invalidTask(problems)) }
        if replica == nil, let name = spec.name, let holder = liveTask(named: name), spec.id != holder.id {
            // The same file again is the same task; another spec under a live name is refused.
            var normalized = spec
            normalized.id = holder.id
            guard spec.id == nil, holder.spec == normalized else { return .failure(.nameTaken(name, holder.id, holder.state)) }
            return .success((holder, false))
        }
        let id = spec.id ?? newTaskID()
        if let existing = tasks[id] {
            var normalized = spec
            normalized.id = id
            guard existing.spec == normalized else { return .failure(.taskConflict(id)) }
            return .success((existing, false))
        }
        var record = TaskRecord(id: id, spec: spec, now: date)
        if spec.id != nil, let floor = attemptFloors.removeValue(forKey: id) ?? (floorsLost ? Int(issued) : nil), floor > 0 {
            // An id given again, perhaps of a task forgotten: its attempts go on above the old ones.
            record.attempt = floor
            record.attemptBase = floor
        }
        // Its assignment must fit in one frame of the cluster protocol.
        let size = configuration.assignmentBytes(id, record.spec)
        guard size <= configuration.maximumFrameBytes else {
            return .failure(.taskTooLarge(
                "the task is \(ByteCount.format(size)) once encoded; the cluster protocol carries at most \(ByteCount.format(configuration.maximumFrameBytes))"))
        }
        record.revision = issued + 1
        record.replica = replica
        if let replica { serviceTasks[replica.service, default: []].insert(id) }
        if replica == nil, let name = spec.name { taskNames[name, default: []].insert(id) }
        tasks[id] = record
        order.append(id)
        stateCounts[.pending, default: 0] += 1
        journal.append(.insertTask(record))
        history(TaskHistoryEntry(
            task: id, at: date, state: .pending, message: caller.map { "accepted from \($0)" } ?? "accepted"))
        note(.submitted(id))
        ready.append(id)
        return .success((record, true))
    }

    /// A task pinned to the node it was posted to (a worker's `POST /tasks`), checked as a
    /// `POST /tasks` is.
    mutating func submitPinned(_ submit: SubmitTask, from node: NodeID, on connection: ConnectionID) {
        var spec = submit.spec
        // A worker may submit to itself only: a spec pinned to another node is refused.
        if let pinned = spec.constraints.node, pinned != node.rawValue, pinned != nodes[node]?.record.name {
            let error = "a worker submits tasks to itself only; this one is pinned to \(pinned)"
            return emit(.send(connection, .submitResult(SubmitResult(requestID: submit.requestID, task: nil, error: error))))
        }
        spec.constraints.node = node.rawValue
        switch accept(spec, by: "node \(nodes[node]?.record.name ?? node.rawValue)") {
        case .success(let (record, _)):
            afterCommit(.send(connection, .submitResult(SubmitResult(requestID: submit.requestID, task: record.id, error: nil))))
        case .failure(let error):
            emit(.send(connection, .submitResult(SubmitResult(requestID: submit.requestID, task: nil, error: error.description))))
        }
    }

    /// Stops a task: its desired state becomes stop; it ends completed once its worker reports
    /// the container stopped, and no restart policy applies.
    mutating func stop(_ id: TaskID, request: RequestID, by caller: String? = nil) {
        guard let record = tasks[id] else { return emit(.answer(request, .refused(.taskNotFound(id.rawValue)))) }
        if let failure = storeFailure { return emit(.answer(request, .refused(.unavailable(failure)))) }
        requestStop(id, by: caller.map { "token \($0)" })
        let current = tasks[id] ?? record
        afterCommit(.answer(request, .stopped(current, revision: max(current.revision, issued + (journal.isEmpty ? 0 : 1)))))
    }

    /// The stop of a task, asked by `by` (a token, or a service): a running attempt is told
    /// to stop; one that never ran, or whose node is lost, ends at once.
    mutating func requestStop(_ id: TaskID, by caller: String?) {
        guard let before = tasks[id]?.state else { return }
        if change(id, .stopRequested, by: caller), let after = tasks[id] {
            if after.state == .stopping, let node = after.node {
                send(.stopTask(StopTask(task: id, attempt: UInt64(after.attempt), epoch: configuration.epoch)), to: node)
            }
            if after.state == .completed && (before == .pending || before == .lost) {
                backoff[id] = nil
                release(id)
            }
        }
    }

    // MARK: - What workers report

    /// A worker's report on one attempt. Terminal statuses are acknowledged once recorded
    /// durably, and again whenever they are re-sent; a report on an attempt that is not
    /// current stops that attempt.
    mutating func statusReported(_ status: TaskStatus, by node: NodeID, on connection: ConnectionID) {
        let id = status.task
        let ack = WireMessage.ack(Ack(statusID: status.statusID))
        guard let record = tasks[id], record.attempt == Int(status.attempt), record.node == node else {
            if !status.state.isTerminal { emit(.send(connection, .stopTask(StopTask(task: id, attempt: status.attempt, epoch: configuration.epoch)))) }
            afterCommit(.send(connection, ack))
            return
        }
        switch status.state {
        case .running:
            if record.state == .scheduled || record.state == .lost {
                if let container = status.container { change(id, .started(container: container, hostPorts: status.ports)) }
            } else if record.state == .running, record.hostPorts != status.ports || (status.container != nil && record.containerID != status.container) {
                tasks[id]?.hostPorts = status.ports
                if let container = status.container { tasks[id]?.containerID = container }
                save(id)
            } else if record.state.isTerminal || record.state == .pending {
                // The manager has ended this attempt (its exit was recorded, or it was given
                // up on): a container still running for it is an orphan.
                emit(.send(connection, .stopTask(StopTask(task: id, attempt: status.attempt, epoch: configuration.epoch))))
            } else if record.state == .stopping && record.desiredState == .stop {
                // Still running after the stop was asked (e.g. the stop was lost): ask again.
                emit(.send(connection, .stopTask(StopTask(task: id, attempt: status.attempt, epoch: configuration.epoch))))
            }
            if let current = tasks[id], current.state == .running, current.spec.healthCheck != nil, status.health != current.health {
                if status.health == .unhealthy {
                    // The manager decides: the attempt is ended and its policy restarts it.
                    emit(.send(connection, .stopTask(StopTask(task: id, attempt: status.attempt, epoch: configuration.epoch))))
                    if change(id, .healthFailed(reason: status.error)) { endWhenStopped(id, node: node) }
                } else if status.health != .none {
                    change(id, .healthChanged(status.health))
                }
            }
            emit(.send(connection, ack))
        case .completed, .failed:
            if let waiting = confirming[id], waiting.attempt == record.attempt {
                // The attempt the manager ended is stopped now: its replacement may start.
                confirming[id] = nil
                attemptEnded(id)
            }
            if !record.state.isTerminal && record.state != .pending {
                let event: TaskEvent = status.exitCode.map { .exited(code: Int($0)) }
                    ?? .startFailed(reason: status.error ?? "the container could not be started")
                if change(id, event) {
                    // The worker's words say more than an exit code (a command not found, the
                    // engine restarted): they are the task's error.
                    if let error = status.error { tasks[id]?.error = error; save(id) }
                    attemptEnded(id)
                }
            }
            // Recorded now or before: acknowledged once durable, every time it is sent.
            afterCommit(.send(connection, ack))
        case .stopping, .scheduled, .pending, .lost:
            emit(.send(connection, ack))
        }
    }

    /// A (re)connected worker's full task list against what the manager knows: attempts
    /// that are not current are stopped; current ones that the worker lost are ended;
    /// assignments that never arrived are sent again.
    mutating func reconcile(_ list: TaskList, from node: NodeID, on connection: ConnectionID) {
        var held = Set<TaskID>()
        for entry in list.entries {
            guard let record = tasks[entry.task], record.attempt == Int(entry.attempt), record.node == node else {
                if !entry.state.isTerminal || entry.container != nil {
                    emit(.send(connection, .stopTask(StopTask(task: entry.task, attempt: entry.attempt, epoch: configuration.epoch))))
                }
                continue
            }
            held.insert(entry.task)
            if (record.desiredState == .stop || movingOff[entry.task]?.attempt == record.attempt) && !entry.state.isTerminal {
                emit(.send(connection, .stopTask(StopTask(task: entry.task, attempt: entry.attempt, epoch: configuration.epoch))))
            } else if !record.state.isTerminal && record.state != .pending {
                // Sent again so that the worker reports the attempt's full status (ports,
                // health, an exit it saw while away) and learns its spec if it adopted the
                // container after a restart.
                afterCommit(.send(connection, .assignTask(AssignTask(task: entry.task, attempt: entry.attempt, spec: record.spec, epoch: configuration.epoch))))
            } else if record.state.isTerminal && entry.container != nil {
                // Ended here already: its container has no more use.
                emit(.send(connection, .stopTask(StopTask(task: entry.task, attempt: entry.attempt, epoch: configuration.epoch))))
            }
        }
        for id in nodes[node]?.tasks.sorted() ?? [] where !held.contains(id) {
            guard let record = tasks[id], record.node == node else { continue }
            switch record.state {
            case .scheduled:
                afterCommit(.send(connection, .assignTask(AssignTask(task: id, attempt: UInt64(record.attempt), spec: record.spec, epoch: configuration.epoch))))
            case .running:
                if change(id, .startFailed(reason: "the worker no longer has this task")) { attemptEnded(id) }
            case .stopping:
                if change(id, .exited(code: 0)) { release(id) }
            default:
                break
            }
        }
    }

    // MARK: - Changes

    /// Applies `event` to a task and journals the change with its history line. An illegal
    /// event is refused (and noted): nothing changes.
    @discardableResult
    mutating func change(_ id: TaskID, _ event: TaskEvent, by caller: String? = nil) -> Bool {
        guard var record = tasks[id] else { return false }
        let before = record.state
        do {
            try record.apply(event, at: date)
        } catch {
            note(.transitionRefused(error.description))
            return false
        }
        record.revision = issued + 1
        if before != record.state {
            stateCounts[before, default: 0] -= 1
            stateCounts[record.state, default: 0] += 1
        }
        tasks[id] = record
        if record.replica != nil { replicaChanged(id) }
        note(.taskEvent(id, event))
        journal.append(.saveTask(record))
        history(TaskHistoryEntry(
            task: id, at: date, state: record.state, message: caller.map { "\(historyText(event)) by \($0)" } ?? historyText(event)))
        return true
    }

    /// An event as the task's history says it: nodes by name, with their id.
    func historyText(_ event: TaskEvent) -> String {
        if case .placed(let node) = event, let name = nodes[node]?.record.name { return "placed on \(name) (\(node))" }
        return event.description
    }

    /// Journals a task changed in place (no change of state).
    mutating func save(_ id: TaskID) {
        guard var record = tasks[id] else { return }
        record.revision = issued + 1
        tasks[id] = record
        if record.replica != nil { replicaChanged(id) }
        journal.append(.saveTask(record))
    }

    /// An attempt ended (completed, failed or lost): its resources go back, and its restart
    /// policy decides whether it is placed again (after a backoff) or stays ended.
    mutating func attemptEnded(_ id: TaskID) {
        release(id)
        guard let record = tasks[id] else { return }
        if let moving = movingOff.removeValue(forKey: id), moving.attempt == record.attempt, record.desiredState == .run, record.replica == nil {
            // Moved off a drained node, and surely stopped there now: placed elsewhere at once.
            if change(id, .requeued(reason: "moved off node \(moving.node), drained")) { enqueue(id, after: .zero) }
            return
        }
        if record.state == .lost && record.desiredState == .stop {
            change(id, .stopRequested)
            return
        }
        if record.replica != nil {
            // A replica is replaced by its service, in its slot, whatever its policy says
            // (an attempt whose end waited for its worker's word changes nothing else: its
            // service is told here).
            if record.state == .lost { change(id, .abandoned(reason: "node lost; its service replaces it")) }
            replicaChanged(id)
            return
        }
        switch RestartDecision.decide(for: record, now: date) {
        case .restart(let after):
            if RestartDecision.effectiveRestartCount(record, now: date) == 0, record.restartCount > 0 {
                tasks[id]?.restartCount = 0
            }
            guard change(id, .requeued(reason: "restarting after \(DurationText.format(after)) (\(record.error ?? record.state.rawValue))")) else { return }
            enqueue(id, after: after)
        case .leave(let reason?):
            if record.state == .lost {
                change(id, .abandoned(reason: reason))
            } else if var ended = tasks[id] {
                ended.error = "\(ended.error.map { "\($0); " } ?? "")\(reason)"
                ended.revision = issued + 1
                tasks[id] = ended
                journal.append(.saveTask(ended))
                history(TaskHistoryEntry(task: id, at: date, state: ended.state, message: reason))
            }
        case .leave(nil):
            if record.state == .lost { change(id, .abandoned(reason: record.error ?? "node lost")) }
        }
    }

    /// The manager ended an attempt whose container may still run (its health check failed).
    /// A task with a disconnect policy must never run twice, so its replacement waits until
    /// the worker reports that container ended, or until it has surely stopped it (its
    /// `stopAfter`, stop grace and the margin); its resources stay reserved meanwhile. Any
    /// other task is replaced at once, as its policy says.
    mutating func endWhenStopped(_ id: TaskID, node: NodeID) {
        guard let record = tasks[id], let stopAfter = record.spec.disconnect?.stopAfter else { return attemptEnded(id) }
        let deadline = now + stopAfter + record.spec.stopGracePeriod + configuration.disconnectMargin
        confirming[id] = (record.attempt, deadline)
        wake(at: deadline)
    }

    /// Attempts whose end waited for confirmation and whose deadline has passed.
    mutating func releaseDueConfirmations() {
        guard !confirming.isEmpty else { return }
        for (id, waiting) in confirming.sorted(by: { $0.key < $1.key }) where waiting.deadline <= now {
            confirming[id] = nil
            if tasks[id]?.attempt == waiting.attempt { attemptEnded(id) }
        }
    }

    /// Resources go back to the node of the task's current attempt.
    mutating func release(_ id: TaskID) {
        guard let record = tasks[id], let node = record.node, nodes[node]?.tasks.remove(id) != nil else { return }
        nodes[node]?.lingering[id] = nil
        adjustReservation(node, by: record.spec, sign: -1)
        capacityChanged = true
    }

    mutating func reserve(_ id: TaskID, on node: NodeID) {
        guard let record = tasks[id], nodes[node]?.tasks.insert(id).inserted == true else { return }
        adjustReservation(node, by: record.spec, sign: 1)
    }

    /// A task id for a submission without one: random-looking, but drawn from the machine's
    /// own generator so that a run replays exactly.
    mutating func newTaskID() -> TaskID {
        while true {
            let high = random.next(), low = random.next()
            let hex = String(high, radix: 16).leftPadded(to: 16) + String(low, radix: 16).leftPadded(to: 16)
            let chars = Array(hex)
            let text = "\(String(chars[0..<8]))-\(String(chars[8..<12]))-4\(String(chars[13..<16]))-\(String(chars[16..<20]))-\(String(chars[20..<32]))"
            let id = TaskID(rawValue: text)
            if tasks[id] == nil { return id }
        }
    }

    /// The task of that name that has not ended, if any (never a service's).
    func liveTask(named name: String) -> TaskRecord? {
        for id in taskNames[name] ?? [] { if let record = tasks[id], !record.state.isTerminal { return record } }
        return nil
    }

    /// Removes an ended task with its history, answered once the removal is durable.
    mutating func purge(_ id: TaskID, request: RequestID) {
        if let failure = storeFailure { return emit(.answer(request, .refused(.unavailable(failure)))) }
        guard let record = tasks[id] else { return emit(.answer(request, .refused(.taskNotFound(id.rawValue)))) }
        guard endedForGood(record) else { return emit(.answer(request, .refused(.taskNotEnded(id, record.state)))) }
        forget(id)
        afterCommit(.answer(request, .purged(id, revision: issued + 1)))
    }

    /// Ended, and not waiting for a restart (its backoff, or its worker's confirmation).
    func endedForGood(_ record: TaskRecord) -> Bool {
        record.state.isTerminal && backoff[record.id] == nil && confirming[record.id] == nil
    }

    /// Ended tasks (not a service's, which their service keeps a few of per slot) past the
    /// retention, then the oldest beyond the count kept; looked at once a minute (or at
    /// half the retention, when that is shorter, but not more than once a second).
    mutating func collectEndedTasks() {
        guard now >= nextCollection else { return }
        nextCollection = now + min(.seconds(60), max(configuration.retention / 2, .seconds(1)))
        // Not while the store refuses writes: the next look is at the next interval (the
        // timer asks for it; one that stayed due would wake the machine without end).
        guard storeFailure == nil else { return }
        let cutoff = date.addingTimeInterval(-Double(configuration.retention.components.seconds))
        var ended: [(Date, TaskID)] = []
        for (id, record) in tasks where record.replica == nil && endedForGood(record) {
            ended.append((record.finishedAt ?? record.updatedAt, id))
        }
        ended.sort { ($0.0, $0.1) < ($1.0, $1.1) }
        let beyondCount = max(0, ended.count - configuration.retainedEndedTasks)
        for (index, (finished, id)) in ended.enumerated() where index < beyondCount || finished < cutoff { forget(id) }
    }

}

extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
