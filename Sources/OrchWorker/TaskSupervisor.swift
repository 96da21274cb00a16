import Foundation
import Logging
import OrchControl
import OrchCore
import OrchRuntime
import OrchWire
import Synchronization

/// The shell around the worker's decisions (``WorkerMachine``): it feeds the machine what
/// happens (messages from the manager, the connection coming and going, what the container
/// runtime reports, the time) and carries out what the machine says: containers created,
/// started, stopped and removed, frames written, health probes run, timers set.
///
/// Nothing slow runs on the actor: the runtime's work (create and start, stop, remove) and
/// the writes run in child tasks of ``run()``, and their results come back as inputs. The
/// messages the machine sends are written by one task, in the order the machine gave them.
public actor TaskSupervisor {
    public let node: NodeID
    private let runtime: any ContainerRuntime
    private let publishAddress: String
    /// The DNS servers its containers get (the worker's own, for `NAME.service.orch`).
    private var containerDNS: [String] = []
    private let prober: HealthProber
    /// Where the output of removed attempts is kept (none: it is not).
    private let keptOutput: KeptOutput?
    private let logger: Logger
    private var machine: WorkerMachine
    private let origin = ContinuousClock.now
    private let wallOrigin = Date()

    /// Writes a message on the current connection (throws when none is up).
    private let write: @Sendable (WireMessage) async throws -> Void
    /// Closes the current connection; the client dials again.
    private let drop: @Sendable (String) async -> Void
    /// The machine metrics for a heartbeat, given the running count.
    private let metrics: @Sendable (Int) async -> MachineMetrics

    /// Runtime work started by effects, run by `run()` as child tasks.
    private let jobs = AsyncStream<@Sendable () async -> Void>.makeStream()
    /// What to write, in order, each tagged with the connection it was meant for.
    private let outgoing = AsyncStream<(connection: UInt64, Outgoing)>.makeStream()
    /// Counts connections (and their ends): a write meant for an earlier one is not made on a later one.
    private var connection: UInt64 = 0
    private let currentConnection = Locked<UInt64>(0)
    /// The moment the machine asked to be woken at, if any.
    private var wakeAt: Moment?
    private var healthWatches: [WatchKey: Task<Void, Never>] = [:]
    /// Images seen present on the engine.
    private var presentImages: Set<String> = []

    enum Outgoing: Sendable {
        case message(WireMessage)
        case heartbeat(sequence: UInt64)
        case drop(reason: String)
    }

    struct WatchKey: Hashable {
        var task: TaskID
        var attempt: UInt64
    }

    public init(
        node: NodeID, runtime: any ContainerRuntime, publishAddress: String = "127.0.0.1",
        prober: HealthProber = HealthProber(), keptOutput: KeptOutput? = nil,
        logger: Logger = Logger(label: "orch.worker"), maximumConcurrentStarts: Int = 4,
        managerSilence: Duration = .seconds(5),
        write: @escaping @Sendable (WireMessage) async throws -> Void,
        dropConnection: @escaping @Sendable (String) async -> Void = { _ in },
        metrics: @escaping @Sendable (Int) async -> MachineMetrics = { MachineMetrics(runningTasks: UInt32($0)) },
        lastContact: Date? = nil
    ) {
        self.node = node
        self.runtime = runtime
        self.publishAddress = publishAddress
        self.prober = prober
        self.keptOutput = keptOutput
        self.logger = logger
        self.write = write
        self.drop = dropConnection
        self.metrics = metrics
        machine = WorkerMachine(
            configuration: .init(node: node, maximumConcurrentStarts: maximumConcurrentStarts, managerSilence: managerSilence),
            now: .zero, silentFor: lastContact.map { .milliseconds(Int64(max(0, Date().timeIntervalSince($0)) * 1000)) })
    }

    /// When the manager was last heard from (wall time), for the state directory: the next
    /// process of this worker goes on from it, so that a disconnect policy's clock does not
    /// start again with a restart.
    public var lastContact: Date {
        wallOrigin.addingTimeInterval(Double(machine.lastHeardFromManager.nanoseconds) / 1e9)
    }

    /// The labels that select this worker's containers, and only its.
    public nonisolated var ownLabels: [String: String] { [ContainerLabel.node: node.rawValue] }

    public var maximumConcurrentStarts: Int { machine.configuration.maximumConcurrentStarts }

    // MARK: - Running

    /// Carries out the machine's effects until cancelled: the runtime's work as child tasks,
    /// the writes in order, and the timer. Every health probe ends with it.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.timerLoop() }
            group.addTask { await self.writeLoop() }
            for await job in jobs.stream {
                if Task.isCancelled { break }
                group.addTask { await job() }
            }
            group.cancelAll()
        }
        for watch in healthWatches.values { watch.cancel() }
        healthWatches = [:]
    }

    /// Feeds `.timer` when the earliest wake the machine asked for comes due; each sleep is
    /// at most 50 ms, so that a newer, earlier wake is not missed.
    private func timerLoop() async {
        while !Task.isCancelled {
            let now = self.now
            if let wake = wakeAt, wake <= now {
                feed(.timer)
                await Task.yield()
                continue
            }
            let wait = wakeAt.map { min($0 - now, .milliseconds(50)) } ?? .milliseconds(50)
            try? await Task.sleep(for: max(wait, .milliseconds(1)))
        }
    }

    private func writeLoop() async {
        for await (connection, item) in outgoing.stream {
            guard connection == currentConnection.value else { continue }   // meant for a connection that is gone
            switch item {
            case .message(let message):
                do {
                    try await write(message)
                } catch {
                    logger.debug("not sent (\(message.kind)): \(error)")
                }
            case .heartbeat(let sequence):
                let running = await runningCount
                let beat = Heartbeat(sequence: sequence, metrics: await metrics(running), engineError: engineError)
                try? await write(.heartbeat(beat))
            case .drop(let reason):
                await drop(reason)
            }
        }
    }

    private var now: Moment { Moment(nanoseconds: (ContinuousClock.now - origin).nanoseconds) }

    // MARK: - Inputs

    /// A new connection was welcomed.
    public func connected(_ welcome: Welcome) {
        nextConnection()
        feed(.connected(welcome))
    }

    /// The connection dropped.
    public func disconnected() {
        nextConnection()
        feed(.disconnected)
    }

    /// A message from the manager (the machine ignores those that are not its).
    public func received(_ message: WireMessage) {
        feed(.received(message))
    }

    /// Stops `attempt` of `task` (the worker's own API), as the manager's stop would.
    public func stop(_ task: TaskID, attempt: UInt64) {
        feed(.stopRequested(task, attempt: attempt))
    }

    /// Applies a container event from the runtime's stream: a `die` ends the attempt.
    public func containerEvent(_ event: ContainerEvent) {
        guard event.action == "die",
              let task = event.attributes[ContainerLabel.task].map({ TaskID(rawValue: $0) }),
              let attempt = event.attributes[ContainerLabel.attempt].flatMap({ UInt64($0) })
        else { return }
        feed(.containerExited(task, attempt: attempt, exitCode: Int32(clamping: event.exitCode ?? -1)))
    }

    /// Lists this worker's containers and tells the machine how each stands: the first time
    /// it adopts them (after a restart), later (after the event stream was lost) it finds the
    /// exits missed meanwhile.
    public func adopt() async throws {
        // Started before the listing was asked for: a listing without them means they are gone.
        let live = Set(machine.liveContainers)
        var found: [WorkerMachine.FoundContainer] = []
        let listed = try await runtime.list(labels: ownLabels)
        for summary in listed {
            guard let task = summary.labels[ContainerLabel.task].map({ TaskID(rawValue: $0) }),
                  let attempt = summary.labels[ContainerLabel.attempt].flatMap({ UInt64($0) }) else { continue }
            let info: ContainerInfo
            do {
                info = try await runtime.inspect(summary.id)
            } catch RuntimeError.containerNotFound {
                continue   // removed meanwhile
            }
            found.append(WorkerMachine.FoundContainer(
                task: task, attempt: attempt, container: info.id, image: info.image, running: info.running,
                exitCode: info.running ? nil : Int32(clamping: info.exitCode), error: info.error, ports: info.publishedPorts,
                stopGracePeriod: summary.labels[ContainerLabel.stopGrace].flatMap { Int64($0) }.map { .nanoseconds($0) },
                stopAfter: summary.labels[ContainerLabel.stopAfter].flatMap { Int64($0) }.map { .nanoseconds($0) }))
        }
        feed(.found(found))
        let gone = live.subtracting(found.map(\.container))
        if !gone.isEmpty { feed(.containersGone(gone.sorted { $0.rawValue < $1.rawValue })) }
    }

    // MARK: - The engine

    /// Why the container engine does not answer (nil while it does): each heartbeat says it.
    public var engineError: String? { machine.engineError }

    /// The engine stopped answering (its event stream broke and cannot be had again).
    public func engineUnavailable(_ error: String) {
        if engineError == nil { logger.warning("the container engine does not answer: \(error); heartbeats say so until it does") }
        feed(.engine(error: error))
    }

    /// The engine answers again (events followed, containers listed).
    public func engineAnswers() {
        guard engineError != nil else { return }
        logger.info("the container engine answers again")
        feed(.engine(error: nil))
    }

    // MARK: - Views

    /// Every attempt held, as the task list sent on each (re)connect.
    public func taskList() -> TaskList { machine.taskList }

    public func snapshot() -> [WorkerTaskDTO] { machine.snapshot }

    public func container(of task: TaskID) -> ContainerID? { machine.container(of: task) }

    public func attempt(of task: TaskID) -> UInt64? { machine.attempt(of: task) }

    public var runningCount: Int { machine.runningCount }

    /// Terminal statuses not yet acknowledged by the manager, oldest first.
    public var unacknowledged: [TaskStatus] { machine.unacknowledged }

    public var isConnected: Bool { machine.isConnected }

    // MARK: - The machine

    private func nextConnection() {
        connection += 1
        currentConnection.value = connection
    }

    private func feed(_ input: WorkerMachine.Input) {
        let effects = machine.handle(input, now: now)
        wakeAt = nil
        for effect in effects { carryOut(effect) }
    }

    private func carryOut(_ effect: WorkerMachine.Effect) {
        switch effect {
        case .send(let message):
            outgoing.continuation.yield((connection, .message(message)))
        case .sendHeartbeat(let sequence):
            outgoing.continuation.yield((connection, .heartbeat(sequence: sequence)))
        case .dropConnection(let reason):
            outgoing.continuation.yield((connection, .drop(reason: reason)))
        case .wake(let at):
            wakeAt = at
        case .start(let task, let attempt, let spec):
            job { await self.start(task, attempt: attempt, spec: spec) }
        case .stop(let task, let attempt, let container, let grace):
            job {
                do {
                    try await self.retrying("stopping \(task) attempt \(attempt)") { try await self.runtime.stop(container, grace: grace) }
                } catch {
                    self.logger.warning("stopping \(task) attempt \(attempt): \(error)", metadata: ["task": "\(task)"])
                }
            }
        case .remove(let container, let owner):
            job {
                if let owner { await self.keepOutput(of: container, for: owner) }
                do {
                    try await self.retrying("removing \(container.short)") { try await self.runtime.remove(container) }
                } catch {
                    self.logger.warning("removing \(container.short): \(error)")
                }
            }
        case .watchHealth(let task, let attempt, let check, let host, let port):
            let key = WatchKey(task: task, attempt: attempt)
            healthWatches[key]?.cancel()
            let prober = prober
            healthWatches[key] = Task {
                await prober.watch(check, host: host, port: port) { health, failure in
                    await self.healthChanged(task, attempt: attempt, health, failure: failure)
                }
            }
        case .unwatchHealth(let task, let attempt):
            healthWatches.removeValue(forKey: WatchKey(task: task, attempt: attempt))?.cancel()
        case .note(let note):
            log(note)
        }
    }

    /// Copies the end of an attempt's output before its container is removed (a copy that
    /// cannot be made is logged: the container goes all the same).
    private nonisolated func keepOutput(of container: ContainerID, for owner: WorkerMachine.OutputOwner) async {
        guard let keptOutput else { return }
        do {
            var chunks: [LogChunk] = []
            var bytes = 0
            for try await chunk in try await runtime.logs(container, tail: nil, follow: false) {
                chunks.append(chunk)
                bytes += chunk.bytes.count
                if bytes > 2 * KeptOutput.maximumBytes {
                    chunks = KeptOutput.last(KeptOutput.maximumBytes, of: chunks)
                    bytes = chunks.reduce(0) { $0 + $1.bytes.count }
                }
            }
            try keptOutput.keep(chunks, task: owner.task, attempt: owner.attempt)
        } catch {
            logger.warning("keeping the output of \(owner.task) attempt \(owner.attempt): \(error)", metadata: ["task": "\(owner.task)"])
        }
    }

    /// Where the output of `attempt` of `task` is read from: its container while this
    /// worker holds it, else the copy kept when it was removed.
    public func output(of task: TaskID, attempt: UInt64) -> LogRelay.Source? {
        if machine.attempt(of: task) == attempt, let container = machine.container(of: task) { return .container(container) }
        return keptOutput?.output(of: task, attempt: attempt).map(LogRelay.Source.kept)
    }

    /// Containers started from now on resolve names with these servers.
    public func useDNS(_ servers: [String]) { containerDNS = servers }

    private func job(_ work: @escaping @Sendable () async -> Void) {
        jobs.continuation.yield(work)
    }

    private func healthChanged(_ task: TaskID, attempt: UInt64, _ health: TaskHealth, failure: String?) {
        guard healthWatches[WatchKey(task: task, attempt: attempt)] != nil else { return }
        logger.info("\(task) is \(health)", metadata: ["task": "\(task)"])
        feed(.healthChanged(task, attempt: attempt, health, failure: failure))
    }

    /// Creates (pulling the image when missing), starts and inspects the attempt's container;
    /// the outcome goes back to the machine.
    private func start(_ task: TaskID, attempt: UInt64, spec: TaskSpec) async {
        var created: ContainerID?
        do {
            var config = ContainerConfig(task: task, attempt: Int(attempt), node: node, spec: spec, publishAddress: publishAddress)
            config.dns = containerDNS
            let container = try await createPullingIfMissing(config)
            created = container
            try await runtime.start(container)
            let info = try await runtime.inspect(container)
            feed(.containerStarted(task, attempt: attempt, container: container, ports: info.publishedPorts))
        } catch {
            feed(.containerFailed(task, attempt: attempt, container: created, error: "\(error)"))
        }
    }

    private func log(_ note: WorkerMachine.Note) {
        switch note {
        case .running(let task, let attempt, let container):
            logger.info("running attempt \(attempt) as \(container.short)", metadata: ["task": "\(task)"])
        case .exited(let task, let attempt, let code, let state):
            logger.info("\(task) attempt \(attempt) exited with \(code): \(state)", metadata: ["task": "\(task)"])
        case .failedToStart(let task, let attempt, let error):
            logger.warning("attempt \(attempt) failed to start: \(error)", metadata: ["task": "\(task)"])
        case .adopted(let task, let attempt, let state):
            logger.info("adopted \(task) attempt \(attempt) (\(state))", metadata: ["task": "\(task)"])
        case .ignoredStaleAssignment(let task, let attempt, let current):
            logger.info("ignoring attempt \(attempt): attempt \(current) is current", metadata: ["task": "\(task)"])
        case .stoppedForDisconnect(let task, let attempt, let after):
            logger.warning("stopping attempt \(attempt): no word from the manager for \(DurationText.format(after))", metadata: ["task": "\(task)"])
        case .healthPortNotPublished(let task, let port):
            logger.warning("\(task): health check port \(port) is not published", metadata: ["task": "\(task)"])
        case .ignoredStaleEpoch(let kind, let epoch, let newest):
            logger.warning("ignoring \(kind) from a deposed leader (epoch \(epoch); the newest is \(newest))")
        }
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
    private nonisolated func retrying(_ what: String, _ operation: @Sendable () async throws -> Void) async throws {
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
}

/// A value read by the writing task without a hop onto the actor.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    var value: Value {
        get { mutex.withLock { $0 } }
        set { mutex.withLock { $0 = newValue } }
    }
}
