import Foundation

/// A service: a named, versioned task template kept at `replicas` running copies, changed
/// by rolling deploys under its update policy (docs/SERVICES.md).
public struct ServiceSpec: Sendable, Hashable {
    public var name: String
    public var replicas: Int
    /// The task file's fields, without `id` (each replica gets its own).
    public var task: TaskSpec
    public var update: UpdatePolicy

    public init(name: String, replicas: Int, task: TaskSpec, update: UpdatePolicy = UpdatePolicy()) {
        self.name = name
        self.replicas = replicas
        self.task = task
        self.update = update
    }
}

/// How a new version replaces the old one.
public struct UpdatePolicy: Sendable, Hashable {
    public enum Order: String, Sendable, Hashable, CaseIterable {
        /// The new task of a slot starts before the old one stops (never fewer replicas).
        case startFirst = "start-first"
        /// The old task stops first (never more replicas than wanted, nor more resources).
        case stopFirst = "stop-first"
    }

    /// Slots replaced at a time.
    public var parallelism: Int
    public var order: Order
    /// A new task must be running, and passing its health check if it has one, within this.
    public var healthyDeadline: Duration
    /// A new task counts as good once healthy for this long; the next batch starts then.
    public var minHealthyTime: Duration
    /// On a failed deploy, go back to the previous version the same way.
    public var autoRollback: Bool

    public init(
        parallelism: Int = 1, order: Order = .startFirst, healthyDeadline: Duration = .seconds(60),
        minHealthyTime: Duration = .seconds(5), autoRollback: Bool = true
    ) {
        self.parallelism = parallelism
        self.order = order
        self.healthyDeadline = healthyDeadline
        self.minHealthyTime = minHealthyTime
        self.autoRollback = autoRollback
    }
}

/// A version of a service's template: 1 for the first, one more for each change.
public typealias ServiceVersion = Int

/// One replica's task as the reconciler sees it.
public struct ReplicaView: Sendable, Hashable {
    public var task: TaskID
    /// `NAME.slot`: a slot keeps its number across replacements.
    public var slot: Int
    public var version: ServiceVersion
    public var node: NodeID?
    public var phase: Phase
    /// When the task was created (its healthy deadline counts from here).
    public var createdAt: Moment
    /// Since when it has been running and healthy (running, for a task without a check).
    public var healthySince: Moment?
    /// When it ended, if it has.
    public var endedAt: Moment?
    /// Why it failed, if it did (for the deploy's reason).
    public var error: String?

    public enum Phase: Sendable, Hashable {
        /// Pending, scheduled or running: it is, or will be, a copy of the service.
        case live
        /// Asked to stop, not ended yet.
        case stopping
        /// Ended: failed or lost (`failed`), or completed.
        case ended(failed: Bool)
    }

    public init(task: TaskID, slot: Int, version: ServiceVersion, node: NodeID? = nil, phase: Phase, createdAt: Moment, healthySince: Moment? = nil, endedAt: Moment? = nil, error: String? = nil) {
        self.task = task
        self.slot = slot
        self.version = version
        self.node = node
        self.phase = phase
        self.createdAt = createdAt
        self.healthySince = healthySince
        self.endedAt = endedAt
        self.error = error
    }

    public var isLive: Bool { phase == .live }
    public var hasEnded: Bool { if case .ended = phase { true } else { false } }
}

/// A deploy: from one version to another, rolling, and how it stands.
public struct Deploy: Sendable, Hashable {
    public enum State: String, Sendable, Hashable {
        case running
        case succeeded
        case failed
        /// Going back to `from` after a failure (autoRollback, or asked for).
        case rollingBack = "rolling-back"
        case rolledBack = "rolled-back"
    }

    public var from: ServiceVersion
    public var to: ServiceVersion
    public var state: State
    public var startedAt: Moment
    /// Why it failed, when it did.
    public var reason: String?
    /// It goes back to `from` (rolling back, rolled back, or a rollback that failed).
    public var rollback: Bool

    public init(from: ServiceVersion, to: ServiceVersion, state: State = .running, startedAt: Moment, reason: String? = nil, rollback: Bool? = nil) {
        self.from = from
        self.to = to
        self.state = state
        self.startedAt = startedAt
        self.reason = reason
        self.rollback = rollback ?? (state == .rollingBack || state == .rolledBack)
    }

    /// The version the slots are being brought to now: `from` once it goes back (a rollback
    /// that fails too keeps the old version, never the one that failed).
    public var target: ServiceVersion { rollback ? from : to }
    public var isActive: Bool { state == .running || state == .rollingBack }
}
