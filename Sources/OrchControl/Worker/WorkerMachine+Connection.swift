import OrchCore

/// The connection to the manager and the machine's deadlines: what a new connection sends
/// first (the task list, then the terminal statuses not yet acknowledged, then heartbeats),
/// the liveness of a silent manager, and the disconnect policy of tasks that must not run on
/// unsupervised. Also the dispatch of every input to its handler.
extension WorkerMachine {
    mutating func dispatch(_ input: Input) {
        switch input {
        case .found(let containers): found(containers)
        case .containersGone(let containers): containersGone(containers)
        case .engine(let error): engineChanged(error)
        case .connected(let welcome): welcomed(welcome)
        case .disconnected: connectionLost()
        case .received(let message): received(message)
        case .containerStarted(let task, let attempt, let container, let ports):
            containerStarted(task, attempt: attempt, container: container, ports: ports)
        case .containerFailed(let task, let attempt, let container, let error):
            containerFailed(task, attempt: attempt, container: container, error: error)
        case .containerExited(let task, let attempt, let code): containerExited(task, attempt: attempt, code: code)
        case .healthChanged(let task, let attempt, let health, let failure): healthChanged(task, attempt: attempt, to: health, failure: failure)
        case .stopRequested(let task, let attempt): stopAsked(StopTask(task: task, attempt: attempt))
        case .timer: timer()
        }
    }

    mutating func emit(_ effect: Effect) { effects.append(effect) }

    mutating func note(_ note: Note) { effects.append(.note(note)) }

    // MARK: - Connection

    /// A new connection: the manager reconciles from the task list, so it goes first; then
    /// the terminal statuses it has not acknowledged (under their original ids, so that a
    /// status it recorded already is recognised as a duplicate); then the heartbeats.
    private mutating func welcomed(_ welcome: Welcome) {
        guard welcome.epoch >= newestEpoch else {
            // A deposed leader that still answers: another has led since.
            emit(.dropConnection(reason: "the manager leads with epoch \(welcome.epoch), older than \(newestEpoch): it was deposed"))
            return
        }
        newestEpoch = welcome.epoch
        connected = welcome
        lastHeard = now
        // Every table follows the welcome at once: a service removed meanwhile is not among them.
        mesh = MeshDrains()
        emit(.send(.taskList(taskList)))
        for status in outbox.resend { emit(.send(.taskStatus(status))) }
        heartbeatSequence = 0
        nextHeartbeat = nil
        sendHeartbeat()
    }

    /// The connection is gone (or being dropped): nothing more is written until the next
    /// welcome. Statuses meanwhile are numbered; the terminal ones wait in the outbox.
    mutating func connectionLost() {
        connected = nil
        nextHeartbeat = nil
    }

    private mutating func received(_ message: WireMessage) {
        lastHeard = now
        switch message {
        case .ack(let ack): outbox.acknowledge(ack.statusID)
        case .assignTask(let assignment):
            guard fromCurrentLeader(.assignTask, epoch: assignment.epoch) else { return }
            assign(assignment)
        case .stopTask(let stop):
            guard fromCurrentLeader(.stopTask, epoch: stop.epoch) else { return }
            stopAsked(stop)
        case .serviceTable(let table): mesh.apply(table)
        case .heartbeat:
            break   // the manager's answer to ours: it only shows the manager is there
        case .hello, .welcome, .refused, .joinRequest, .joinResult, .taskStatus, .taskList, .submitTask, .submitResult,
             .logRequest, .logChunk, .logCredit, .logEnd, .goodbye, .error:
            break   // the handshake, logs and submissions are the shell's
        }
    }

    /// Whether a command's epoch is the newest seen (or newer: it is taken as the newest).
    private mutating func fromCurrentLeader(_ kind: WireMessage.Kind, epoch: UInt64) -> Bool {
        guard epoch >= newestEpoch else {
            note(.ignoredStaleEpoch(kind, epoch: epoch, newest: newestEpoch))
            return false
        }
        newestEpoch = epoch
        return true
    }

    // MARK: - Timers

    /// Whatever came due: a silent manager's connection is dropped, the next heartbeat is
    /// sent, and tasks whose disconnect policy ran out are stopped.
    private mutating func timer() {
        dropConnectionIfSilent()
        if let due = nextHeartbeat, due <= now { sendHeartbeat() }
        stopTasksCutOff()
        stopDrained()
    }

    /// The interval the manager asked for, bounded below so that a zero cannot spin.
    private var heartbeatInterval: Duration? {
        connected.map { max($0.heartbeatInterval, .milliseconds(10)) }
    }

    /// Sends the next heartbeat and sets the one after, keeping the cadence; beats missed
    /// while the timer was late are skipped, not sent in a burst.
    private mutating func sendHeartbeat() {
        guard let interval = heartbeatInterval else { return }
        heartbeatSequence += 1
        emit(.sendHeartbeat(sequence: heartbeatSequence))
        var next = (nextHeartbeat ?? now) + interval
        if next <= now { next = now + interval }
        nextHeartbeat = next
    }

    /// The first moment the manager counts as silent on this connection (strictly more than
    /// `managerSilence` since it was last heard).
    var silenceDeadline: Moment? {
        connected.map { _ in lastHeard + managerSilence + .nanoseconds(1) }
    }

    /// The silence allowed: as configured, but at least 4 of the manager's heartbeat
    /// intervals (it answers one heartbeat in three).
    var managerSilence: Duration {
        max(configuration.managerSilence, (heartbeatInterval ?? .zero) * 4)
    }

    /// A connection on which the manager said nothing (not even its answer to our heartbeats)
    /// is half-open or the manager is stuck: it is dropped, once, and the shell dials again.
    private mutating func dropConnectionIfSilent() {
        guard let deadline = silenceDeadline, now >= deadline else { return }
        emit(.dropConnection(reason: "no word from the manager for more than \(DurationText.format(managerSilence))"))
        connectionLost()
    }

    /// When a task's disconnect policy stops it, or nil when it has none or it is ending already.
    func disconnectDeadline(of held: Held) -> Moment? {
        guard let stopAfter = held.stopAfter, !held.state.isTerminal,
              !held.stopRequested, held.state != .stopping else { return nil }
        return lastHeard + stopAfter
    }

    /// Tasks with `disconnect.stopAfter` are stopped once the manager has not been heard from
    /// for that long, connected or not: the manager places a replacement only after that
    /// time (and the grace period) has passed, so the two never run at once.
    private mutating func stopTasksCutOff() {
        for task in tasks.keys.sorted() {
            guard let held = tasks[task], let deadline = disconnectDeadline(of: held), deadline <= now,
                  let stopAfter = held.stopAfter else { continue }
            note(.stoppedForDisconnect(task, attempt: held.attempt, after: stopAfter))
            requestStop(task, reason: "stopped: no word from the manager for \(DurationText.format(stopAfter))")
        }
    }

    /// Asks for a timer at the earliest deadline, if any; the one place that does, at the end
    /// of every `handle` call, so that no input can leave a deadline without its timer.
    mutating func scheduleWake() {
        if let next = nextWake { emit(.wake(at: next)) }
    }
}
