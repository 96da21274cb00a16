import OrchCore

/// The worker's decisions, as one pure state machine: what the manager says (assignments,
/// stops, acks), what the container runtime reports (started, failed, exited), what was found
/// on the engine at start (adoption), and the connection coming and going. Time is an input.
///
/// The `TaskSupervisor` actor (production) and the simulator carry its effects out: they
/// create, start, stop and remove containers, write frames, run health probes and timers,
/// and feed back what happened as inputs.
///
/// Split by concern, one file each: the connection, heartbeats and every deadline
/// (`+Connection`, which also dispatches the inputs), assignments, stops and what the
/// runtime reports (`+Tasks`), taking over the engine's containers (`+Adoption`), and the
/// read-only views (`+Views`).
///
/// Rules it keeps (Protocol/WIRE.md, "Delivery rules"):
/// - an assignment is idempotent on (task, attempt); a newer attempt replaces an older one
///   (the older container is stopped and removed first); an older one is ignored;
/// - a stop names an attempt; a stop for an attempt not held is harmless;
/// - every status is numbered (`status_id` from 1, per worker process, never reused);
///   terminal ones are kept until acknowledged and re-sent after every reconnect, after the
///   task list;
/// - a container found exited on adoption is reported with its exit code;
/// - at most `maximumConcurrentStarts` containers are being started at once;
/// - a connection silent for `managerSilence` is dropped and dialed again;
/// - a task with `disconnect.stopAfter` is stopped once the manager has not been heard from
///   for that long.
public struct WorkerMachine: Sendable {
    public var configuration: Configuration

    var tasks: [TaskID: Held] = [:]
    /// The current attempt of each task held; kept in step with `tasks`.
    var ledger = AssignmentLedger()
    var outbox = StatusOutbox()
    /// Whether the engine's containers were taken over yet: the first `found` adopts them,
    /// later ones only catch exits missed while the runtime's event stream was down.
    var adopted = false
    /// Whether a connection is up (welcomed), and since when the manager was last heard from.
    var connected: Welcome?
    var lastHeard: Moment
    /// The sequence of the last heartbeat sent on this connection (from 1 on each).
    var heartbeatSequence: UInt64 = 0
    var nextHeartbeat: Moment?
    /// Starts waiting for a slot, oldest first; and the attempts being started, each holding
    /// a slot until its start is answered (even when it was replaced meanwhile).
    var startQueue: [TaskID] = []
    var inFlight: Set<AttemptKey> = []
    /// Why the container engine does not answer (nil while it does), and when it was last
    /// lost and back: exits of containers it ran before are explained by its restart.
    public internal(set) var engineError: String?
    var engineLostAt: Moment?
    var engineBackAt: Moment?
    /// The routing mesh's tables, as far as stops go: which tasks are endpoints behind a
    /// published port, and how long each is drained before it is stopped.
    var mesh = MeshDrains()
    /// The newest leader's epoch seen in a welcome: a command from an older one comes from
    /// a deposed leader, and is ignored.
    public internal(set) var newestEpoch: UInt64 = 0

    var now: Moment
    var effects: [Effect] = []

    /// - Parameter silentFor: how long before `now` the previous process of this worker last
    ///   heard from the manager (kept in its state directory), so that a disconnect policy's
    ///   clock does not start again with every restart; nil when unknown (a first start).
    public init(configuration: Configuration, now: Moment, silentFor: Duration? = nil) {
        self.configuration = configuration
        self.now = now
        lastHeard = now - max(silentFor ?? .zero, .zero)
    }

    /// Handles one input at `now`; returns what to do, in order.
    public mutating func handle(_ input: Input, now: Moment) -> [Effect] {
        self.now = max(self.now, now)
        effects = []
        dispatch(input)            // WorkerMachine+Connection.swift
        scheduleWake()
        return effects
    }
}

// MARK: - Inputs and effects

extension WorkerMachine {
    public struct Configuration: Sendable {
        public var node: NodeID
        public var maximumConcurrentStarts: Int
        /// A connection on which nothing was heard for this long is dropped and dialed again.
        public var managerSilence: Duration
        /// The host the health probes reach published ports on when they bind every address.
        public var probeHost: String

        public init(node: NodeID, maximumConcurrentStarts: Int = 4, managerSilence: Duration = .seconds(5), probeHost: String = "127.0.0.1") {
            self.node = node
            self.maximumConcurrentStarts = max(1, maximumConcurrentStarts)
            self.managerSilence = managerSilence
            self.probeHost = probeHost
        }
    }

    /// A container of this node found on the engine: at start (adoption), or listed again
    /// after the runtime's event stream was lost.
    public struct FoundContainer: Sendable, Hashable {
        public var task: TaskID
        public var attempt: UInt64
        public var container: ContainerID
        public var image: String?
        public var running: Bool
        /// Set when it is not running.
        public var exitCode: Int32?
        public var error: String?
        public var ports: [PublishedPort]
        /// The stop grace period and disconnect policy it was created with (from its labels),
        /// so that an adopted container is handled as its task asks before the manager has
        /// sent its spec again.
        public var stopGracePeriod: Duration?
        public var stopAfter: Duration?

        public init(
            task: TaskID, attempt: UInt64, container: ContainerID, image: String?, running: Bool, exitCode: Int32?, error: String?,
            ports: [PublishedPort], stopGracePeriod: Duration? = nil, stopAfter: Duration? = nil
        ) {
            self.stopGracePeriod = stopGracePeriod
            self.stopAfter = stopAfter
            self.task = task
            self.attempt = attempt
            self.container = container
            self.image = image
            self.running = running
            self.exitCode = exitCode
            self.error = error
            self.ports = ports
        }
    }

    public enum Input: Sendable {
        /// What the engine holds for this node (every container labelled with it). The first
        /// one adopts; later ones (after the event stream broke) find exits missed meanwhile.
        case found([FoundContainer])
        /// Containers of attempts held running before a later listing that did not show them:
        /// removed from the engine while its events were not followed.
        case containersGone([ContainerID])
        /// The container engine stopped answering (why), or answers again (nil).
        case engine(error: String?)
        /// The manager welcomed this worker on a new connection.
        case connected(Welcome)
        /// The connection dropped (or was dropped on `dropConnection`).
        case disconnected
        /// A message from the manager (assign_task, stop_task, ack, heartbeat, ...).
        case received(WireMessage)
        /// `start` finished: the container runs with these ports.
        case containerStarted(TaskID, attempt: UInt64, container: ContainerID, ports: [PublishedPort])
        /// `start` failed; `container` is set when it was created before the failure.
        case containerFailed(TaskID, attempt: UInt64, container: ContainerID?, error: String)
        /// The runtime saw the container die (its `die` event).
        case containerExited(TaskID, attempt: UInt64, exitCode: Int32)
        /// A health probe's verdict changed.
        /// With what failed, when it is unhealthy (sent as the status's error).
        case healthChanged(TaskID, attempt: UInt64, TaskHealth, failure: String? = nil)
        /// A stop asked on the worker's own HTTP API (by someone on this host, not by the
        /// manager: it is not contact with the manager, and the manager learns of it from the
        /// statuses that follow).
        case stopRequested(TaskID, attempt: UInt64)
        /// A `wake(at:)` came due (extra timers are harmless).
        case timer
    }

    public enum Effect: Sendable, Hashable {
        /// Write this frame on the connection (dropped by the shell when none is up).
        case send(WireMessage)
        /// Write a heartbeat with this sequence and the machine's metrics, measured by the shell.
        case sendHeartbeat(sequence: UInt64)
        /// Create (pulling the image when missing) and start a container for this attempt;
        /// answer with `containerStarted` or `containerFailed`.
        case start(TaskID, attempt: UInt64, spec: TaskSpec)
        /// Stop this container within `grace` (SIGTERM, then SIGKILL); its exit comes as
        /// `containerExited`.
        case stop(TaskID, attempt: UInt64, container: ContainerID, grace: Duration)
        /// Remove this container (it has exited or is no longer wanted); for an attempt that
        /// ran, keep a copy of the end of its output first (`logs --previous` reads it).
        case remove(ContainerID, keepingOutputOf: OutputOwner? = nil)
        /// Probe this attempt's health on a published port until `unwatchHealth`.
        case watchHealth(TaskID, attempt: UInt64, check: HealthCheck, host: String, port: Int)
        case unwatchHealth(TaskID, attempt: UInt64)
        /// Close the connection (the manager fell silent) and dial again.
        case dropConnection(reason: String)
        /// Feed `.timer` at (or after) this moment.
        case wake(at: Moment)
        case note(Note)
    }

    /// What a shell logs.
    public enum Note: Sendable, Hashable {
        case running(TaskID, attempt: UInt64, ContainerID)
        case exited(TaskID, attempt: UInt64, code: Int32, TaskState)
        case failedToStart(TaskID, attempt: UInt64, String)
        case adopted(TaskID, attempt: UInt64, TaskState)
        case ignoredStaleAssignment(TaskID, attempt: UInt64, current: UInt64)
        /// An assignment or a stop from a deposed leader (its epoch older than the newest seen).
        case ignoredStaleEpoch(WireMessage.Kind, epoch: UInt64, newest: UInt64)
        case stoppedForDisconnect(TaskID, attempt: UInt64, after: Duration)
        case healthPortNotPublished(TaskID, port: Int)
    }

    /// One attempt this worker holds.
    struct Held: Sendable, Hashable {
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
        /// Queued for a start slot, or being created and started.
        var starting = false
        /// An exit seen while starting, applied once the start is answered.
        var exitDuringStart: Int32?
        /// When its start was answered (nil for an adopted container: before this process).
        var startedAt: Moment?
        var watchingHealth = false
        /// For an adopted container, until its spec is known: what its labels said.
        var adoptedGrace: Duration?
        var adoptedStopAfter: Duration?
        /// Told to stop while an endpoint behind a published port: its container is stopped
        /// at this moment, once load balancers have stopped sending it connections.
        var drainUntil: Moment?

        var stopGracePeriod: Duration { spec?.stopGracePeriod ?? adoptedGrace ?? TaskSpec.defaultStopGracePeriod }
        var stopAfter: Duration? { spec.map { $0.disconnect?.stopAfter } ?? adoptedStopAfter }
    }

    /// One attempt of one task, as a start slot is held for it.
    struct AttemptKey: Sendable, Hashable {
        var task: TaskID
        var attempt: UInt64
    }

    /// The attempt whose output a removed container held.
    public struct OutputOwner: Sendable, Hashable {
        public var task: TaskID
        public var attempt: UInt64

        public init(task: TaskID, attempt: UInt64) {
            self.task = task
            self.attempt = attempt
        }
    }
}

/// Which tasks are endpoints of a service that publishes a port, from the `service_table`s
/// the manager sends (WIRE.md, "Service tables"): a stop of one waits for the table's drain.
struct MeshDrains: Sendable, Hashable {
    struct Entry: Sendable, Hashable {
        var index: UInt64
        var drain: Duration
        var tasks: Set<TaskID>
    }

    var services: [String: Entry] = [:]

    /// Takes a table, unless it is older than the one held; one without listeners removes.
    mutating func apply(_ table: ServiceTable) {
        if let held = services[table.service], held.index > table.index { return }
        guard !table.listeners.isEmpty else {
            services[table.service] = nil
            return
        }
        services[table.service] = Entry(index: table.index, drain: table.drain, tasks: Set(table.endpoints.map(\.task)))
    }

    /// How long `task` is drained before it is stopped (nil: it is no endpoint behind a port).
    func drain(of task: TaskID) -> Duration? {
        services.values.filter { $0.tasks.contains(task) && $0.drain > .zero }.map(\.drain).max()
    }
}
