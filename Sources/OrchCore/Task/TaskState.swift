/// Where a task is in its life, as the manager observes it.
///
/// The one transition table is ``TaskState/transitions``; every change of a task's state
/// goes through ``TaskState/canTransition(to:)``, and an illegal change is refused.
public enum TaskState: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    /// Accepted and waiting for a node (none fits yet, or a restart's backoff runs).
    case pending
    /// Assigned to a node; its container is being created and started.
    case scheduled
    /// Its container runs.
    case running
    /// A user asked it to stop; its container is being stopped.
    case stopping
    /// It ended: exit 0, or any exit after a user's stop.
    case completed
    /// It ended badly: a non-zero exit, a container that could not start, or given up on.
    case failed
    /// Its node went down; it is placed again or fails, as its restart policy says.
    case lost

    /// The legal transitions, from each state to the states it may become. No state
    /// becomes itself: an update that keeps the state (a health change) is no transition.
    ///
    /// - pending → scheduled (placed), completed (stopped before it ran), failed (given up)
    /// - scheduled → pending (the node refused it), running, stopping, completed (a one-shot
    ///   that ended before it was seen running), failed (could not start), lost
    /// - running → stopping, completed, failed, lost
    /// - stopping → completed, lost
    /// - completed → pending (restarted by the `always` policy)
    /// - failed → pending (restarted by its policy)
    /// - lost → pending (placed again), running (its node came back in time), completed
    ///   (stopped meanwhile), failed (its policy gives up)
    public static let transitions: [TaskState: Set<TaskState>] = [
        .pending: [.scheduled, .completed, .failed],
        .scheduled: [.pending, .running, .stopping, .completed, .failed, .lost],
        .running: [.stopping, .completed, .failed, .lost],
        .stopping: [.completed, .lost],
        .completed: [.pending],
        .failed: [.pending],
        .lost: [.pending, .running, .completed, .failed],
    ]

    /// Whether the table allows this state to become `next`.
    public func canTransition(to next: TaskState) -> Bool {
        Self.transitions[self]?.contains(next) ?? false
    }

    /// Completed and failed tasks have no container running for them.
    public var isTerminal: Bool { self == .completed || self == .failed }

    /// Cube's integer for this state, for Cube's clients (stopping and lost have none there).
    public var cubeValue: Int {
        switch self {
        case .pending: 0
        case .scheduled: 1
        case .running, .stopping: 2
        case .completed: 3
        case .failed, .lost: 4
        }
    }

    public static func < (lhs: TaskState, rhs: TaskState) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// What the user wants of a task.
public enum DesiredState: String, Sendable, Hashable, Codable {
    case run, stop
}

/// The health of a task's container as its check sees it.
public enum TaskHealth: String, Sendable, Hashable, Codable {
    /// The task has no health check.
    case none
    /// Checked, but not passed yet.
    case starting
    case healthy
    case unhealthy
}
