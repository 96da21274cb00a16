import Foundation
import Logging
import OrchCore
import OrchRuntime
import OrchWire

/// Runs the attempts assigned to this worker on the container runtime and reports every
/// change of their state. Assignments are idempotent on (task, attempt) through the
/// ``AssignmentLedger``; exits are learned from the runtime's event stream
/// (``containerEvent(_:)``), never by polling.
public actor TaskSupervisor {
    /// One attempt this worker holds.
    struct Held {
        var attempt: UInt64
        /// Nil for a container adopted after a restart until the manager sends its spec again.
        var spec: TaskSpec?
        var image: String?
        var container: ContainerID?
        var state: TaskState
        var exitCode: Int32?
        var error: String?
        var ports: [PublishedPort] = []
        var health: TaskHealth = .none
        var stopRequested = false
        /// The container is being created and started; an exit seen meanwhile waits here.
        var starting = false
        var exitDuringStart: Int32?
        var healthCheck: Task<Void, Never>?
    }

    public let node: NodeID
    private let runtime: any ContainerRuntime
    private let publishAddress: String
    private let report: @Sendable (TaskStatus) async -> Void
    private let prober: HealthProber
    private let logger: Logger
    private var ledger = AssignmentLedger()
    private var tasks: [TaskID: Held] = [:]
    /// At most this many containers are being created and started at once; the engine
    /// serializes much of that work, and more in flight only makes each start slower.
    public let maximumConcurrentStarts: Int
    private var starts = 0
    /// Images seen present on the engine.
    private var presentImages: Set<String> = []
    private var startWaiters: [CheckedContinuation<Void, Never>] = []

    public init(
        node: NodeID, runtime: any ContainerRuntime, publishAddress: String = "127.0.0.1",
        prober: HealthProber = HealthProber(), logger: Logger = Logger(label: "orch.worker"), maximumConcurrentStarts: Int = 4,
        report: @escaping @Sendable (TaskStatus) async -> Void
    ) {
        self.maximumConcurrentStarts = max(1, maximumConcurrentStarts)
        self.node = node
        self.runtime = runtime
        self.publishAddress = publishAddress
        self.prober = prober
        self.logger = logger
        self.report = report
    }

    /// The labels that select this worker's containers, and only its.
    public var ownLabels: [String: String] { [ContainerLabel.node: node.rawValue] }

    // MARK: - Assignments and stops

    public func assign(_ assignment: AssignTask) async {
        let task = assignment.task
        var log = logger
        log[metadataKey: "task"] = "\(task)"
        switch ledger.assign(task, attempt: assignment.attempt) {
        case .duplicate:
            // Already held: no second container. Learn the spec of an adopted one, say where it stands.
            if var held = tasks[task], held.spec == nil {
                held.spec = assignment.spec
                tasks[task] = held
                if held.state == .running { startHealthCheck(task) }
            }
            log.debug("attempt \(assignment.attempt) is held already")
            await reportCurrent(task)
            return
        case .stale(let current):
            log.info("ignoring attempt \(assignment.attempt): attempt \(current) is current")
            return
        case .start(let replacing):
            if let replacing { await discard(task, attempt: replacing) }
        }
        tasks[task] = Held(
            attempt: assignment.attempt, spec: assignment.spec, image: assignment.spec.image, state: .scheduled,
            health: assignment.spec.healthCheck == nil ? .none : .starting, starting: true)
        await acquireStartSlot()
        defer { releaseStartSlot() }
        do {
            let config = ContainerConfig(
                task: task, attempt: Int(assignment.attempt), node: node, spec: assignment.spec, publishAddress: publishAddress)
            let container = try await createPullingIfMissing(config)
            guard update(task, attempt: assignment.attempt, { $0.container = container }) else {
                try? await runtime.remove(container)   // replaced or stopped while it was being created
                return
            }
            try await runtime.start(container)
            let info = try await runtime.inspect(container)
            update(task, attempt: assignment.attempt) { held in
                held.starting = false
                held.ports = info.publishedPorts
                if !held.state.isTerminal && held.state != .stopping { held.state = .running }
            }
            if let held = tasks[task], held.attempt == assignment.attempt, held.stopRequested {
                // A stop came while it was starting: it is stopped now; its exit is reported as usual.
                try? await runtime.stop(container, grace: assignment.spec.stopGracePeriod)
                return
            }
            log.info("running attempt \(assignment.attempt) as \(container.short)")
            await reportCurrent(task)
            if let code = tasks[task]?.exitDuringStart, tasks[task]?.attempt == assignment.attempt {
                await exited(task, code: code)
            } else if tasks[task]?.state == .running {
                startHealthCheck(task)
            }
        } catch {
            log.warning("attempt \(assignment.attempt) failed to start: \(error)")
            update(task, attempt: assignment.attempt) { held in
                held.starting = false
                held.state = .failed
                held.error = "\(error)"
            }
            await reportCurrent(task)
            if let container = tasks[task]?.container, tasks[task]?.attempt == assignment.attempt {
                try? await runtime.remove(container)
            }
        }
    }

    /// Stops `attempt` of `task` within its grace period; an attempt that is not current is
    /// left alone. A stopped attempt's container is removed once its exit is reported; one
    /// that had ended already is removed at once and forgotten.
    public func stop(_ task: TaskID, attempt: UInt64) async {
        guard ledger.shouldStop(task, attempt: attempt), var held = tasks[task] else {
            logger.debug("stop for \(task) attempt \(attempt) ignored: not current here")
            return
        }
        if held.state.isTerminal {
            await discard(task, attempt: attempt)
            return
        }
        guard !held.stopRequested else { return }
        held.stopRequested = true
        held.healthCheck?.cancel()
        held.state = .stopping
        tasks[task] = held
        await reportCurrent(task)
        guard let container = held.container else { return }   // still starting: stopped when its start ends
        let grace = held.spec?.stopGracePeriod ?? TaskSpec.defaultStopGracePeriod
        do {
            try await retrying("stopping \(task)") { try await self.runtime.stop(container, grace: grace) }
        } catch {
            logger.warning("stopping \(task): \(error)")
        }
    }

    // MARK: - What the runtime says

    /// Applies a container event from the runtime's stream: a `die` ends the attempt.
    public func containerEvent(_ event: ContainerEvent) async {
        guard event.action == "die",
              let task = event.attributes[ContainerLabel.task].map({ TaskID(rawValue: $0) }),
              let attempt = event.attributes[ContainerLabel.attempt].flatMap({ UInt64($0) }),
              let held = tasks[task], held.attempt == attempt
        else { return }
        let code = Int32(clamping: event.exitCode ?? -1)
        if held.starting {
            update(task, attempt: attempt) { $0.exitDuringStart = code }
            return
        }
        await exited(task, code: code)
    }

    /// An attempt's container exited with `code`: completed if it was asked to stop or exited
    /// 0, failed otherwise. A stopped attempt's container is removed and the task forgotten.
    private func exited(_ task: TaskID, code: Int32) async {
        guard var held = tasks[task], !held.state.isTerminal else { return }
        held.healthCheck?.cancel()
        held.healthCheck = nil
        held.exitCode = code
        held.state = (held.stopRequested || code == 0) ? .completed : .failed
        tasks[task] = held
        logger.info("\(task) attempt \(held.attempt) exited with \(code): \(held.state)", metadata: ["task": "\(task)"])
        await reportCurrent(task)
        if held.stopRequested { await discard(task, attempt: held.attempt) }
    }

    /// Finds this worker's containers (after a restart, or when the event stream was lost)
    /// and takes them as its attempts: the newest attempt of each task is kept, older ones
    /// are removed, and exits missed meanwhile are reported.
    public func adopt() async throws {
        let found = try await runtime.list(labels: ownLabels)
        var newest: [TaskID: (attempt: UInt64, summary: ContainerSummary)] = [:]
        var older: [ContainerSummary] = []
        for summary in found {
            guard let task = summary.labels[ContainerLabel.task].map({ TaskID(rawValue: $0) }),
                  let attempt = summary.labels[ContainerLabel.attempt].flatMap({ UInt64($0) }) else { continue }
            if let current = newest[task], current.attempt >= attempt {
                older.append(summary)
            } else {
                if let current = newest[task] { older.append(current.summary) }
                newest[task] = (attempt, summary)
            }
        }
        for summary in older { try? await runtime.remove(summary.id) }
        for (task, found) in newest.sorted(by: { $0.key < $1.key }) {
            if let held = tasks[task], held.attempt >= found.attempt {
                // Known already: only an exit missed while the event stream was down matters.
                if held.state == .running, found.summary.state != "running", !held.starting,
                   let info = try? await runtime.inspect(found.summary.id) {
                    await exited(task, code: Int32(clamping: info.exitCode))
                }
                continue
            }
            guard case .start = ledger.assign(task, attempt: found.attempt) else { continue }
            let info = try await runtime.inspect(found.summary.id)
            let state: TaskState = info.running ? .running : (info.exitCode == 0 ? .completed : .failed)
            tasks[task] = Held(
                attempt: found.attempt, spec: nil, image: info.image, container: info.id, state: state,
                exitCode: info.running ? nil : Int32(clamping: info.exitCode), error: info.error, ports: info.publishedPorts)
            logger.info("adopted \(task) attempt \(found.attempt) (\(info.id.short), \(state))", metadata: ["task": "\(task)"])
        }
    }

    // MARK: - Views

    /// Every attempt held, for the task list sent on each (re)connect.
    public func taskList() -> TaskList {
        TaskList(entries: tasks.sorted { $0.key < $1.key }.map { task, held in
            TaskList.Entry(task: task, attempt: held.attempt, state: held.state, container: held.container)
        })
    }

    public func snapshot() -> [WorkerTaskDTO] {
        tasks.sorted { $0.key < $1.key }.map { task, held in
            WorkerTaskDTO(
                id: task, attempt: held.attempt, state: held.state, image: held.image, container: held.container,
                exitCode: held.exitCode, error: held.error, ports: held.ports, health: held.health)
        }
    }

    public func container(of task: TaskID) -> ContainerID? { tasks[task]?.container }

    public func attempt(of task: TaskID) -> UInt64? { tasks[task]?.attempt }

    public var runningCount: Int { tasks.values.filter { $0.state == .running }.count }

    // MARK: - Health

    private func startHealthCheck(_ task: TaskID) {
        guard var held = tasks[task], held.healthCheck == nil, let check = held.spec?.healthCheck else { return }
        guard let port = held.ports.first(where: { $0.containerPort == check.port && $0.protocol == .tcp }) else {
            logger.warning("\(task): health check port \(check.port) is not published", metadata: ["task": "\(task)"])
            return
        }
        let attempt = held.attempt
        let prober = prober
        held.healthCheck = Task {
            await prober.watch(check, host: port.hostIP == "0.0.0.0" ? "127.0.0.1" : port.hostIP, port: port.hostPort) { health in
                await self.healthChanged(task, attempt: attempt, to: health)
            }
        }
        tasks[task] = held
    }

    private func healthChanged(_ task: TaskID, attempt: UInt64, to health: TaskHealth) async {
        guard let held = tasks[task], held.attempt == attempt, held.state == .running, held.health != health else { return }
        tasks[task]?.health = health
        logger.info("\(task) is \(health)", metadata: ["task": "\(task)"])
        await reportCurrent(task)
    }

    // MARK: - Helpers

    /// Creates the container; the image is checked (and pulled when missing) only the first
    /// time, or when the engine says it is gone: one call to the engine per start, not two.
    private func createPullingIfMissing(_ config: ContainerConfig) async throws -> ContainerID {
        if !presentImages.contains(config.image) {
            _ = try await runtime.ensureImage(config.image)
            presentImages.insert(config.image)
            return try await runtime.create(config)
        }
        do {
            return try await runtime.create(config)
        } catch let error as RuntimeError {
            guard case .imageUnavailable = error else { throw error }
            presentImages.remove(config.image)
            _ = try await runtime.ensureImage(config.image)
            presentImages.insert(config.image)
            return try await runtime.create(config)
        }
    }

    /// Runs `operation`, trying again (0.5 s, 1 s, 2 s, 4 s later) while the engine's error is transient.
    private func retrying(_ what: String, _ operation: () async throws -> Void) async throws {
        var delay: Duration = .milliseconds(500)
        for attempt in 1...5 {
            do {
                return try await operation()
            } catch let error as RuntimeError where error.isTransient && attempt < 5 {
                logger.info("\(what): \(error); trying again in \(DurationText.format(delay))")
                try await Task.sleep(for: delay)
                delay *= 2
            }
        }
    }

    private func acquireStartSlot() async {
        if starts < maximumConcurrentStarts {
            starts += 1
            return
        }
        await withCheckedContinuation { startWaiters.append($0) }   // the slot is handed over
    }

    private func releaseStartSlot() {
        if startWaiters.isEmpty {
            starts -= 1
        } else {
            startWaiters.removeFirst().resume()
        }
    }

    /// Changes the held attempt if it is still `attempt`; false when it was replaced.
    @discardableResult
    private func update(_ task: TaskID, attempt: UInt64, _ change: (inout Held) -> Void) -> Bool {
        guard var held = tasks[task], held.attempt == attempt else { return false }
        change(&held)
        tasks[task] = held
        return true
    }

    /// Removes an attempt's container and forgets it.
    private func discard(_ task: TaskID, attempt: UInt64) async {
        guard let held = tasks[task], held.attempt == attempt else { return }
        held.healthCheck?.cancel()
        tasks[task] = nil
        ledger.release(task, attempt: attempt)
        if let container = held.container {
            do {
                try await retrying("removing \(container.short)") { try await self.runtime.remove(container) }
            } catch {
                logger.warning("removing \(container.short): \(error)")
            }
        }
    }

    private func reportCurrent(_ task: TaskID) async {
        guard let held = tasks[task] else { return }
        await report(TaskStatus(
            statusID: 0, task: task, attempt: held.attempt, state: held.state, container: held.container,
            exitCode: held.exitCode, error: held.error, ports: held.ports, health: held.health))
    }
}
