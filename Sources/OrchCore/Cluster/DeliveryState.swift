/// The worker's side of status delivery (WIRE.md, "Delivery rules"): numbers every status,
/// keeps the terminal ones until the manager acknowledges them, and gives back what must
/// be re-sent after a reconnect. Pure: the connection code sends what it returns.
public struct StatusOutbox: Sendable, Hashable {
    private var nextID: UInt64 = 1
    /// Terminal statuses not yet acknowledged, by status id.
    public private(set) var unacknowledged: [UInt64: TaskStatus] = [:]

    public init() {}

    /// Numbers `status` for sending; a terminal one is kept until acknowledged.
    public mutating func enqueue(_ status: TaskStatus) -> TaskStatus {
        var status = status
        status.statusID = nextID
        nextID += 1
        if status.state.isTerminal { unacknowledged[status.statusID] = status }
        return status
    }

    /// The manager recorded `statusID`; an unknown or repeated id changes nothing.
    public mutating func acknowledge(_ statusID: UInt64) {
        unacknowledged[statusID] = nil
    }

    /// What to send again after a reconnect, oldest first.
    public var resend: [TaskStatus] {
        unacknowledged.keys.sorted().map { unacknowledged[$0]! }
    }
}

/// The worker's record of the attempts it holds, so that a re-sent assignment never starts
/// a second container and a stop for an attempt that is not current is harmless.
public struct AssignmentLedger: Sendable, Hashable {
    /// The current attempt of each task this worker holds.
    public private(set) var current: [TaskID: UInt64] = [:]
    /// The highest attempt of each task this worker has held and let go: an assignment of it
    /// (or of an older one) arriving later, sent before its end was known, is stale.
    public private(set) var ended: [TaskID: UInt64] = [:]

    public init() {}

    /// What to do with an assignment.
    public enum Decision: Sendable, Hashable {
        /// A new task, or a newer attempt: start it (after stopping `replacing`, if any).
        case start(replacing: UInt64?)
        /// This attempt is held already: do nothing.
        case duplicate
        /// An attempt older than the one held: refuse it.
        case stale(current: UInt64)
    }

    public mutating func assign(_ task: TaskID, attempt: UInt64) -> Decision {
        if current[task] == nil, let done = ended[task], attempt <= done { return .stale(current: done) }
        switch current[task] {
        case nil:
            current[task] = attempt
            return .start(replacing: nil)
        case let held? where held == attempt:
            return .duplicate
        case let held? where held > attempt:
            return .stale(current: held)
        case let held?:
            current[task] = attempt
            return .start(replacing: held)
        }
    }

    /// Whether a stop for `attempt` applies: only the current attempt is stopped.
    public func shouldStop(_ task: TaskID, attempt: UInt64) -> Bool {
        current[task] == attempt
    }

    /// Forgets a task whose container is gone.
    public mutating func release(_ task: TaskID, attempt: UInt64) {
        guard current[task] == attempt else { return }
        current[task] = nil
        ended[task] = max(ended[task] ?? 0, attempt)
    }
}
