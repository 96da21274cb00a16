import Foundation
import Logging
import NIOCore
import OrchControl
import OrchCore
import OrchStore
import OrchWire

/// The manager's shell: it feeds the pure `ManagerMachine` its inputs (requests, frames,
/// connections, timers, commits) with the time, and carries out the effects it returns. It
/// holds no decision of its own: the machine is the only place where they are made, and the
/// simulator drives that same machine.
public actor Cluster {
    let configuration: ManagerConfiguration
    let logger: Logger
    let metrics: ManagerMetrics
    let logStreams = LogStreams()
    private var machine: ManagerMachine
    private let origin = ContinuousClock.now

    /// The connections, by the id the machine knows them by.
    private var links: [ConnectionID: NodeLink] = [:]
    private var nextConnection: UInt64 = 1
    private var waiters: [RequestID: CheckedContinuation<ManagerMachine.Answer, Never>] = [:]
    private var nextRequest: UInt64 = 1

    // The commit path: batches in order, waiting for the committer.
    private var batches: [StoreBatch] = []
    private var committing = false
    private let journalSignal: AsyncStream<Void>.Continuation
    nonisolated let journalReady: AsyncStream<Void>

    /// The earliest moment the machine asked to be woken at.
    private var wakeAt: Moment?

    /// Blocking queries on a service's endpoints, woken when they change or their wait ends.
    private var catalogWatchers: [String: [UInt64: CheckedContinuation<Void, Never>]] = [:]
    private var nextWatcher: UInt64 = 1
    /// Readers of `GET /events` waiting for the next event, woken when one is durable.
    private var eventWatchers: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var lastEventWoken: UInt64 = 0
    /// Set when the manager stops: readers of the events stream end.
    private(set) var closing = false

    /// Whether this manager acts: alone (its store is its own), as the leader of a term, or
    /// not at all (it follows another, or nobody leads).
    enum Term: Sendable, Hashable {
        case alone
        case leading(epoch: Int64)
        case following
    }
    private(set) var term: Term
    /// The epoch whose state is being loaded: ``lead(snapshot:epoch:)`` takes over only for it.
    private var takingOver: Int64?
    /// One more at every change of term: answers of the committer from an older term are
    /// ignored.
    private var generation: UInt64 = 0

    /// Who leads, for the gateways: updated here when this manager starts or stops acting.
    nonisolated let directory: LeaderDirectory

    init(configuration: ManagerConfiguration, snapshot: StoreSnapshot, directory: LeaderDirectory, metrics: ManagerMetrics, logger: Logger) {
        self.configuration = configuration
        self.directory = directory
        self.logger = logger
        self.metrics = metrics
        (journalReady, journalSignal) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        term = directory.info.alone ? .alone : .following
        machine = Self.makeMachine(configuration, snapshot: snapshot, epoch: 0)
        wakeAt = machine.nextWake()
    }

    private static func makeMachine(_ configuration: ManagerConfiguration, snapshot: StoreSnapshot, epoch: UInt64) -> ManagerMachine {
        var machineConfiguration = ManagerMachine.Configuration(
            scheduler: configuration.scheduler, heartbeatInterval: configuration.heartbeatInterval,
            heartbeatGrace: configuration.heartbeatGrace, restartWindow: configuration.restartWindow,
            maximumFrameBytes: configuration.maximumFrameBytes,
            assignmentBytes: { id, spec in Frame.encode(.assignTask(AssignTask(task: id, attempt: 1, spec: spec))).readableBytes - 4 })
        machineConfiguration.retention = configuration.retention
        machineConfiguration.retainedEndedTasks = configuration.retainedEndedTasks
        machineConfiguration.epoch = epoch
        // A new leader keeps the tasks of its nodes for the restart window while they dial it.
        if epoch > 0 { machineConfiguration.resumeGrace = max(configuration.restartWindow, configuration.heartbeatGrace) }
        return ManagerMachine(
            configuration: machineConfiguration,
            snapshot: snapshot, now: .zero, wallOrigin: Date(), seed: UInt64.random(in: .min ... .max))
    }

    // MARK: - Terms

    /// Whether this manager acts (it leads, alone or by the lease).
    var isActing: Bool { term != .following }

    /// The term's generation: a stream begun in one ends when it does.
    var termGeneration: UInt64 { generation }

    /// Whether a stream begun in term `generation` goes on: the manager is not stopping and
    /// is still in that term (a leader that steps down ends its streams; the client asks
    /// again, and is sent to the new leader).
    func serves(_ generation: UInt64) -> Bool { !closing && self.generation == generation && isActing }

    /// The lease was taken with `epoch`: its state is being loaded. Until
    /// ``lead(snapshot:epoch:)``, nothing is served.
    func takeOver(epoch: Int64) { takingOver = epoch }

    /// Leads with `epoch` from `snapshot` (loaded after the lease was taken): a new machine,
    /// as after a restart; the workers are reconciled as they dial. False when this term
    /// ended meanwhile.
    func lead(snapshot: StoreSnapshot, epoch: Int64) -> Bool {
        guard takingOver == epoch, term == .following else { return false }
        takingOver = nil
        generation += 1
        batches = []
        committing = false
        machine = Self.makeMachine(configuration, snapshot: snapshot, epoch: UInt64(epoch))
        wakeAt = machine.nextWake()
        term = .leading(epoch: epoch)
        directory.update {
            $0.acting = true
            $0.epoch = epoch
            $0.leader = $0.name
            $0.leaderEpoch = epoch
        }
        lastEventWoken = machine.lastEvent
        wakeEventWatchers()
        return true
    }

    /// Stops acting at once: every worker's connection is closed (they dial the new leader),
    /// every request waiting is refused, nothing more is sent or written; what was not yet
    /// committed is dropped (the next leader works from the store).
    func stepDown(reason: String) {
        takingOver = nil
        guard case .leading = term else { return }
        term = .following
        directory.update {
            $0.acting = false
            $0.epoch = nil
            if $0.leader == $0.name { $0.leader = nil }
        }
        generation += 1
        let dropped = batches.count
        batches = []
        committing = false
        for link in links.values { link.close() }
        links = [:]
        refuseWaiting("this manager stopped leading (\(reason)); ask the leader")
        logStreams.finishAll(reason: "this manager stopped leading")
        machine = Self.makeMachine(configuration, snapshot: StoreSnapshot(tasks: [], nodes: []), epoch: 0)
        wakeAt = nil
        logger.warning("stopped leading: \(reason)\(dropped > 0 ? "; \(dropped) batches not written are dropped" : "")")
    }

    private func refuseWaiting(_ reason: String) {
        for (_, waiter) in waiters { waiter.resume(returning: .refused(.unavailable(reason))) }
        waiters = [:]
        for watcher in catalogWatchers.values.flatMap(\.values) { watcher.resume() }
        catalogWatchers = [:]
        wakeEventWatchers()
    }

    /// The machine's clock: monotonic, from this shell's start.
    private var now: Moment { Moment(nanoseconds: (ContinuousClock.now - origin).nanoseconds) }

    // MARK: - Inputs

    /// Feeds one input and carries out what the machine decided.
    private func feed(_ input: ManagerMachine.Input) {
        perform(machine.handle(input, now: now))
        let last = machine.lastEvent
        if last != lastEventWoken {
            lastEventWoken = last
            wakeEventWatchers()
        }
    }

    private func wakeEventWatchers() {
        let watchers = eventWatchers
        eventWatchers = [:]
        for watcher in watchers.values { watcher.resume() }
    }

    /// Feeds a request and waits for its answer (given once what it reports is durable):
    /// what `expected` takes from it, or the refusal it was.
    private func ask<Value>(
        _ make: (RequestID) -> ManagerMachine.Input, _ expected: (ManagerMachine.Answer) -> Value?
    ) async throws(ClusterError) -> Value {
        guard isActing else { throw .unavailable("this manager does not lead") }
        let request = RequestID(rawValue: nextRequest)
        nextRequest += 1
        let answer = await withCheckedContinuation { continuation in
            waiters[request] = continuation
            feed(make(request))
        }
        if let value = expected(answer) { return value }
        if case .refused(let error) = answer { throw error }
        throw .unavailable("unexpected answer \(answer)")
    }

    func submit(_ spec: TaskSpec, by caller: String? = nil) async throws(ClusterError) -> (record: TaskRecord, created: Bool, revision: UInt64) {
        try await ask({ .submit($0, spec, by: caller) }) { if case .submitted(let record, let created, let revision) = $0 { (record, created, revision) } else { nil } }
    }

    func stop(_ id: TaskID, by caller: String? = nil) async throws(ClusterError) -> (record: TaskRecord, revision: UInt64) {
        try await ask({ .stop($0, id, by: caller) }) { if case .stopped(let record, let revision) = $0 { (record, revision) } else { nil } }
    }

    func purge(_ id: TaskID, by caller: String? = nil) async throws(ClusterError) -> UInt64 {
        try await ask({ .purge($0, id, by: caller) }) { if case .purged(_, let revision) = $0 { revision } else { nil } }
    }

    func drainNode(_ id: NodeID, drain: Bool, move: Bool) async throws(ClusterError) -> UInt64 {
        try await ask({ .drainNode($0, id, drain: drain, move: move) }) { if case .nodeDrained(let revision) = $0 { revision } else { nil } }
    }

    func removeNode(_ id: NodeID) async throws(ClusterError) -> UInt64 {
        try await ask({ .removeNode($0, id) }) { if case .nodeRemoved(let revision) = $0 { revision } else { nil } }
    }

    func createService(_ spec: ServiceSpec, by caller: String? = nil) async throws(ClusterError) -> (record: ServiceRecord, created: Bool, revision: UInt64) {
        try await ask({ .createService($0, spec, by: caller) }) { if case .service(let record, let created, let revision) = $0 { (record, created, revision) } else { nil } }
    }

    func updateService(_ name: String, _ change: ServiceChange, by caller: String? = nil) async throws(ClusterError) -> (record: ServiceRecord, revision: UInt64) {
        try await ask({ .updateService($0, name, change, by: caller) }) { if case .service(let record, _, let revision) = $0 { (record, revision) } else { nil } }
    }

    func rollbackService(_ name: String, by caller: String? = nil) async throws(ClusterError) -> (record: ServiceRecord, revision: UInt64) {
        try await ask({ .rollbackService($0, name, by: caller) }) { if case .service(let record, _, let revision) = $0 { (record, revision) } else { nil } }
    }

    func removeService(_ name: String, by caller: String? = nil) async throws(ClusterError) -> (record: ServiceRecord, revision: UInt64) {
        try await ask({ .removeService($0, name, by: caller) }) { if case .service(let record, _, let revision) = $0 { (record, revision) } else { nil } }
    }

    /// A new connection: the machine gives it an id and a deadline for its hello. Nil while
    /// this manager does not act: the gateway refuses it, naming the leader.
    func connected(_ channel: any Channel) -> ConnectionID? {
        guard isActing else { return nil }
        let id = ConnectionID(rawValue: nextConnection)
        nextConnection += 1
        links[id] = NodeLink(connection: id, channel: channel)
        feed(.connected(id))
        return id
    }

    /// Who the connection's certificate names (nil: none), before its first message goes in.
    func authenticated(_ connection: ConnectionID, as node: NodeID?) {
        guard links[connection] != nil else { return }
        feed(.authenticated(connection, node))
    }

    /// Whether a certificate for `node` may be issued (the machine's rule).
    func admit(_ node: NodeID, renewing: Bool) async throws(ClusterError) {
        try await ask({ .admit($0, node, renewing: renewing) }) { if case .admitted = $0 { () } else { nil } }
    }

    func received(_ message: WireMessage, on connection: ConnectionID) {
        guard links[connection] != nil else { return }
        feed(.received(connection, message))
    }

    func disconnected(_ connection: ConnectionID) {
        guard let link = links.removeValue(forKey: connection) else { return }
        link.close()
        feed(.disconnected(connection))
    }

    /// The timer's work: fires when the earliest wake the machine asked for has come.
    func tick() {
        guard isActing, let due = wakeAt, due <= now else { return }
        wakeAt = nil
        feed(.timer)
    }

    // MARK: - Effects

    private func perform(_ effects: [ManagerMachine.Effect]) {
        for effect in effects {
            switch effect {
            case .send(let connection, let message):
                guard let link = links[connection] else { continue }
                if !link.send(message) {
                    // A node that does not read: its buffered frames are bounded, then it is cut off.
                    logger.warning("a worker does not read what is sent to it; closing its connection", metadata: ["connection": "\(connection)"])
                    links[connection] = nil
                    link.close()
                    perform(machine.handle(.disconnected(connection), now: now))
                }
            case .close(let connection):
                links.removeValue(forKey: connection)?.close()
            case .persist(let batch):
                guard isActing else { continue }
                batches.append(batch)
                journalSignal.yield()
            case .answer(let request, let answer):
                waiters.removeValue(forKey: request)?.resume(returning: answer)
            case .wake(let moment):
                if wakeAt.map({ moment < $0 }) ?? true { wakeAt = moment }
            case .logData(let data):
                logStreams.deliver(data)
            case .logEnd(let end):
                logStreams.finish(end.streamID, error: end.error)
            case .logsLost(let node, let reason):
                logStreams.finishAll(from: node, reason: reason)
            case .note(let note):
                record(note)
            case .catalogChanged(let name, _):
                for (_, watcher) in catalogWatchers.removeValue(forKey: name) ?? [:] { watcher.resume() }
            }
        }
    }

    private func record(_ note: ManagerMachine.Note) {
        switch note {
        case .nodeJoined(let id, let name, let addresses):
            logger.info("node \(name) (\(id)) joined from \(addresses.joined(separator: ", "))")
        case .nodeRefused(let name, let id, let reason):
            logger.warning("refused node \(name) (\(id)): \(reason)")
        case .nodeReplacedConnection(let name):
            logger.info("node \(name) dialed again; its old connection is closed")
        case .nodeDisconnected(let name):
            logger.info("node \(name) disconnected")
        case .nodeDown(let name, let silent):
            logger.warning("node \(name) was silent for \(DurationText.format(silent)): down")
        case .nodeRestarting(let name, let window):
            logger.info("node \(name) is restarting; its tasks are kept for \(DurationText.format(window))")
        case .nodeDraining(let name):
            logger.info("node \(name) is draining; its tasks move")
        case .nodeLost(let name, let count):
            logger.warning("node \(name) is lost with \(count) task\(count == 1 ? "" : "s")")
        case .nodeEngine(let name, let error?):
            logger.warning("node \(name): its container engine does not answer; nothing is placed there (\(error))")
        case .nodeEngine(let name, nil):
            logger.info("node \(name): its container engine answers again")
        case .protocolViolation(let connection, let text):
            logger.warning("closing a connection: \(text)", metadata: ["connection": "\(connection)"])
        case .submitted:
            metrics.submitted()
        case .placed:
            metrics.placed()
        case .taskEvent(let id, let event):
            metrics.taskEvent(event)
            logger.debug("\(event)", metadata: ["task": "\(id)"])
        case .transitionRefused(let text):
            logger.warning("\(text)")
        case .heartbeat:
            metrics.heartbeat()
        case .storeFailing(let reason):
            logger.error("writing the state failed: \(reason); retrying, and refusing changes meanwhile")
        case .storeRecovered:
            logger.notice("the state is written again")
        }
    }

    // MARK: - The commit path

    /// What the committer writes next: every batch waiting (one transaction), the epoch
    /// that fences it (nil when this manager leads alone), and the term's generation.
    struct Commit: Sendable {
        var batches: [StoreBatch]
        var fence: Int64?
        var generation: UInt64
    }

    /// The batches to write next, or nil when none wait.
    func takeBatches() -> Commit? {
        guard !batches.isEmpty, isActing else {
            committing = false
            return nil
        }
        committing = true
        defer { batches = [] }
        var fence: Int64?
        if case .leading(let epoch) = term { fence = epoch }
        return Commit(batches: batches, fence: fence, generation: generation)
    }

    func committed(_ commit: Commit) {
        guard commit.generation == generation else { return }
        feed(.committed(through: commit.batches.last?.sequence ?? 0))
    }

    /// The write failed: the batches go back in front, to be tried again (in the same term).
    func commitFailed(_ commit: Commit, reason: String) {
        guard commit.generation == generation else { return }
        batches = commit.batches + batches
        feed(.commitFailed(through: commit.batches.last?.sequence ?? 0, reason: reason))
    }

    /// Whether every batch handed out so far is written.
    var isCommitted: Bool { batches.isEmpty && !committing }

    /// Answers every request still waiting (the manager is stopping).
    func abandonRequests(reason: String) {
        closing = true
        refuseWaiting(reason)
    }

    // MARK: - Views

    func task(_ id: TaskID) -> TaskRecord? { machine.task(id) }
    func taskTable() -> TaskTable { machine.taskTable }
    func resolveTask(_ text: String) throws(ClusterError) -> TaskID { try machine.resolveTask(text) }
    func resolveNode(_ text: String) throws(ClusterError) -> NodeID { try machine.resolveNode(text) }
    func listNodes() -> [NodeDTO] { machine.listNodes() }
    func node(_ id: NodeID) -> NodeDTO? { machine.node(id) }
    func isConnected(_ node: NodeID) -> Bool { machine.isConnected(node) }
    func counts() -> (tasksByState: [TaskState: Int], nodesByState: [NodeDTO.State: Int]) { machine.counts() }
    var revision: UInt64 { machine.revision }
    var storeProblem: String? { machine.storeProblem }

    func service(_ name: String) -> ServiceRecord? { machine.service(name) }
    func serviceDTO(_ record: ServiceRecord, withTasks: Bool = true) -> ServiceDTO { machine.serviceDTO(record, withTasks: withTasks) }
    func listServices() -> [ServiceDTO] { machine.listServices() }

    /// The endpoints of `service`; given the `index` a caller has, as soon as they differ
    /// from it, or after `wait` with what there is then (a blocking query).
    func endpoints(of service: String, index: UInt64?, wait: Duration) async throws(ClusterError) -> ServiceCatalog {
        let current = try machine.endpoints(of: service)
        guard let index, current.index == index, wait > .zero else { return current }
        let id = nextWatcher
        nextWatcher += 1
        let expiry = Task { [weak self] in
            try? await Task.sleep(for: wait)
            await self?.expireWatcher(id, of: service)
        }
        await withCheckedContinuation { catalogWatchers[service, default: [:]][id] = $0 }
        expiry.cancel()
        return try machine.endpoints(of: service)
    }

    /// The events after `id` that match; when there are none yet, as soon as there is one
    /// more (matching or not: the page's `last` moves on) or after `wait`. Without `id`, the
    /// newest `limit` events.
    func events(after id: UInt64?, limit: Int, task: TaskID?, node: NodeID?, service: String?, wait: Duration) async -> EventPageDTO {
        guard let id else {
            var page = machine.events(after: 0, limit: .max, task: task, node: node, service: service)
            page.events = Array(page.events.suffix(limit))
            return page
        }
        let page = machine.events(after: id, limit: limit, task: task, node: node, service: service)
        guard page.events.isEmpty, !page.gap, wait > .zero, !closing, page.last == machine.lastEvent else { return page }
        let watcher = nextWatcher
        nextWatcher += 1
        let expiry = Task { [weak self] in
            try? await Task.sleep(for: wait)
            await self?.expireEventWatcher(watcher)
        }
        await withCheckedContinuation { eventWatchers[watcher] = $0 }
        expiry.cancel()
        return machine.events(after: page.last, limit: limit, task: task, node: node, service: service)
    }

    private func expireEventWatcher(_ id: UInt64) {
        eventWatchers.removeValue(forKey: id)?.resume()
    }

    /// The id of the newest durable event: where a stream that starts now begins.
    var lastEvent: UInt64 { machine.lastEvent }

    private func expireWatcher(_ id: UInt64, of service: String) {
        catalogWatchers[service]?.removeValue(forKey: id)?.resume()
    }

    func dto(_ record: TaskRecord, events: [TaskHistoryEntry]? = nil) -> TaskDTO {
        TaskDTO(record, nodeName: record.node.flatMap { machine.nodeName($0) }, events: events, backoffUntil: machine.backoffUntil(record.id))
    }

    /// Asks the worker that runs `id` (or, with `previous`, ran its last ended attempt) for
    /// its output; the link to grant credit and end it.
    func openLogs(_ id: TaskID, tail: Int?, follow: Bool, previous: Bool) throws(ClusterError) -> (stream: UInt64, events: AsyncStream<LogStreams.Event>, link: NodeLink) {
        let source = try machine.logSource(of: id, previous: previous)
        guard let link = links[source.connection] else { throw .noLogs("the node of task \(id) is not connected") }
        let (stream, events) = logStreams.open(from: source.node)
        link.send(.logRequest(LogRequest(
            streamID: stream, task: id, tail: tail.map { UInt32(clamping: max($0, 0)) }, follow: follow, credit: LogStreams.credit,
            attempt: UInt64(source.attempt))))
        return (stream, events, link)
    }
}

/// A live connection to a worker. Messages are written straight to its channel, which keeps
/// them in the order they were sent (the cluster actor sends them one after another); there
/// is no queue or writer task per connection.
final class NodeLink: Sendable {
    let connection: ConnectionID
    private let channel: any Channel

    init(connection: ConnectionID, channel: any Channel) {
        self.connection = connection
        self.channel = channel
    }

    /// Writes `message`; false when the connection has not drained what it holds past the
    /// high-water mark (a node that does not read), and nothing was written.
    @discardableResult
    func send(_ message: WireMessage) -> Bool {
        guard channel.isWritable || !channel.isActive else { return false }
        channel.writeAndFlush(message, promise: nil)
        return true
    }

    func close() { channel.close(promise: nil) }
}
