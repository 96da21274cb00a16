import OrchControl
import OrchCore

/// A deterministic cluster: one `ManagerMachine` and N `WorkerMachine`s (the real code)
/// against a simulated network, container engine, store, clients and clock, all drawn from
/// one seed. Events run in the order of (time, insertion sequence) on a simulated clock; no
/// real clock is read and no dictionary's order decides anything, so a seed replays exactly.
///
/// A run has two phases. In the fault phase (the first `steps` steps) clients submit and
/// stop tasks (and, with ``FaultProfile/services``, create, change and remove services) while connections reset, workers are partitioned, processes crash and the store
/// fails. In the quiet phase faults stop, partitions heal and crashed processes come back;
/// the run goes on until the cluster has settled (everything converged and nothing more
/// planned) or `maximumQuiet` of simulated time has passed, and the end state is checked.
///
/// After every step (one event handled) the invariants of `Invariant` are checked; the run
/// stops at the first violation. See `Invariants.swift` for exactly what each one checks.
public final class Simulation {
    public let seed: UInt64
    public let workerCount: Int
    /// Steps of the fault phase.
    public let faultSteps: Int
    /// Keep every step's line in the result (`replay`); otherwise only the last few.
    public var recordsFullTrace = false
    /// The quiet phase ends once the cluster has settled, at the earliest after this long...
    public var minimumQuiet: Duration = .seconds(10)
    /// ...and at the latest after this long, when the end state is checked whatever it is.
    public var maximumQuiet: Duration = .seconds(240)
    /// A quiet phase with more steps than this is a livelock.
    public var maximumQuietSteps = 200_000

    // MARK: - The parts

    let managerConfiguration = ManagerMachine.Configuration(
        heartbeatInterval: .seconds(1), heartbeatGrace: .seconds(5), restartWindow: .seconds(30),
        handshakeTimeout: .seconds(10), disconnectMargin: .seconds(1))
    let wallOrigin = Date(timeIntervalSince1970: 1_767_225_600)   // 2026-01-01
    static let workerMillicores: UInt32 = 2000
    static let workerMemory: UInt64 = 1 << 30

    var random: SimRandom
    var chaosRandom: SimRandom
    /// Draws the impostors (``FaultProfile/impostors``), apart so that other draws stay as they were.
    var impostorRandom: SimRandom
    /// Draws the service client's requests (``FaultProfile/services``), apart for the same reason.
    var serviceRandom: SimRandom
    /// Draws the operator's requests (``FaultProfile/operators``), apart for the same reason.
    var operatorRandom: SimRandom
    var clientRandom: SimRandom
    var storeRandom: SimRandom
    var queue = EventQueue<Event>()
    var now: Moment = .zero
    var step = 0
    var phase: Phase = .faults
    var quietSince: Moment?
    var quietSteps = 0
    var finished = false
    /// Events handled since the clock last moved; a live cluster's time always moves on.
    var eventsThisInstant = 0
    static let maximumEventsPerInstant = 100_000

    var manager: ManagerProcess?
    var managerIncarnation = 0
    /// A leader deposed by a leader change that has not noticed yet (``FaultProfile/leaderChanges``).
    var deposed: DeposedManager?
    /// The managers' lease and their lease keepers (``FaultProfile/leaderChanges``).
    var leases: LeaseBook?
    /// Draws the database's latencies and the lease's faults, apart for the same reason as the others.
    var leaseRandom: SimRandom
    var managerRestartPending = false
    var store = SimStore()
    var nodes: [SimNode] = []
    var connections: [ConnectionID: SimConnection] = [:]
    var nextConnection: UInt64 = 1
    var nextContainer = 1
    var nextOperation = 1
    var nextWatch = 1
    var nextPartition = 1
    var clients = ClientBook()
    var serviceClient = ServiceBook()
    var operators = OperatorBook()
    var violations: [Violation] = []
    var counters = Counters()
    /// Shell faults for the tests that show an invariant can fail (never set in real runs).
    var sabotage = Sabotage()
    /// Which faults the fault phase draws (all by default).
    public var faults = FaultProfile()
    /// Invariants not checked: for exploring what else a run would find past a known
    /// violation (`orch-sim --ignore`); never in the tests.
    public var ignoring: Set<Invariant> = []

    var recent: [TraceRecord] = []
    var recentStart = 0
    var fullTrace: [String] = []
    static let recentCount = 12

    public init(seed: UInt64, workers: Int = 3, steps: Int = 2000) {
        self.seed = seed
        workerCount = max(1, workers)
        faultSteps = max(0, steps)
        var root = SimRandom(seed: seed)
        random = root.split()
        chaosRandom = root.split()
        clientRandom = root.split()
        storeRandom = root.split()
        for index in 0..<workerCount {
            nodes.append(SimNode(index: index, random: root.split()))
        }
        impostorRandom = root.split()
        serviceRandom = root.split()
        operatorRandom = root.split()
        leaseRandom = root.split()
    }

    // MARK: - Running

    /// Runs to the end (or to the first violation).
    public func run() -> SimulationResult {
        begin()
        while !finished, stepOnce() {}
        return result
    }

    /// Runs until the simulated clock reaches `moment` (or the run ends); for tests that
    /// stop a run midway to look at it or to doctor its state.
    func advance(until moment: Moment) {
        while !finished, let next = queue.nextTime, next <= moment, stepOnce() {}
        now = max(now, moment)
    }

    public var result: SimulationResult {
        SimulationResult(
            seed: seed, steps: step, simulatedTime: now, violations: violations,
            trace: recordsFullTrace ? fullTrace : recentLines, counters: counters)
    }

    /// Schedules the start: the manager, the workers, the first clients and faults.
    func begin() {
        if faults.leaderChanges { beginLeases() } else { startManager(fresh: true) }
        for index in nodes.indices {
            schedule(.workerRestart(node: index), at: now + random.duration(.milliseconds(1)...(.milliseconds(300))))
        }
        schedule(.client, at: now + .milliseconds(50))
        schedule(.chaos, at: now + chaosRandom.duration(.milliseconds(300)...(.seconds(3))))
        if faults.impostors { schedule(.impostor, at: now + impostorRandom.duration(.milliseconds(500)...(.seconds(4)))) }
        if faults.services { beginServices() }
        if faults.operators { beginOperator() }
        if faultSteps == 0 { beginQuiet() }
    }

    /// Handles the next event; false when nothing is left (which a live cluster never reaches).
    @discardableResult
    func stepOnce() -> Bool {
        guard !finished, let (time, event) = queue.pop() else { return false }
        if time > now { eventsThisInstant = 0 }
        now = max(now, time)
        eventsThisInstant += 1
        if eventsThisInstant > Self.maximumEventsPerInstant {
            // A timer asked for again at the instant it fires, for ever: time stands still.
            violate(.converged, "\(eventsThisInstant) events at one instant: time stands still (a timer that fires and asks for itself again?)")
            finished = true
            return true
        }
        guard let record = handle(event) else { return true }
        step += 1
        if phase == .quiet { quietSteps += 1 }
        remember(record)
        checkAfterStep()
        if violations.isEmpty, phase == .faults, step >= faultSteps { beginQuiet() }
        if violations.isEmpty, phase == .quiet, quietSteps > maximumQuietSteps {
            violate(.converged, "the quiet phase ran \(quietSteps) steps without settling (a livelock?)")
        }
        if !violations.isEmpty { finished = true }
        return true
    }

    func schedule(_ event: Event, at time: Moment) {
        queue.push(event, at: max(time, now))
    }

    /// One event: what happened, as a trace record, or nil when it was stale and changed nothing.
    /// An event of the deposed leader's is handled with it in the manager's place.
    func handle(_ event: Event) -> TraceRecord? {
        if leases != nil, deferredForPause(event) { return nil }
        if let deposed, managerIncarnation(of: event) == deposed.incarnation {
            return asDeposed { handleEvent(event) }
        }
        return handleEvent(event)
    }

    /// The manager process an event is for, when it is for one.
    func managerIncarnation(of event: Event) -> Int? {
        switch event {
        case .managerTimer(_, let incarnation), .managerInput(_, let incarnation), .commit(let incarnation, _): return incarnation
        case .pump(let id, .toManager): return connections[id]?.managerIncarnation
        case .resetNotice(let id, .manager): return connections[id]?.managerIncarnation
        case .established(let id): return connections[id]?.managerIncarnation
        default: return nil
        }
    }

    /// Runs `body` with the deposed leader in the manager's place (its machine, incarnation
    /// and commit queue), and puts the leader back after.
    func asDeposed<T>(_ body: () -> T) -> T {
        guard let old = deposed else { return body() }
        let leader = manager, leaderIncarnation = managerIncarnation, leaderQueue = SimStore.Queue(store)
        manager = old.process
        managerIncarnation = old.incarnation
        old.queue.restore(into: &store)
        let result = body()
        if let process = manager {
            deposed = DeposedManager(process: process, incarnation: old.incarnation, queue: SimStore.Queue(store))
        } else {
            deposed = nil
        }
        manager = leader
        managerIncarnation = leaderIncarnation
        leaderQueue.restore(into: &store)
        return result
    }

    func handleEvent(_ event: Event) -> TraceRecord? {
        switch event {
        case .pump(let connection, let direction): return pump(connection, direction)
        case .established(let connection): return established(connection)
        case .resetNotice(let connection, let side): return resetNotice(connection, side)
        case .handshakeDeadline(let connection): return handshakeDeadline(connection)
        case .dial(let node, let incarnation): return dial(node, incarnation: incarnation)
        case .dialFailed(let node, let incarnation, let reason): return dialFailed(node, incarnation: incarnation, reason: reason)
        case .managerTimer(let token, let incarnation):
            guard let process = manager, incarnation == managerIncarnation, process.timerToken == token else { return nil }
            manager?.timerAt = nil
            return feedManager(.timer)
        case .workerTimer(let node, let token):
            guard let process = nodes[node].process, process.timerToken == token else { return nil }
            nodes[node].process?.timerAt = nil
            return feedWorker(node, .timer)
        case .managerInput(let input, let incarnation):
            guard manager != nil, incarnation == managerIncarnation else { return nil }
            return feedManager(input)
        case .workerInput(let node, let incarnation, let input):
            guard nodes[node].process?.incarnation == incarnation else { return nil }
            return feedWorker(node, input)
        case .startDone(let node, let operation): return startDone(node, operation: operation)
        case .containerExit(let node, let serial, let generation): return containerExit(node, serial: serial, generation: generation)
        case .healthChange(let node, let watch): return healthChange(node, watch: watch)
        case .commit(let incarnation, let token): return commit(incarnation: incarnation, token: token)
        case .managerRestart: return restartManager()
        case .leaseTimer(let slot, let generation, let token): return leaseTimerFired(slot, generation: generation, token: token)
        case .leaseArrive(let slot, let generation, let id, let call): return leaseArrives(slot, generation: generation, id: id, call)
        case .leaseAnswer(let slot, let generation, let id, let input): return leaseAnswered(slot, generation: generation, id: id, input)
        case .leaseDeadline(let slot, let generation, let id): return leaseDeadlinePassed(slot, generation: generation, id: id)
        case .leaseNotify(let slot, let generation):
            guard leases?.slots[slot].generation == generation else { return nil }
            return feedLease(slot, .released)
        case .workerRestart(let node): return restartWorker(node)
        case .heal(let node, let partition): return heal(node, partition: partition)
        case .eventsRestored(let node, let generation): return eventsRestored(node, generation: generation)
        case .chaos: return chaos()
        case .impostor: return impostor()
        case .serviceClient: return serviceRequest()
        case .operatorClient: return operatorRequest()
        case .client: return client()
        case .quietCheck: return quietCheck()
        }
    }

    // MARK: - The manager process

    /// Starts a manager: the first one on an empty store, later ones from what it committed.
    func startManager(fresh: Bool) {
        managerIncarnation += 1
        let snapshot = fresh ? StoreSnapshot(tasks: [], nodes: []) : store.snapshot
        var configuration = managerConfiguration
        configuration.epoch = store.epoch
        let machine = ManagerMachine(configuration: configuration, snapshot: snapshot, now: now, wallOrigin: wallOrigin, seed: random.next())
        manager = ManagerProcess(machine: machine, incarnation: managerIncarnation, epoch: store.epoch)
        store.lastSequence = store.revision
        // A machine asks for its timers in its effects; the first call has to come from the
        // shell: one timer at start, as a shell starts its timer loop.
        schedule(.managerInput(.timer, incarnation: managerIncarnation), at: now)
    }

    func feedManager(_ input: ManagerMachine.Input) -> TraceRecord? {
        guard manager != nil else { return nil }
        let effects = manager!.machine.handle(input, now: now)
        for effect in effects { applyManager(effect) }
        return TraceRecord(step: step + 1, time: now, subject: .manager(input), effects: .manager(effects))
    }

    func applyManager(_ effect: ManagerMachine.Effect) {
        switch effect {
        case .send(let connection, let message): managerSends(message, on: connection)
        case .close(let connection): managerCloses(connection)
        case .persist(let batch): persist(batch)
        case .answer(let request, let answer): answered(request, answer)
        case .wake(let moment): wakeManager(at: moment)
        case .note(.placed(let task, let node)):
            // Placed where the manager's last word from the node said its engine is down.
            if let error = manager?.machine.listNodes().first(where: { $0.id == node })?.engineError {
                violate(.engineDownGetsNothing, "task \(task.short) placed on \(node), whose engine does not answer (\(error))")
            }
            checkPlacement(of: task, on: node)
        case .logData, .logEnd, .logsLost, .note, .catalogChanged: break
        }
    }

    /// Keeps the earliest timer asked for; a later one is left to the machine to ask again.
    func wakeManager(at moment: Moment) {
        guard var process = manager else { return }
        let at = max(moment, now)
        if let pending = process.timerAt, pending <= at { return }
        process.timerToken += 1
        process.timerAt = at
        manager?.timerToken = process.timerToken
        manager?.timerAt = at
        schedule(.managerTimer(token: process.timerToken, incarnation: managerIncarnation), at: at)
    }

    // MARK: - Worker processes

    func feedWorker(_ index: Int, _ input: WorkerMachine.Input) -> TraceRecord? {
        guard nodes[index].process != nil else { return nil }
        switch input {
        case .connected(let welcome): _ = nodes[index].process!.mesh.welcomed(tables: welcome.serviceTables)
        case .received(.serviceTable(let table)): _ = nodes[index].process!.mesh.received(table)
        default: break
        }
        let effects = nodes[index].process!.machine.handle(input, now: now)
        for effect in effects { applyWorker(index, effect) }
        return TraceRecord(step: step + 1, time: now, subject: .worker(index, input), effects: .worker(effects))
    }

    func applyWorker(_ index: Int, _ effect: WorkerMachine.Effect) {
        switch effect {
        case .send(let message): workerSends(index, message)
        case .sendHeartbeat(let sequence):
            let running = nodes[index].process?.machine.runningCount ?? 0
            workerSends(index, .heartbeat(Heartbeat(sequence: sequence, metrics: MachineMetrics(
                cpuMillicoresUsed: UInt32(running * 20), memoryUsedBytes: UInt64(running) * (16 << 20), memoryTotalBytes: Self.workerMemory,
                diskUsedBytes: 1 << 30, diskTotalBytes: 10 << 30, load1Hundredths: UInt32(running * 5), runningTasks: UInt32(running)),
                engineError: nodes[index].process?.machine.engineError)))
        case .start(let task, let attempt, let spec): startContainer(index, task, attempt: attempt, spec: spec)
        case .stop(_, _, let container, let grace): stopContainer(index, container, grace: grace)
        case .remove(let container, _): removeContainer(index, container)
        case .watchHealth(let task, let attempt, let check, _, _): watchHealth(index, task, attempt: attempt, check: check)
        case .unwatchHealth(let task, let attempt): unwatchHealth(index, task, attempt: attempt)
        case .dropConnection: workerDropsConnection(index)
        case .wake(let moment): wakeWorker(index, at: moment)
        case .note: break
        }
    }

    func wakeWorker(_ index: Int, at moment: Moment) {
        guard let pending = nodes[index].process.map({ ($0.timerAt, $0.timerToken) }) else { return }
        let at = max(moment, now)
        if let due = pending.0, due <= at { return }
        let token = pending.1 + 1
        nodes[index].process?.timerToken = token
        nodes[index].process?.timerAt = at
        schedule(.workerTimer(node: index, token: token), at: at)
    }

    /// A worker process starts (at the beginning, or after a crash or a stop): a new machine
    /// adopts what the engine holds for its node, then the process dials the manager.
    func restartWorker(_ index: Int) -> TraceRecord? {
        guard nodes[index].process == nil else { return nil }
        nodes[index].restartPending = false
        nodes[index].incarnation += 1
        let configuration = WorkerMachine.Configuration(node: nodes[index].id, maximumConcurrentStarts: 1 + nodes[index].random.int(0...3))
        let silentFor = nodes[index].lastContact.map { now - $0 }
        if let since = nodes[index].downSince {
            nodes[index].earlierDowntime = nodes[index].lastDowntime
            nodes[index].lastDowntime = (since, now, nodes[index].lastContact)
        }
        nodes[index].process = WorkerProcess(
            machine: WorkerMachine(configuration: configuration, now: now, silentFor: silentFor), incarnation: nodes[index].incarnation)
        if nodes[index].incarnation > 1 { counters.workerRestarts += 1 }
        let record = feedWorker(index, .found(foundContainers(index)))
        scheduleDial(index)
        return record
    }

    // MARK: - Trace

    func remember(_ record: TraceRecord) {
        if recordsFullTrace { fullTrace.append(record.line(self)) }
        if recent.count < Self.recentCount {
            recent.append(record)
        } else {
            recent[recentStart] = record
            recentStart = (recentStart + 1) % Self.recentCount
        }
    }

    /// The last steps, oldest first.
    var recentLines: [String] {
        (0..<recent.count).map { recent[(recentStart + $0) % recent.count].line(self) }
    }

    func simRecord(_ text: String) -> TraceRecord {
        TraceRecord(step: step + 1, time: now, subject: .sim(text), effects: .none)
    }

    func nodeName(_ index: Int) -> String { nodes[index].name }
}

// MARK: - Public results

/// The invariants, by their stable names.
public enum Invariant: String, Sendable, Hashable, CaseIterable {
    case oneCurrentAttempt = "one-current-attempt"
    case noDuplicateWithStopAfter = "no-duplicate-with-stopAfter"
    case acknowledgedTaskKept = "acknowledged-task-kept"
    case reservationsWithinCapacity = "reservations-within-capacity"
    case stoppedStaysStopped = "stopped-stays-stopped"
    case noForgottenPending = "no-forgotten-pending"
    case submissionAnswersConsistent = "submission-answers-consistent"
    case storeBatchesInOrder = "store-batches-in-order"
    case validWorkersAdmitted = "valid-workers-admitted"
    case engineDownGetsNothing = "engine-down-gets-nothing"
    case drainedNodeGetsNothing = "drained-node-gets-nothing"
    case impostorsRefused = "impostors-refused"
    case noStaleCommit = "no-stale-commit"
    case actsWithinLease = "acts-within-lease"
    case oneTaskPerSlotVersion = "one-task-per-slot-version"
    case serviceReplicasKept = "service-replicas-kept"
    case terminalStatusesAcknowledged = "terminal-statuses-acknowledged"
    case converged = "converged"
}

public struct Violation: Sendable, Hashable, CustomStringConvertible {
    public var seed: UInt64
    public var step: Int
    public var time: Moment
    public var invariant: Invariant
    public var message: String
    /// The last steps before it, oldest first.
    public var trace: [String]

    public var description: String { "seed \(seed) step \(step) at \(time) \(invariant.rawValue): \(message)" }
}

public struct SimulationResult: Sendable {
    public var seed: UInt64
    public var steps: Int
    public var simulatedTime: Moment
    public var violations: [Violation]
    /// Every step's line when the trace was recorded in full, else the last few.
    public var trace: [String]
    public var counters: Counters
}

/// What happened in a run, for people (and for tests that a run exercised something).
public struct Counters: Sendable, Hashable, CustomStringConvertible {
    public var submissions = 0
    public var acknowledged = 0
    public var stops = 0
    public var containersStarted = 0
    public var containerExits = 0
    public var connections = 0
    public var resets = 0
    public var partitions = 0
    public var managerCrashes = 0
    public var workerCrashes = 0
    public var workerStops = 0
    public var workerRestarts = 0
    public var storeFailures = 0
    public var eventStreamLosses = 0
    /// Hosts that went away silently, leaving the other side's connection half-open.
    public var halfOpens = 0
    public var impostors = 0
    /// Service requests sent: creations, scalings, new templates (of which made to fail),
    /// policy changes, rollbacks, removals; and the ones answered with the service.
    public var serviceCreates = 0
    public var serviceScales = 0
    public var serviceTemplates = 0
    public var serviceFailingTemplates = 0
    public var servicePolicies = 0
    public var serviceRollbacks = 0
    public var serviceRemovals = 0
    public var serviceAnswers = 0
    /// The operator's drains, undrains and purges answered (``FaultProfile/operators``).
    public var drains = 0
    public var undrains = 0
    public var purges = 0
    /// Leaders deposed while still running (``FaultProfile/leaderChanges``), and their commits fenced off.
    public var leaderChanges = 0
    public var fencedCommits = 0
    /// Leases taken (terms begun), leaders paused, managers cut off from the database.
    public var takeovers = 0
    public var pauses = 0
    public var cutOffs = 0
    public var quietTime: Duration = .zero

    public init() {}

    public var description: String {
        "submissions \(submissions) (acked \(acknowledged)), stops \(stops), containers \(containersStarted) (exits \(containerExits)), "
            + "connections \(connections), resets \(resets), partitions \(partitions), manager crashes \(managerCrashes), "
            + "worker crashes \(workerCrashes), worker stops \(workerStops), store failures \(storeFailures), "
            + "event stream losses \(eventStreamLosses), half-open \(halfOpens), "
            + (impostors > 0 ? "impostors \(impostors), " : "")
            + (serviceCreates > 0
                ? "services: creates \(serviceCreates), scales \(serviceScales), templates \(serviceTemplates) (failing \(serviceFailingTemplates)), "
                    + "policies \(servicePolicies), rollbacks \(serviceRollbacks), removals \(serviceRemovals) (answered \(serviceAnswers)), "
                : "")
            + (drains + undrains + purges > 0 ? "operator: drains \(drains), undrains \(undrains), purges \(purges), " : "")
            + (takeovers > 0 ? "terms \(takeovers), deposed while acting \(leaderChanges) (commits fenced off \(fencedCommits)), pauses \(pauses), cut off \(cutOffs), " : "")
            + "quiet \(DurationText.format(quietTime))"
    }
}

// MARK: - Internal types

enum Phase: Equatable { case faults, quiet }

enum Direction: Hashable { case toManager, toWorker }

enum Side: Hashable { case manager, worker }

enum Event {
    case pump(ConnectionID, Direction)
    case established(ConnectionID)
    case resetNotice(ConnectionID, Side)
    case handshakeDeadline(ConnectionID)
    case dial(node: Int, incarnation: Int)
    case dialFailed(node: Int, incarnation: Int, reason: String)
    case managerTimer(token: UInt64, incarnation: Int)
    case workerTimer(node: Int, token: UInt64)
    case managerInput(ManagerMachine.Input, incarnation: Int)
    case workerInput(node: Int, incarnation: Int, WorkerMachine.Input)
    case startDone(node: Int, operation: Int)
    case containerExit(node: Int, serial: Int, generation: Int)
    case healthChange(node: Int, watch: Int)
    case commit(incarnation: Int, token: Int)
    case managerRestart
    case leaseTimer(slot: Int, generation: Int, token: Int)
    case leaseArrive(slot: Int, generation: Int, call: Int, LeaseBook.Call)
    case leaseAnswer(slot: Int, generation: Int, call: Int, LeaseMachine.Input)
    case leaseDeadline(slot: Int, generation: Int, call: Int)
    case leaseNotify(slot: Int, generation: Int)
    case workerRestart(node: Int)
    case heal(node: Int, partition: Int)
    case eventsRestored(node: Int, generation: Int)
    case chaos
    case impostor
    case serviceClient
    case operatorClient
    case client
    case quietCheck
}

struct ManagerProcess {
    var machine: ManagerMachine
    var incarnation: Int
    /// The lease's epoch it leads with, and its manager's slot (several managers).
    var epoch: UInt64 = 1
    var slot: Int?
    var timerAt: Moment?
    var timerToken: UInt64 = 0
}

/// A leader deposed that has not noticed yet: it runs beside the new one, with its own
/// connections and commit queue, until its clock says stop.
struct DeposedManager {
    var process: ManagerProcess
    var incarnation: Int
    var queue: SimStore.Queue
}

struct WorkerProcess {
    var machine: WorkerMachine
    var incarnation: Int
    var timerAt: Moment?
    var timerToken: UInt64 = 0
    /// The connection being set up or up, if any.
    var connection: ConnectionID?
    /// Dials failed in a row, for the backoff; reset by a welcome.
    var failedDials = 0
    var dialScheduled = false
    /// Its load balancer's plan, fed the welcomes and tables as the real worker feeds it
    /// (`converged` compares what it holds with the manager's tables).
    var mesh = LoadBalancerPlan(settings: .init(bindAddress: "127.0.0.1", socketPath: "/sim/admin.sock"))
}

struct SimNode {
    let index: Int
    let id: NodeID
    let name: String
    var random: SimRandom
    var process: WorkerProcess?
    /// Counts the processes started, so that events of a dead one are told apart.
    var incarnation = 0
    var restartPending = false
    /// When the last process heard from the manager, kept across restarts as a worker's
    /// state directory keeps it.
    var lastContact: Moment?
    /// The last time its process was down, once it is back.
    var lastDowntime: (from: Moment, to: Moment, contact: Moment?)?
    /// The one before it: a late stop begun at its end may still run through the next one.
    var earlierDowntime: (from: Moment, to: Moment, contact: Moment?)?
    var downSince: Moment?
    /// The engine's containers of this node, by serial; they outlive the worker process.
    var containers: [Int: SimContainer] = [:]
    /// Starts the engine is carrying out, by operation number.
    var starts: [Int: PendingStart] = [:]
    var watches: [Int: HealthWatch] = [:]
    var nextHostPort = 32768
    var partition: Partition?
    /// When the last partition healed (contact is counted from then).
    var healedAt: Moment = .zero
    /// While set, the runtime's event stream is broken: exits are not seen until it is back.
    var eventsLost: Int?
    var eventsGeneration = 0

    init(index: Int, random: SimRandom) {
        self.index = index
        id = NodeID(rawValue: "node-\(index + 1)")
        name = "worker-\(index + 1)"
        self.random = random
    }
}

struct Partition {
    enum Mode: String { case hold, drop }
    var id: Int
    var mode: Mode
    var until: Moment
}

/// The kinds of fault the fault phase draws from; all on by default.
public struct FaultProfile: Sendable, Hashable {
    public var connectionResets = true
    public var partitions = true
    public var workerCrashes = true
    public var workerStops = true
    public var managerCrashes = true
    public var storeFailures = true
    public var eventStreamLosses = true
    /// A worker's or the manager's host vanishing without a reset reaching the other side.
    public var halfOpens = true
    /// Clients that claim a node in their hello with no certificate or another node's
    /// (off by default: it draws from a stream of its own, and the seeds recorded before it
    /// stay the runs they were).
    public var impostors = false
    /// A client that creates services, scales them, rolls new templates out (some made to
    /// fail), rolls back and removes them (off by default, with a stream of its own, for the
    /// same reason as ``impostors``).
    public var services = false
    /// An operator who drains nodes (moving their tasks, or not), undrains them and removes
    /// ended tasks with their history (off by default, with a stream of its own, for the
    /// same reason as ``impostors``).
    public var operators = false
    /// Three managers on one database, leading by the lease (`LeaseMachine`), with leaders
    /// paused, managers cut off from the database, a slow database and its clock jumping
    /// (off by default, for the same reason as ``impostors``).
    public var leaderChanges = false
    /// The longest a crashed or stopped worker process stays down.
    public var maximumWorkerDowntime: Duration = .seconds(45)

    public init() {}

    /// No faults at all: a fault phase with clients only.
    public static let none: FaultProfile = {
        var profile = FaultProfile()
        profile.connectionResets = false
        profile.partitions = false
        profile.workerCrashes = false
        profile.workerStops = false
        profile.managerCrashes = false
        profile.storeFailures = false
        profile.eventStreamLosses = false
        profile.halfOpens = false
        return profile
    }()
}

/// Shell faults that no real run has; each makes one invariant fail, for the tests.
struct Sabotage {
    /// The network loses every ack (terminal statuses stay unacknowledged).
    var dropAcks = false
    /// The engine starts every container twice.
    var startTwice = false
    /// The store says committed but keeps nothing of new tasks.
    var storeForgetsTasks = false
    /// A worker that restarts offers a tenth of its capacity.
    var shrinkCapacityOnRestart = false
    /// Starts are never answered.
    var startsHang = false
    /// The network loses every stop_task (stale containers keep running).
    var dropStops = false
    /// Workers say hello with a protocol range the manager does not speak.
    var helloFromTheFuture = false
    /// The shell tells the machine that a connection's certificate names whatever node its
    /// hello claims (it read the hello instead of the certificate).
    var trustTheHello = false
    /// The store keeps every new replica twice (a copy under another id): a manager that
    /// restarts from it has two live tasks for one slot and version.
    var duplicateReplicas = false
    /// The engine cannot start a service's containers (an image no node can pull).
    var replicaStartsFail = false
    /// The network loses every other service table (the mesh's tables go stale).
    var dropServiceTables = false
    /// The store keeps nodes but not their drains (a manager that restarts from it has
    /// forgotten every drain).
    var storeForgetsDrains = false
    /// The store commits a deposed leader's batches (no fence on the epoch).
    var storeIgnoresFence = false
    /// The managers' lease keepers act for 8 s after a renewal, past the 6 s lease.
    var actPastTheLease = false
}
