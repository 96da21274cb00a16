import OrchCore

/// Assignments, stops and what the runtime reports of each attempt. Every decision on an
/// attempt checks that it is still the current one: answers about a replaced attempt only
/// clean its container up.
extension WorkerMachine {
    // MARK: - Assignments

    /// An assignment, through the ledger: a re-sent one starts no second container, an older
    /// one is refused, a newer one replaces the attempt held.
    mutating func assign(_ assignment: AssignTask) {
        let task = assignment.task
        switch ledger.assign(task, attempt: assignment.attempt) {
        case .duplicate:
            // Held already. An adopted container learns its spec (and its health check) now.
            if var held = tasks[task], held.spec == nil {
                held.spec = assignment.spec
                if held.image == nil { held.image = assignment.spec.image }
                if held.state == .running, assignment.spec.healthCheck != nil, held.health == .none { held.health = .starting }
                if held.state == .running { watchHealth(task, &held) }
                tasks[task] = held
            }
            report(task)
        case .stale(let current):
            note(.ignoredStaleAssignment(task, attempt: assignment.attempt, current: current))
        case .start(let replacing):
            if let replacing { retire(task, attempt: replacing) }
            tasks[task] = Held(
                attempt: assignment.attempt, spec: assignment.spec, image: assignment.spec.image, state: .scheduled,
                health: assignment.spec.healthCheck == nil ? .none : .starting, starting: true)
            startOrQueue(task)
        }
    }

    /// The attempt a newer one replaces: its container is stopped and removed first (the
    /// manager counts on two attempts never running at once), and it is not reported again.
    private mutating func retire(_ task: TaskID, attempt: UInt64) {
        guard var held = tasks[task], held.attempt == attempt else { return }
        stopWatching(task, &held)
        startQueue.removeAll { $0 == task }
        if let container = held.container {
            if !held.state.isTerminal { emit(.stop(task, attempt: attempt, container: container, grace: grace(of: held))) }
            emit(.remove(container, keepingOutputOf: OutputOwner(task: task, attempt: attempt)))
        }
        // Being started: its container is stopped and removed when the start is answered.
        tasks[task] = nil
    }

    // MARK: - Start slots

    /// Starts the attempt now if a slot is free, or queues it for the next one.
    private mutating func startOrQueue(_ task: TaskID) {
        if inFlight.count < configuration.maximumConcurrentStarts {
            start(task)
        } else {
            startQueue.append(task)
        }
    }

    private mutating func start(_ task: TaskID) {
        guard let held = tasks[task], held.starting, let spec = held.spec else { return }
        inFlight.insert(AttemptKey(task: task, attempt: held.attempt))
        emit(.start(task, attempt: held.attempt, spec: spec))
    }

    /// A start was answered: its slot goes to the oldest attempt waiting.
    private mutating func freeSlot(_ task: TaskID, attempt: UInt64) {
        guard inFlight.remove(AttemptKey(task: task, attempt: attempt)) != nil else { return }
        while inFlight.count < configuration.maximumConcurrentStarts, !startQueue.isEmpty {
            start(startQueue.removeFirst())
        }
    }

    // MARK: - Stops

    /// The manager's stop: only for the current attempt. One that ended already has its
    /// container removed and is forgotten; any other is stopped.
    mutating func stopAsked(_ stop: StopTask) {
        guard ledger.shouldStop(stop.task, attempt: stop.attempt), let held = tasks[stop.task] else { return }
        if held.state.isTerminal {
            forget(stop.task, removing: held.container)
        } else {
            requestStop(stop.task, reason: nil)
        }
    }

    /// Stops the current attempt of `task` (a stop asked, or its disconnect policy, which
    /// gives `reason`): it is reported stopping, and its exit then reports completed. One
    /// still waiting for a start slot never starts and ends at once; one being started is
    /// stopped when its start is answered.
    mutating func requestStop(_ task: TaskID, reason: String?) {
        guard var held = tasks[task], !held.state.isTerminal, !held.stopRequested else { return }
        held.stopRequested = true
        held.state = .stopping
        if let reason { held.error = reason }
        stopWatching(task, &held)
        tasks[task] = held
        report(task)
        if held.starting {
            guard let index = startQueue.firstIndex(of: task) else { return }
            startQueue.remove(at: index)
            held.starting = false
            held.state = .completed
            tasks[task] = held
            report(task)
            forget(task, removing: nil)
            return
        }
        guard let container = held.container else { return }
        if let drain = mesh.drain(of: task) {
            // Reported stopping already: every load balancer drains it now; its connections
            // finish before the container is told to stop.
            held.drainUntil = now + drain
            tasks[task] = held
            return
        }
        emit(.stop(task, attempt: held.attempt, container: container, grace: grace(of: held)))
    }

    /// Stops the containers whose drain has ended.
    mutating func stopDrained() {
        for task in tasks.keys.sorted() {
            guard var held = tasks[task], let until = held.drainUntil, until <= now else { continue }
            held.drainUntil = nil
            tasks[task] = held
            guard !held.state.isTerminal, let container = held.container else { continue }
            emit(.stop(task, attempt: held.attempt, container: container, grace: grace(of: held)))
        }
    }

    // MARK: - What the runtime says

    mutating func containerStarted(_ task: TaskID, attempt: UInt64, container: ContainerID, ports: [PublishedPort]) {
        freeSlot(task, attempt: attempt)
        guard var held = tasks[task], held.attempt == attempt else {
            // Replaced or forgotten while it was being started: not wanted any more.
            let grace = tasks[task]?.stopGracePeriod ?? TaskSpec.defaultStopGracePeriod
            emit(.stop(task, attempt: attempt, container: container, grace: grace))
            emit(.remove(container))
            return
        }
        guard held.starting else { return }   // answered already
        held.starting = false
        held.startedAt = now
        held.container = container
        held.ports = ports
        if held.stopRequested {
            // A stop came while it was starting: it is stopped now, and its exit reported.
            tasks[task] = held
            if let code = held.exitDuringStart {
                exited(task, code: code)   // it is gone already: no exit is coming
            } else {
                emit(.stop(task, attempt: attempt, container: container, grace: grace(of: held)))
            }
            return
        }
        held.state = .running
        tasks[task] = held
        note(.running(task, attempt: attempt, container))
        report(task)
        if let code = held.exitDuringStart {
            exited(task, code: code)
        } else {
            watchHealth(task, &held)
            tasks[task] = held
        }
    }

    mutating func containerFailed(_ task: TaskID, attempt: UInt64, container: ContainerID?, error: String) {
        freeSlot(task, attempt: attempt)
        guard var held = tasks[task], held.attempt == attempt, held.starting else {
            if let container, tasks[task]?.attempt != attempt { emit(.remove(container)) }
            return
        }
        held.starting = false
        // A stop asked meanwhile is satisfied: nothing runs.
        held.state = held.stopRequested ? .completed : .failed
        held.error = held.stopRequested ? (held.error ?? error) : error
        tasks[task] = held
        note(.failedToStart(task, attempt: attempt, error))
        report(task)
        if let container { emit(.remove(container)) }
        if held.stopRequested { forget(task, removing: nil) }
    }

    mutating func containerExited(_ task: TaskID, attempt: UInt64, code: Int32) {
        guard var held = tasks[task], held.attempt == attempt else { return }
        if held.starting {
            // Its start has not been answered: the exit is applied once it is.
            held.exitDuringStart = code
            tasks[task] = held
            return
        }
        exited(task, code: code)
    }

    /// The current attempt's container exited: completed if it was asked to stop or exited 0,
    /// failed otherwise. A stopped attempt's container is removed and the attempt forgotten;
    /// one that ended by itself keeps its container (its logs stay readable) until the
    /// manager stops it or sends a newer attempt.
    mutating func exited(_ task: TaskID, code: Int32, error: String? = nil) {
        guard var held = tasks[task], !held.state.isTerminal else { return }
        stopWatching(task, &held)
        held.exitCode = code
        held.state = held.stopRequested || code == 0 ? .completed : .failed
        if let error {
            held.error = error
        } else if held.state == .failed, stoppedByTheEngineRestart(held) {
            held.error = "exit \(code): the container engine restarted (without live restore it stops every container it ran)"
        } else if held.state == .failed, let meaning = Self.shellMeaning(of: code) {
            let command = held.spec?.command?.first ?? "the image's command"
            held.error = "exit \(code): \(command): \(meaning)"
        }
        tasks[task] = held
        note(.exited(task, attempt: held.attempt, code: code, held.state))
        report(task)
        if held.stopRequested { forget(task, removing: held.container) }
    }

    /// How long after the engine is back its restart still explains an exit: it stops the
    /// containers it ran as it starts, and their `die` events come in the first seconds.
    static let engineRestartWindow: Duration = .seconds(15)

    /// Whether `held` ran before the engine was lost, and the engine is lost or just back.
    func stoppedByTheEngineRestart(_ held: Held) -> Bool {
        guard let lost = engineLostAt, (held.startedAt ?? .zero) < lost else { return false }
        return engineError != nil || engineBackAt.map { now < $0 + Self.engineRestartWindow } ?? false
    }

    mutating func engineChanged(_ error: String?) {
        if error != nil, engineError == nil { engineLostAt = now }
        if error == nil, engineError != nil { engineBackAt = now }
        engineError = error
    }

    /// What the shells' exit codes for a command that could not run mean (the engine starts
    /// such a container and it exits at once with them: a user's typo otherwise shows as a
    /// bare exit code).
    static func shellMeaning(of code: Int32) -> String? {
        switch code {
        case 127: "command not found in the image"
        case 126: "command found but not executable"
        default: nil
        }
    }

    mutating func healthChanged(_ task: TaskID, attempt: UInt64, to health: TaskHealth, failure: String? = nil) {
        guard var held = tasks[task], held.attempt == attempt, held.state == .running, held.health != health else { return }
        // What failed goes to the manager with the verdict; a passing check clears it.
        if health == .unhealthy { held.error = failure } else if held.health == .unhealthy { held.error = nil }
        held.health = health
        tasks[task] = held
        report(task)
    }

    // MARK: - Health

    /// Starts probing the attempt's check on the host port its container port is published on.
    private mutating func watchHealth(_ task: TaskID, _ held: inout Held) {
        guard held.state == .running, !held.watchingHealth, let check = held.spec?.healthCheck else { return }
        guard let port = held.ports.first(where: { $0.containerPort == check.port && $0.protocol == .tcp }) else {
            note(.healthPortNotPublished(task, port: check.port))
            return
        }
        // A port bound on every address is reached on the probe host.
        let host = Self.anyAddress.contains(port.hostIP) ? configuration.probeHost : port.hostIP
        held.watchingHealth = true
        emit(.watchHealth(task, attempt: held.attempt, check: check, host: host, port: port.hostPort))
    }

    private static let anyAddress: Set<String> = ["0.0.0.0", "::", ""]

    private mutating func stopWatching(_ task: TaskID, _ held: inout Held) {
        guard held.watchingHealth else { return }
        held.watchingHealth = false
        emit(.unwatchHealth(task, attempt: held.attempt))
    }

    // MARK: - Helpers

    func grace(of held: Held) -> Duration { held.stopGracePeriod }

    /// Forgets the current attempt of `task`, removing `container` if given. Its terminal
    /// status, if any, stays in the outbox until acknowledged.
    private mutating func forget(_ task: TaskID, removing container: ContainerID?) {
        guard var held = tasks[task] else { return }
        stopWatching(task, &held)
        if let container { emit(.remove(container, keepingOutputOf: OutputOwner(task: task, attempt: held.attempt))) }
        startQueue.removeAll { $0 == task }
        tasks[task] = nil
        ledger.release(task, attempt: held.attempt)
    }

    /// Reports where the attempt stands: numbered by the outbox (which keeps terminal ones
    /// until acknowledged) and sent if a connection is up. A non-terminal status that cannot
    /// be sent is not kept: the task list on the next connection supersedes it.
    mutating func report(_ task: TaskID) {
        guard let held = tasks[task] else { return }
        let status = outbox.enqueue(TaskStatus(
            statusID: 0, task: task, attempt: held.attempt, state: held.state, container: held.container,
            exitCode: held.exitCode, error: held.error, ports: held.ports, health: held.health))
        if connected != nil { emit(.send(.taskStatus(status))) }
    }
}
