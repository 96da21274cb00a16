import Foundation
import Logging
import NIOCore
import OrchCore
import OrchStore
import OrchWire

/// The manager's state and its control loop: every task, every node, the scheduler. One
/// actor owns it all; the wire gateway, the REST gateway and the timer call in.
///
/// Every change of a task goes through `TaskRecord.apply` (the one transition table) and
/// into the journal, which one committer writes to the store in order (`Manager.run`).
/// Callers that must not answer before a change is durable (a submission, the ack of a
/// terminal status) wait for the journal's commit.
public actor Cluster {
    struct NodeEntry {
        var record: NodeRecord
        var state: NodeDTO.State
        var link: NodeLink?
        var lastHeartbeat: ContinuousClock.Instant?
        var lastHeartbeatDate: Date?
        var metrics: MachineMetrics?
        /// When the tasks of a node that is not up are given up on (down: now; restarting: the window).
        var tasksLostAt: ContinuousClock.Instant?
        /// Tasks whose current attempt is here and not ended; they reserve its resources.
        var tasks: Set<TaskID> = []
    }

    let configuration: ManagerConfiguration
    let logger: Logger
    let metrics: ManagerMetrics
    let logStreams = LogStreams()
    let clock = ContinuousClock()
    var scheduler: Scheduler

    var tasks: [TaskID: TaskRecord] = [:]
    /// Task ids in the order they were accepted, for listing.
    var order: [TaskID] = []
    /// How many tasks are in each state, kept as they change (for /metrics, without a scan).
    var stateCounts: [TaskState: Int] = [:]
    var nodes: [NodeID: NodeEntry] = [:]
    /// The scheduler's view of the nodes, kept in step with `nodes`.
    var schedulingNodes: [SchedulingNode] = []
    var schedulingIndex: [NodeID: Int] = [:]
    /// Tasks to place at the next pass, in the order they became ready.
    var pending: [TaskID] = []
    /// Tasks found to fit nowhere, oldest first: tried again only when capacity may have appeared.
    var blocked: [TaskID] = []
    /// Tasks in a restart's backoff, with the time each becomes ready.
    var notBefore: [TaskID: ContinuousClock.Instant] = [:]
    /// Whether capacity may have appeared since the last placement pass found nothing.
    var capacityChanged = true

    // The journal: changes not yet handed to the store, and who waits for them.
    var journal: [StoreChange] = []
    var journalWaiters: [CheckedContinuation<Void, any Error>] = []
    let journalSignal: AsyncStream<Void>.Continuation
    nonisolated let journalReady: AsyncStream<Void>


    init(configuration: ManagerConfiguration, snapshot: StoreSnapshot, metrics: ManagerMetrics, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        scheduler = Scheduler(kind: configuration.scheduler)
        (journalReady, journalSignal) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        let now = ContinuousClock.now
        for record in snapshot.nodes {
            // Known from before a restart of the manager: down until it reconnects; its tasks
            // are given up on only if it has not come back within the grace period.
            nodes[record.id] = NodeEntry(record: record, state: .down, tasksLostAt: now + configuration.heartbeatGrace)
        }
        for record in snapshot.tasks {
            tasks[record.id] = record
            order.append(record.id)
            stateCounts[record.state, default: 0] += 1
            if record.state == .pending && record.desiredState == .run { pending.append(record.id) }
            if let node = record.node, record.holdsReservation { nodes[node]?.tasks.insert(record.id) }
        }
        for id in nodes.keys.sorted() {
            guard let entry = nodes[id] else { continue }
            schedulingIndex[id] = schedulingNodes.count
            schedulingNodes.append(Self.schedulingNode(entry, tasks: tasks))
        }
    }

    // MARK: - Journal

    /// Queues changes for the store, in order.
    func persist(_ changes: [StoreChange]) {
        guard !changes.isEmpty else { return }
        journal.append(contentsOf: changes)
        journalSignal.yield()
    }

    /// Queues changes and waits until they (and everything queued before them) are committed.
    func persistAndWait(_ changes: [StoreChange]) async throws {
        persist(changes)
        try await withCheckedThrowingContinuation { journalWaiters.append($0) }
    }

    /// What the committer writes next.
    func takeJournal() -> (changes: [StoreChange], waiters: [CheckedContinuation<Void, any Error>]) {
        defer {
            journal = []
            journalWaiters = []
        }
        return (journal, journalWaiters)
    }

    // MARK: - Task changes

    /// Applies `event` to a task, journals the change and its history line. Illegal events
    /// are logged and refused: nothing changes.
    @discardableResult
    func change(_ id: TaskID, _ event: TaskEvent, now: Date = Date()) -> Bool {
        guard var record = tasks[id] else { return false }
        do {
            try record.apply(event, at: now)
        } catch {
            logger.warning("\(error)", metadata: ["task": "\(id)"])
            return false
        }
        if let before = tasks[id]?.state, before != record.state {
            stateCounts[before, default: 0] -= 1
            stateCounts[record.state, default: 0] += 1
        }
        tasks[id] = record
        metrics.taskEvent(event)
        persist([.saveTask(record), .appendHistory(TaskHistoryEntry(task: id, at: now, state: record.state, message: event.description))])
        return true
    }

    /// Resources go back to the node of the task's current attempt.
    func release(_ id: TaskID) {
        guard let record = tasks[id], let node = record.node, nodes[node]?.tasks.remove(id) != nil else { return }
        adjustReservation(node, by: record.spec, sign: -1)
        capacityChanged = true
    }

    func reserve(_ id: TaskID, on node: NodeID) {
        guard let record = tasks[id], nodes[node]?.tasks.insert(id).inserted == true else { return }
        adjustReservation(node, by: record.spec, sign: 1)
    }

    /// An attempt ended (completed, failed or lost): its resources go back, and its restart
    /// policy decides whether it is placed again (after a backoff) or stays ended.
    func attemptEnded(_ id: TaskID, now: Date = Date()) {
        release(id)
        guard let record = tasks[id] else { return }
        if record.state == .lost && record.desiredState == .stop {
            change(id, .stopRequested, now: now)
            return
        }
        switch RestartDecision.decide(for: record, now: now) {
        case .restart(let after):
            if RestartDecision.effectiveRestartCount(record, now: now) == 0, record.restartCount > 0 {
                tasks[id]?.restartCount = 0
            }
            guard change(id, .requeued(reason: "restarting after \(DurationText.format(after)) (\(record.error ?? record.state.rawValue))"), now: now) else { return }
            enqueuePending(id, after: after)
        case .leave(let reason?):
            if record.state == .lost {
                change(id, .abandoned(reason: reason), now: now)
            } else if var ended = tasks[id] {
                ended.error = "\(ended.error.map { "\($0); " } ?? "")\(reason)"
                tasks[id] = ended
                persist([.saveTask(ended), .appendHistory(TaskHistoryEntry(task: id, at: now, state: ended.state, message: reason))])
            }
        case .leave(nil):
            if record.state == .lost { change(id, .abandoned(reason: record.error ?? "node lost"), now: now) }
        }
    }

    func enqueuePending(_ id: TaskID, after delay: Duration = .zero) {
        if delay > .zero {
            notBefore[id] = clock.now + delay
        } else {
            notBefore[id] = nil
            pending.append(id)
        }
    }
}

extension TaskRecord {
    /// Whether this task's current attempt holds resources on its node.
    var holdsReservation: Bool { node != nil && (state == .scheduled || state == .running || state == .stopping) }
}

/// A live connection to a worker. Messages are written straight to its channel, which keeps
/// them in the order they were sent (the cluster actor sends them one after another); there
/// is no queue or writer task per connection. Closing it closes the connection, so that a
/// worker declared down dials again and rejoins.
final class NodeLink: Sendable {
    let node: NodeID
    private let channel: any Channel

    init(node: NodeID, channel: any Channel) {
        self.node = node
        self.channel = channel
    }

    func send(_ message: WireMessage) { channel.writeAndFlush(message, promise: nil) }
    func close() { channel.close(promise: nil) }
}
