import OrchCore

/// The manager's decisions, as one pure state machine: inputs and the time go in, effects
/// come out (`handle(_:now:)`). It never reads a clock, touches a socket or the store: the
/// `Cluster` actor (production) and the simulator (tests, `orch-sim`) carry its effects out,
/// and both run this same code.
///
/// Split by concern, one file each: membership and liveness (`+Membership`), tasks and
/// reconciliation (`+Tasks`), placement (`+Placement`), the commit path and its
/// acknowledgements (`+Commits`), and the read-only views (`+Views`).
///
/// Every change of a task goes through `TaskRecord.apply` (the one transition table), and
/// every change of durable state is journalled: the changes of one `handle` call leave as one
/// `persist` effect under the next sequence number, which is also the revision of everything
/// it changed. Whatever must not be said before it is durable (the answer to a submission,
/// the ack of a terminal status) waits for `committed(through:)` with that number.
public struct ManagerMachine: Sendable {
    public var configuration: Configuration

    // Membership.
    var nodes: [NodeID: NodeEntry] = [:]
    var connections: [ConnectionID: ConnectionEntry] = [:]
    /// Nodes removed from the cluster: their certificates are refused, their ids not given again.
    var removed: Set<NodeID> = []

    // Tasks.
    var tasks: [TaskID: TaskRecord] = [:]
    /// Task ids in the order they were accepted, for listing.
    var order: [TaskID] = []
    var stateCounts: [TaskState: Int] = [:]

    // Placement.
    var scheduler: Scheduler
    var schedulingNodes: [SchedulingNode] = []
    var schedulingIndex: [NodeID: Int] = [:]
    /// Tasks to place at the next pass, in the order they became ready.
    var ready: [TaskID] = []
    /// Tasks found to fit nowhere, oldest first: tried again when capacity may have appeared.
    var blocked: [TaskID] = []
    /// Tasks in a restart's backoff, with the moment each becomes ready.
    var backoff: [TaskID: Moment] = [:]
    /// Whether capacity may have appeared since a pass last found a task fitting nowhere.
    var capacityChanged = true
    /// Attempts the manager ended whose container may still run, with when to stop waiting
    /// for their worker to confirm it stopped (``endWhenStopped(_:node:)``).
    var confirming: [TaskID: (attempt: Int, deadline: Moment)] = [:]
    /// Attempts of tasks with a disconnect policy moved off a drained node: stopped there
    /// first (they must never run twice), placed elsewhere once their end is known.
    var movingOff: [TaskID: (attempt: Int, node: String)] = [:]

    // Services.
    var services: [String: ServiceRecord] = [:]
    /// Every task kept of each service.
    var serviceTasks: [String: Set<TaskID>] = [:]
    /// Every task kept by its name (tasks of services aside, whose names are their service's):
    /// at most one of each name has not ended.
    var taskNames: [String: Set<TaskID>] = [:]
    /// When ended tasks are next looked at for collection (the retention).
    var nextCollection = Moment.zero
    /// Services to plan at the end of the input.
    var dirtyServices: Set<String> = []
    /// When each service asked to be planned again.
    var serviceWakes: [String: Moment] = [:]
    /// Tasks forgotten in this input, to drop from `order` at its end.
    var forgotten: Set<TaskID> = []
    /// The last attempt of each task forgotten (purged or collected): a task submitted again
    /// under its id goes on from there, so that attempts, the fencing numbers, only go up
    /// for an id (a worker that held the old one refuses a lower attempt, and keeps the
    /// newest container of an id it adopts).
    var attemptFloors: [TaskID: Int] = [:]
    /// Floors were not all kept (from a store with a past, or more forgotten than kept): a
    /// new task with an id given goes on from the revision, above any attempt ever made.
    var floorsLost = false
    static let maximumAttemptFloors = 10_000

    // The catalog (`+Catalog`).
    var catalog: [String: ServiceCatalog] = [:]
    /// Services whose endpoints may have changed in this input.
    var catalogDirty: Set<String> = []
    /// The index of the newest change of any service's endpoints.
    var catalogIndex: UInt64 = 0
    /// The last `service_table` sent for each service that publishes a port (workers hold these).
    var meshTables: [String: ServiceTable] = [:]

    /// The newest changes, for `GET /events` (`+Events`).
    var eventLog = EventLog()

    // Commits.
    var journal: [StoreChange] = []
    /// The sequence number of the last batch handed out, and of the last one committed.
    var issued: UInt64
    var committed: UInt64
    /// Effects held until their batch is durable, in the order they were made.
    var held: [(sequence: UInt64, effect: Effect)] = []
    /// Why the store refuses writes, while it does.
    var storeFailure: String?
    /// Draws the ids of tasks submitted without one.
    var random: SplitMix64

    // The call in progress.
    var now: Moment = .zero
    var effects: [Effect] = []
    /// The wall-clock time of `Moment.zero`: records carry dates, derived from `now`.
    let wallOrigin: Date

    /// A machine resuming from what the store holds. Nodes come back down; their tasks are
    /// given up on only if they do not return within the grace period.
    public init(configuration: Configuration, snapshot: StoreSnapshot, now: Moment, wallOrigin: Date, seed: UInt64) {
        self.configuration = configuration
        random = SplitMix64(seed: seed)
        self.wallOrigin = wallOrigin
        scheduler = Scheduler(kind: configuration.scheduler)
        issued = snapshot.revision
        committed = snapshot.revision
        floorsLost = snapshot.revision > 0
        self.now = now
        removed = snapshot.removedNodes
        for record in snapshot.nodes {
            nodes[record.id] = NodeEntry(record: record, state: .down, tasksLostAt: now + (configuration.resumeGrace ?? configuration.heartbeatGrace))
        }
        for record in snapshot.tasks {
            tasks[record.id] = record
            order.append(record.id)
            stateCounts[record.state, default: 0] += 1
            if record.state == .pending && record.desiredState == .run { ready.append(record.id) }
            if record.state.isTerminal, let stopAfter = record.spec.disconnect?.stopAfter,
               case .restart = RestartDecision.decide(for: record, now: wallOrigin.addingTimeInterval(Double(now.nanoseconds) / 1e9)) {
                // Ended by the manager and waiting for its worker to confirm the stop when the
                // manager went down: it waits again, as long as it would have.
                confirming[record.id] = (record.attempt, now + stopAfter + record.spec.stopGracePeriod + configuration.disconnectMargin)
            }
            if let node = record.node, record.holdsReservation {
                if nodes[node] == nil {
                    // A reservation on a node the store no longer knows: lost at once.
                    nodes[node] = NodeEntry(
                        record: NodeRecord(id: node, name: node.rawValue, addresses: [], capacity: NodeCapacity(millicores: 0, memoryBytes: 0, diskBytes: 0),
                                           labels: [:], joinedAt: wallOrigin, lastSeenAt: wallOrigin),
                        state: .down, tasksLostAt: now)
                }
                nodes[node]?.tasks.insert(record.id)
            }
        }
        for id in nodes.keys.sorted() { addSchedulingNode(id) }
        for record in snapshot.services {
            services[record.name] = record
            serviceTasks[record.name] = []
            dirtyServices.insert(record.name)
            catalogDirty.insert(record.name)
        }
        for record in snapshot.tasks {
            if let service = record.replica?.service { serviceTasks[service, default: []].insert(record.id) }
            if record.replica == nil, let name = record.spec.name { taskNames[name, default: []].insert(record.id) }
        }
        catalogIndex = snapshot.revision
        refreshCatalog()
        effects = []
    }

    /// Handles one input at `now`; returns what to do, in order.
    public mutating func handle(_ input: Input, now: Moment) -> [Effect] {
        self.now = max(self.now, now)
        effects = []
        switch input {
        case .submit(let request, let spec, let by): submit(spec, request: request, by: by)
        case .stop(let request, let id, let by): stop(id, request: request, by: by)
        case .purge(let request, let id, _): purge(id, request: request)
        case .removeNode(let request, let id): removeNode(id, request: request)
        case .drainNode(let request, let id, let drain, let move): drainNode(id, drain: drain, move: move, request: request)
        case .createService(let request, let spec, let by): createService(spec, request: request, by: by)
        case .updateService(let request, let name, let change, let by): updateService(name, change, request: request, by: by)
        case .rollbackService(let request, let name, let by): rollbackService(name, request: request, by: by)
        case .removeService(let request, let name, let by): removeService(name, request: request, by: by)
        case .connected(let connection): connected(connection)
        case .authenticated(let connection, let node): authenticated(connection, as: node)
        case .admit(let request, let node, let renewing): admit(node, renewing: renewing, request: request)
        case .received(let connection, let message): received(message, on: connection)
        case .disconnected(let connection): disconnected(connection)
        case .timer: timer()
        case .committed(let sequence): commitSucceeded(through: sequence)
        case .commitFailed(let sequence, let reason): commitFailed(through: sequence, reason: reason)
        }
        reconcileServices()
        if !forgotten.isEmpty {
            order.removeAll { forgotten.contains($0) }
            forgotten = []
        }
        placePending()
        flushJournal()
        refreshCatalog()
        return effects
    }

    /// The wall-clock time that records carry for `now`.
    var date: Date { wallOrigin.addingTimeInterval(Double(now.nanoseconds) / 1e9) }

    mutating func emit(_ effect: Effect) { effects.append(effect) }

    mutating func note(_ note: Note) { effects.append(.note(note)) }

    mutating func send(_ message: WireMessage, to node: NodeID) {
        guard let connection = nodes[node]?.connection else { return }
        effects.append(.send(connection, message))
    }
}

// MARK: - Inputs, effects, answers

extension ManagerMachine {
    /// The machine's knobs (from `ManagerConfiguration` in production).
    public struct Configuration: Sendable {
        public var scheduler: SchedulerKind
        public var heartbeatInterval: Duration
        /// A node silent this long is down.
        public var heartbeatGrace: Duration
        /// How long a node that said goodbye "restarting" keeps its tasks.
        public var restartWindow: Duration
        /// A connection that has not said hello by then is closed.
        public var handshakeTimeout: Duration
        /// Added to a task's `disconnect.stopAfter` and stop grace period before it is
        /// replaced: its worker's clock and stop take a moment.
        public var disconnectMargin: Duration
        /// The largest frame the cluster protocol carries, and how to measure a task's
        /// assignment against it (the codec lives outside the core).
        public var maximumFrameBytes: Int
        public var assignmentBytes: @Sendable (TaskID, TaskSpec) -> Int
        /// How long a replica with a published port is kept from new connections before its
        /// container is stopped (`service_table.drain`).
        public var meshDrain: Duration = .seconds(2)
        /// How long an ended task (not a service's) is kept after it ended, with its history.
        public var retention: Duration = .seconds(24 * 3600)
        /// At most this many ended tasks (not a service's) are kept; the oldest go first.
        public var retainedEndedTasks = 100_000
        /// The epoch of the leadership term this machine acts in: sent in every welcome,
        /// assignment and stop, so that workers ignore a deposed leader (0: leads alone).
        public var epoch: UInt64 = 0
        /// How long the tasks of the nodes loaded from the store are kept for them to dial
        /// again; nil: the heartbeat grace (a restarted manager). A new leader waits longer:
        /// its workers first find that the old one is gone.
        public var resumeGrace: Duration?

        public init(
            scheduler: SchedulerKind = .epvm, heartbeatInterval: Duration = .seconds(1), heartbeatGrace: Duration = .seconds(5),
            restartWindow: Duration = .seconds(30), handshakeTimeout: Duration = .seconds(10), disconnectMargin: Duration = .seconds(1),
            maximumFrameBytes: Int = 1 << 20, assignmentBytes: @escaping @Sendable (TaskID, TaskSpec) -> Int = { _, _ in 0 }
        ) {
            self.scheduler = scheduler
            self.heartbeatInterval = heartbeatInterval
            self.heartbeatGrace = heartbeatGrace
            self.restartWindow = restartWindow
            self.handshakeTimeout = handshakeTimeout
            self.disconnectMargin = disconnectMargin
            self.maximumFrameBytes = maximumFrameBytes
            self.assignmentBytes = assignmentBytes
        }
    }

    /// What happens to the manager.
    public enum Input: Sendable {
        /// `POST /tasks` (a worker's `submit_task` arrives as a frame instead); `by` names the
        /// API token it came with, for the task's events.
        case submit(RequestID, TaskSpec, by: String? = nil)
        /// `DELETE /tasks/{id}`, by the token named `by`.
        case stop(RequestID, TaskID, by: String? = nil)
        /// `DELETE /tasks/{id}?purge=true`: an ended task removed with its history.
        case purge(RequestID, TaskID, by: String? = nil)
        /// `DELETE /nodes/{id}`.
        case removeNode(RequestID, NodeID)
        /// `POST /nodes/{id}/drain` (`move`: its tasks are moved elsewhere at once) and
        /// `POST /nodes/{id}/undrain`.
        case drainNode(RequestID, NodeID, drain: Bool, move: Bool)
        /// `POST /services`: a new service (the same spec again is the same service).
        case createService(RequestID, ServiceSpec, by: String? = nil)
        /// `PUT /services/{name}`: a new template (a new version and a deploy), replica count or policy.
        case updateService(RequestID, String, ServiceChange, by: String? = nil)
        /// `POST /services/{name}/rollback`: back to the version before, rolling.
        case rollbackService(RequestID, String, by: String? = nil)
        /// `DELETE /services/{name}`: every task stops, then the service is forgotten.
        case removeService(RequestID, String, by: String? = nil)
        /// A worker connected; it must say hello within the handshake timeout.
        case connected(ConnectionID)
        /// The node the connection's certificate names (nil: it presented none); given
        /// before its first message is. A hello is taken only from the node it names.
        case authenticated(ConnectionID, NodeID?)
        /// May a certificate for this node id be issued (a join, or with `renewing` the
        /// node's own renewal)? Answered `admitted` or refused.
        case admit(RequestID, NodeID, renewing: Bool)
        case received(ConnectionID, WireMessage)
        /// A connection ended (closed by either side, or broken).
        case disconnected(ConnectionID)
        /// A `wake(at:)` came due (early or extra timers are harmless).
        case timer
        /// Every batch up to and including this sequence number is durable.
        case committed(through: UInt64)
        /// Writing the batches up to this one failed; the shell keeps them and tries again.
        case commitFailed(through: UInt64, reason: String)
    }

    /// What the manager does.
    public enum Effect: Sendable {
        case send(ConnectionID, WireMessage)
        case close(ConnectionID)
        /// Write these changes, after every earlier batch, in one transaction.
        case persist(StoreBatch)
        case answer(RequestID, Answer)
        /// Feed `.timer` at (or after) this moment; a later wake replaces an earlier one.
        case wake(at: Moment)
        /// Log output of a stream the gateway relays (no decision in it).
        case logData(LogData)
        case logEnd(LogEnd)
        /// Every log stream from this node ends: its connection is gone.
        case logsLost(NodeID, reason: String)
        /// Something worth a log line or a metric.
        case note(Note)
        /// A service's endpoints changed (nil: the service is gone).
        case catalogChanged(String, ServiceCatalog?)
    }

    /// The answer to a request, given once what it reports is durable.
    public enum Answer: Sendable, Hashable {
        case submitted(TaskRecord, created: Bool, revision: UInt64)
        case stopped(TaskRecord, revision: UInt64)
        case purged(TaskID, revision: UInt64)
        case nodeRemoved(revision: UInt64)
        case nodeDrained(revision: UInt64)
        case service(ServiceRecord, created: Bool, revision: UInt64)
        case admitted
        case refused(ClusterError)
    }

    /// What a shell logs or counts.
    public enum Note: Sendable, Hashable {
        case nodeJoined(NodeID, name: String, addresses: [String])
        case nodeRefused(name: String, NodeID, reason: String)
        case nodeReplacedConnection(name: String)
        case nodeDisconnected(name: String)
        case nodeDown(name: String, silentFor: Duration)
        case nodeRestarting(name: String, window: Duration)
        case nodeDraining(name: String)
        case nodeLost(name: String, tasks: Int)
        /// A node's container engine stopped answering (the error) or answers again (nil).
        case nodeEngine(name: String, error: String?)
        case protocolViolation(ConnectionID, String)
        case submitted(TaskID)
        case placed(TaskID, on: NodeID)
        case taskEvent(TaskID, TaskEvent)
        case transitionRefused(String)
        case heartbeat
        case storeFailing(String)
        case storeRecovered
    }
}

/// One connection's end of the manager, for its shell: which node it is, if any yet.
public struct ConnectionID: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (lhs: ConnectionID, rhs: ConnectionID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "c\(rawValue)" }
}

/// A request waiting for its answer.
public struct RequestID: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "r\(rawValue)" }
}

extension TaskRecord {
    /// Whether this task's current attempt holds resources on its node.
    public var holdsReservation: Bool { node != nil && (state == .scheduled || state == .running || state == .stopping) }
}
