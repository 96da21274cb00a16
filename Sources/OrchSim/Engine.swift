import OrchControl
import OrchCore

/// A container on a node's simulated engine. Containers outlive the worker process (as with
/// Docker): a crashed worker finds them again when it starts.
struct SimContainer {
    enum State: Equatable {
        case running
        case exited(Int32)
    }

    let serial: Int
    let id: ContainerID
    let task: TaskID
    let attempt: UInt64
    let spec: TaskSpec
    var state: State
    var error: String?
    var ports: [PublishedPort]
    var startedAt: Moment
    /// When it becomes (or became) stale for the manager, for `one-current-attempt`.
    var staleSince: Moment?
    /// The exit planned (by itself or by a stop), and its generation: a later plan that is
    /// earlier replaces it.
    var exitAt: Moment?
    var exitCode: Int32?
    var exitGeneration = 0
    /// It ignores SIGTERM: a stop kills it (137) when the grace period ends.
    var ignoresTerm: Bool

    var isRunning: Bool { state == .running }
}

/// A start the engine is carrying out for a worker process.
struct PendingStart {
    var task: TaskID
    var attempt: UInt64
    var spec: TaskSpec
    var incarnation: Int
}

/// A health probe the worker process asked for; it reports changes of the verdict.
struct HealthWatch {
    var task: TaskID
    var attempt: UInt64
    var incarnation: Int
    var reported: TaskHealth = .starting
    var flakyAfter: Duration?
    /// A change of verdict is planned.
    var pending = false
}

extension Simulation {
    static func containerID(_ serial: Int) -> ContainerID {
        let digits = String(serial)
        return ContainerID(rawValue: "ctr" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits)
    }

    // MARK: - Starts

    /// Creates and starts a container: answered after 1–500 ms (sometimes up to 5 s).
    func startContainer(_ index: Int, _ task: TaskID, attempt: UInt64, spec: TaskSpec) {
        guard let process = nodes[index].process else { return }
        if let stop = clients.stopped[task], attempt > stop.attempt {
            violate(.stoppedStaysStopped, "\(nodeName(index)) starts \(task.short)#\(attempt) after its stop was answered at \(stop.at) (attempt then \(stop.attempt))")
        }
        let operation = nextOperation
        nextOperation += 1
        nodes[index].starts[operation] = PendingStart(task: task, attempt: attempt, spec: spec, incarnation: process.incarnation)
        if sabotage.startsHang { return }
        let random = nodes[index].random.chance(0.9) ? nodes[index].random.duration(.milliseconds(1)...(.milliseconds(500)))
            : nodes[index].random.duration(.milliseconds(500)...(.seconds(5)))
        schedule(.startDone(node: index, operation: operation), at: now + random)
    }

    func startDone(_ index: Int, operation: Int) -> TraceRecord? {
        guard let start = nodes[index].starts.removeValue(forKey: operation),
              let process = nodes[index].process, process.incarnation == start.incarnation else { return nil }
        let incarnation = process.incarnation
        switch carryOut(start, on: index) {
        case .failed(let container, let error):
            return feedWorker(index, .containerFailed(start.task, attempt: start.attempt, container: container, error: error))
        case .started(let container, let ports, let exitedAtOnce):
            if sabotage.startTwice { _ = carryOut(start, on: index) }
            if let code = exitedAtOnce {
                // Its die event comes before the start is answered.
                schedule(.workerInput(node: index, incarnation: incarnation, .containerStarted(start.task, attempt: start.attempt, container: container, ports: ports)), at: now)
                return feedWorker(index, .containerExited(start.task, attempt: start.attempt, exitCode: code))
            }
            return feedWorker(index, .containerStarted(start.task, attempt: start.attempt, container: container, ports: ports))
        }
    }

    enum StartOutcome {
        case started(ContainerID, [PublishedPort], exitedAtOnce: Int32?)
        case failed(ContainerID?, String)
    }

    /// What the engine does with a start: sometimes the image cannot be had (no container),
    /// sometimes the container is created but will not start, a fixed host port may be
    /// taken; otherwise it runs, and its behaviour plans its exit.
    func carryOut(_ start: PendingStart, on index: Int) -> StartOutcome {
        let roll = nodes[index].random.unit()
        if sabotage.replicaStartsFail, start.spec.environment[ServiceWorkload.serviceKey] != nil {
            return .failed(nil, "simulated: pull access denied for \(start.spec.image) (sabotaged)")
        }
        if roll < 0.03 { return .failed(nil, "simulated: pull access denied for \(start.spec.image)") }
        let fixed = start.spec.ports.compactMap { port in port.hostPort.map { "\($0)/\(port.protocol.rawValue)" } }
        let taken = Set(nodes[index].containers.values.filter(\.isRunning).flatMap { $0.ports.map { "\($0.hostPort)/\($0.protocol.rawValue)" } })
        let conflict = fixed.first { taken.contains($0) }
        if roll < 0.05 || conflict != nil {
            let error = conflict.map { "simulated: port \($0) is already allocated" } ?? "simulated: exec format error"
            let container = create(start, on: index, state: .exited(128), error: error)
            return .failed(container.id, error)
        }
        let behaviour = Behaviour(start.spec)
        if case .instant(let code) = behaviour, nodes[index].random.chance(0.5) {
            let container = create(start, on: index, state: .exited(code), error: nil)
            counters.containerExits += 1
            return .started(container.id, container.ports, exitedAtOnce: code)
        }
        var container = create(start, on: index, state: .running, error: nil)
        switch behaviour {
        case .forever: break
        case .exit(let code, let after):
            planExit(&container, at: now + after.scaled(by: 0.8 + 0.4 * nodes[index].random.unit()), code: code, on: index)
        case .instant(let code):
            planExit(&container, at: now + nodes[index].random.duration(.microseconds(10)...(.milliseconds(20))), code: code, on: index)
        }
        nodes[index].containers[container.serial] = container
        return .started(container.id, container.ports, exitedAtOnce: nil)
    }

    @discardableResult
    func create(_ start: PendingStart, on index: Int, state: SimContainer.State, error: String?) -> SimContainer {
        let serial = nextContainer
        nextContainer += 1
        var ports: [PublishedPort] = []
        for port in start.spec.ports {
            let host: Int
            if let fixed = port.hostPort {
                host = fixed
            } else {
                host = nodes[index].nextHostPort
                nodes[index].nextHostPort += 1
            }
            ports.append(PublishedPort(containerPort: port.containerPort, protocol: port.protocol, hostIP: "0.0.0.0", hostPort: host))
        }
        let container = SimContainer(
            serial: serial, id: Self.containerID(serial), task: start.task, attempt: start.attempt, spec: start.spec, state: state,
            error: error, ports: ports, startedAt: now, ignoresTerm: nodes[index].random.chance(0.1))
        nodes[index].containers[serial] = container
        if state == .running { counters.containersStarted += 1 }
        return container
    }

    func planExit(_ container: inout SimContainer, at moment: Moment, code: Int32, on index: Int) {
        if let planned = container.exitAt, planned <= moment { return }
        container.exitAt = moment
        container.exitCode = code
        container.exitGeneration += 1
        schedule(.containerExit(node: index, serial: container.serial, generation: container.exitGeneration), at: moment)
    }

    /// A worker process dies while the engine carries out its starts: each one either
    /// finished (the container exists, as the engine left it) or never created anything.
    func settleStarts(of index: Int) {
        for operation in nodes[index].starts.keys.sorted() {
            guard let start = nodes[index].starts.removeValue(forKey: operation) else { continue }
            if nodes[index].random.chance(0.5) { _ = carryOut(start, on: index) }
        }
    }

    // MARK: - Stops, exits, removal

    func container(_ id: ContainerID, on index: Int) -> SimContainer? {
        nodes[index].containers.values.first { $0.id == id }
    }

    /// SIGTERM, then SIGKILL at the end of the grace period: most exit with 143 soon, some
    /// ignore the signal and are killed (137).
    func stopContainer(_ index: Int, _ id: ContainerID, grace: Duration) {
        guard var container = container(id, on: index), container.isRunning else { return }
        if grace <= .zero || container.ignoresTerm {
            planExit(&container, at: now + max(grace, .milliseconds(1)), code: 137, on: index)
        } else {
            planExit(&container, at: now + nodes[index].random.duration(.milliseconds(1)...min(grace, .milliseconds(800))), code: 143, on: index)
        }
        nodes[index].containers[container.serial] = container
    }

    func containerExit(_ index: Int, serial: Int, generation: Int) -> TraceRecord? {
        guard var container = nodes[index].containers[serial], container.isRunning, container.exitGeneration == generation,
              let code = container.exitCode else { return nil }
        container.state = .exited(code)
        container.exitAt = nil
        nodes[index].containers[serial] = container
        counters.containerExits += 1
        guard nodes[index].process != nil, nodes[index].eventsLost == nil else {
            return simRecord("\(nodeName(index)) \(container.id) (\(container.task.short)#\(container.attempt)) exits \(code), unseen")
        }
        return feedWorker(index, .containerExited(container.task, attempt: container.attempt, exitCode: code))
    }

    /// Removes a container (forced, as the worker's runtime does): one still running is
    /// killed, and its die event reaches the worker.
    func removeContainer(_ index: Int, _ id: ContainerID) {
        guard let container = container(id, on: index) else { return }
        nodes[index].containers[container.serial] = nil
        if container.isRunning {
            counters.containerExits += 1
            if let process = nodes[index].process, nodes[index].eventsLost == nil {
                schedule(.workerInput(node: index, incarnation: process.incarnation, .containerExited(container.task, attempt: container.attempt, exitCode: 137)), at: now)
            }
        }
    }

    /// What the engine holds for the node, as a listing gives it (by container id).
    func foundContainers(_ index: Int) -> [WorkerMachine.FoundContainer] {
        nodes[index].containers.keys.sorted().compactMap { serial in
            guard let container = nodes[index].containers[serial] else { return nil }
            var exitCode: Int32?
            if case .exited(let code) = container.state { exitCode = code }
            return WorkerMachine.FoundContainer(
                task: container.task, attempt: container.attempt, container: container.id, image: container.spec.image,
                running: container.isRunning, exitCode: exitCode, error: container.error, ports: container.ports,
                stopGracePeriod: container.spec.stopGracePeriod, stopAfter: container.spec.disconnect?.stopAfter)
        }
    }

    // MARK: - Health

    func watchHealth(_ index: Int, _ task: TaskID, attempt: UInt64, check: HealthCheck) {
        guard let process = nodes[index].process else { return }
        for (id, watch) in nodes[index].watches where watch.task == task && watch.attempt == attempt { nodes[index].watches[id] = nil }
        let id = nextWatch
        nextWatch += 1
        let spec = container(forTask: task, attempt: attempt, on: index)?.spec
        nodes[index].watches[id] = HealthWatch(
            task: task, attempt: attempt, incarnation: process.incarnation, flakyAfter: spec.flatMap(Behaviour.flakyAfter), pending: true)
        schedule(.healthChange(node: index, watch: id), at: now + check.interval.scaled(by: 1 + nodes[index].random.unit()))
    }

    func unwatchHealth(_ index: Int, _ task: TaskID, attempt: UInt64) {
        for id in nodes[index].watches.keys.sorted() where nodes[index].watches[id]?.task == task && nodes[index].watches[id]?.attempt == attempt {
            nodes[index].watches[id] = nil
        }
    }

    func container(forTask task: TaskID, attempt: UInt64, on index: Int) -> SimContainer? {
        nodes[index].containers.keys.sorted().lazy.compactMap { self.nodes[index].containers[$0] }
            .first { $0.task == task && $0.attempt == attempt && $0.isRunning }
    }

    /// The probe's verdict changes: healthy first; a flaky task turns unhealthy later.
    func healthChange(_ index: Int, watch id: Int) -> TraceRecord? {
        guard var watch = nodes[index].watches[id], let process = nodes[index].process, process.incarnation == watch.incarnation else { return nil }
        watch.pending = false
        guard container(forTask: watch.task, attempt: watch.attempt, on: index) != nil else {
            nodes[index].watches[id] = nil
            return nil
        }
        let health: TaskHealth
        if watch.reported != .healthy {
            health = .healthy
            if let after = watch.flakyAfter {
                watch.pending = true
                schedule(.healthChange(node: index, watch: id), at: now + after)
            }
        } else {
            health = .unhealthy
        }
        watch.reported = health
        nodes[index].watches[id] = watch
        return feedWorker(index, .healthChanged(watch.task, attempt: watch.attempt, health))
    }
}


extension Simulation {
    /// Puts a running container on a node's engine that no worker asked for: the tests
    /// doctor a state with it to show that an invariant notices.
    @discardableResult
    func injectRunningContainer(task: TaskID, attempt: UInt64, spec: TaskSpec, on index: Int) -> SimContainer {
        create(PendingStart(task: task, attempt: attempt, spec: spec, incarnation: 0), on: index, state: .running, error: nil)
    }
}
