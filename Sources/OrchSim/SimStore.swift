import OrchCore

/// The manager's durable state as the simulated store keeps it: the committed tasks and
/// nodes (applied as `SQLiteStore` applies them: an insert replaces, a save updates a row
/// that exists and keeps its spec) and the revision, which is the sequence number of the last
/// batch committed. Batches handed over by the manager wait in `queued` until a commit takes
/// all of them at once (group commit); a crash of the manager loses them.
struct SimStore {
    var tasks: [TaskID: TaskRecord] = [:]
    var nodes: [NodeID: NodeRecord] = [:]
    var removedNodes: Set<NodeID> = []
    var services: [String: ServiceRecord] = [:]
    var revision: UInt64 = 0
    var historyLines = 0

    /// Batches of the running manager not committed yet, in order.
    var queued: [StoreBatch] = []
    /// The sequence number of the last batch handed over (the next must be one more).
    var lastSequence: UInt64 = 0
    /// A commit (or its retry) is scheduled; its token tells a stale one from the current.
    var commitScheduled = false
    var commitToken = 0
    /// Commits fail until then (an outage: a full disk, a lost volume).
    var failingUntil: Moment?
    /// Failed commits in a row, for the retry's backoff.
    var failures = 0
    var commits = 0
    var failedCommits = 0
    /// The lease's epoch: the leader's commits carry theirs, and an older one is fenced off.
    var epoch: UInt64 = 1
    var fencedCommits = 0

    /// One manager's part of the commit path (its queue and retry state), kept aside while a
    /// deposed leader still runs beside the new one.
    struct Queue {
        var queued: [StoreBatch]
        var lastSequence: UInt64
        var commitScheduled: Bool
        var commitToken: Int
        var failures: Int

        init(_ store: SimStore) {
            queued = store.queued
            lastSequence = store.lastSequence
            commitScheduled = store.commitScheduled
            commitToken = store.commitToken
            failures = store.failures
        }

        func restore(into store: inout SimStore) {
            store.queued = queued
            store.lastSequence = lastSequence
            store.commitScheduled = commitScheduled
            store.commitToken = commitToken
            store.failures = failures
        }
    }

    /// Applies committed batches, in order.
    mutating func apply(_ batches: [StoreBatch]) {
        for batch in batches {
            for change in batch.changes {
                switch change {
                case .insertTask(let record):
                    tasks[record.id] = record
                case .saveTask(let record):
                    guard let stored = tasks[record.id] else { continue }   // UPDATE of no row
                    var record = record
                    record.spec = stored.spec   // the spec is written once, at the insert
                    tasks[record.id] = record
                case .appendHistory:
                    historyLines += 1
                case .saveNode(let node):
                    nodes[node.id] = node
                case .deleteNode(let id):
                    nodes[id] = nil
                    removedNodes.insert(id)
                case .deleteTask(let id):
                    tasks[id] = nil
                case .saveService(let service):
                    services[service.name] = service
                case .deleteService(let name):
                    services[name] = nil
                }
            }
            revision = batch.sequence
        }
    }

    /// What a manager starting now loads: tasks by creation date then id, nodes by id.
    var snapshot: StoreSnapshot {
        StoreSnapshot(
            tasks: tasks.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) },
            nodes: nodes.values.sorted { $0.id < $1.id },
            revision: revision, removedNodes: removedNodes, services: services.values.sorted { $0.name < $1.name })
    }

    /// The manager crashed: what it had not committed is gone.
    mutating func managerCrashed() {
        queued = []
        commitScheduled = false
        commitToken += 1
        lastSequence = revision
        failures = 0
    }
}
