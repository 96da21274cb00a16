/// Everything the system keeps about one task: the spec and what became of it.
public struct TaskRecord: Sendable, Hashable, Codable {
    public var id: TaskID
    public var spec: TaskSpec
    public var desiredState: DesiredState
    public var state: TaskState
    /// The node of the current attempt, if it has one.
    public var node: NodeID?
    public var containerID: ContainerID?
    /// The fencing number: every placement gets a new one, and it only goes up. Containers
    /// carry it on a label; a worker holding an older attempt is told to stop it.
    public var attempt: Int
    /// Restarts so far; drives the backoff and the policy's maximum, and may be reset.
    public var restartCount: Int
    public var exitCode: Int?
    /// Why the task failed, or why it waits (e.g. "no node has 4 CPUs free").
    public var error: String?
    public var health: TaskHealth
    /// Host ports the container was published on.
    public var hostPorts: [PublishedPort]
    public var createdAt: Date
    public var updatedAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// Since when it has run healthy (running, for a task without a health check).
    public var healthyAt: Date?
    /// The replica of a service this task is, if it is one.
    public var replica: ServiceSlot?
    /// The newest attempt that ended on its node (exited, failed to start, failed its health
    /// check): whose output `logs --previous` reads, from that node.
    public var lastEnded: EndedAttempt?
    /// Where this task's attempts began: above the attempts of an earlier task of the same
    /// id, now forgotten (attempts are fencing numbers, and only go up for an id). Users see
    /// `attempt - attemptBase`, the placements of this task.
    public var attemptBase: Int?
    /// The manager's revision when this record last changed (its state counter: every
    /// change of the manager's state gets the next value).
    public var revision: UInt64 = 0

    /// The revision is not part of the record's own JSON (the store keeps it in a column of
    /// its own), so rows written before it existed still decode.
    enum CodingKeys: String, CodingKey {
        case id, spec, desiredState, state, node, containerID, attempt, restartCount, exitCode, error, health, hostPorts
        case createdAt, updatedAt, startedAt, finishedAt, healthyAt, replica, lastEnded, attemptBase
    }

    /// An attempt that ended, and the node it ran on.
    public struct EndedAttempt: Sendable, Hashable, Codable {
        public var node: NodeID
        public var attempt: Int

        public init(node: NodeID, attempt: Int) {
            self.node = node
            self.attempt = attempt
        }
    }

    /// A new task, pending, as accepted at `now`.
    public init(id: TaskID, spec: TaskSpec, now: Date) {
        self.id = id
        var spec = spec
        spec.id = id
        self.spec = spec
        desiredState = .run
        state = .pending
        attempt = 0
        restartCount = 0
        health = spec.healthCheck == nil ? .none : .starting
        hostPorts = []
        createdAt = now
        updatedAt = now
    }
}

/// A container port as the runtime published it.
public struct PublishedPort: Sendable, Hashable, Codable {
    public var containerPort: Int
    public var `protocol`: PortProtocol
    public var hostIP: String
    public var hostPort: Int

    public init(containerPort: Int, protocol: PortProtocol, hostIP: String, hostPort: Int) {
        self.containerPort = containerPort
        self.protocol = `protocol`
        self.hostIP = hostIP
        self.hostPort = hostPort
    }
}

// MARK: - Events

/// Something that happened to a task; ``TaskRecord/apply(_:at:)`` turns it into a change of state.
public enum TaskEvent: Sendable, Hashable, CustomStringConvertible {
    /// A scheduler chose `node`; the task gets a new attempt.
    case placed(on: NodeID)
    /// The container of the current attempt runs.
    case started(container: ContainerID, hostPorts: [PublishedPort])
    /// The container ended with this exit code.
    case exited(code: Int)
    /// The container could not be created or started.
    case startFailed(reason: String)
    /// A user asked the task to stop.
    case stopRequested
    /// The node of the current attempt went down.
    case nodeLost
    /// The task waits for placement again: a restart by its policy, or a refused assignment.
    case requeued(reason: String)
    /// The task is given up on (its restart policy allows no more).
    case abandoned(reason: String)
    /// The health check's verdict changed.
    case healthChanged(TaskHealth)
    /// The health check failed past its threshold: the attempt is ended as failed, and its
    /// restart policy decides what comes next.
    case healthFailed(reason: String?)

    public var description: String {
        switch self {
        case .placed(let node): "placed on \(node)"
        case .started(let container, _): "started as \(container.short)"
        case .exited(let code): "exited with code \(code)"
        case .startFailed(let reason): "failed to start: \(reason)"
        case .stopRequested: "stop requested"
        case .nodeLost: "node lost"
        case .requeued(let reason): "requeued: \(reason)"
        case .abandoned(let reason): "abandoned: \(reason)"
        case .healthChanged(let health): "health \(health.rawValue)"
        case .healthFailed(let reason): "health check failed" + (reason.map { ": \($0)" } ?? "")
        }
    }
}

/// An event that does not apply to a task in its state; the task is left unchanged.
public struct TaskTransitionError: Error, Sendable, Hashable, CustomStringConvertible {
    public var task: TaskID
    public var from: TaskState
    public var event: TaskEvent

    public init(task: TaskID, from: TaskState, event: TaskEvent) {
        self.task = task
        self.from = from
        self.event = event
    }

    public var description: String { "task \(task) is \(from.rawValue): cannot apply \"\(event)\"" }
}

extension TaskRecord {
    /// Applies `event`; every change of state is checked against ``TaskState/transitions``.
    ///
    /// A stop asked by a user ends ``TaskState/completed`` whatever the exit code, and a
    /// task that is to stop is never requeued. Stopping an ended task changes nothing.
    /// - Returns: the state before the event.
    /// - Throws: ``TaskTransitionError`` when the event does not apply; nothing is changed.
    @discardableResult
    public mutating func apply(_ event: TaskEvent, at now: Date) throws(TaskTransitionError) -> TaskState {
        let before = state
        var next = self
        switch event {
        case .placed(let node):
            try next.move(to: .scheduled, for: event)
            next.node = node
            next.attempt += 1
            next.containerID = nil
            next.exitCode = nil
            next.error = nil
            next.hostPorts = []
            next.startedAt = nil
            next.finishedAt = nil
            next.healthyAt = nil
            next.health = spec.healthCheck == nil ? .none : .starting
        case .started(let container, let ports):
            try next.move(to: .running, for: event)
            next.containerID = container
            next.hostPorts = ports
            next.startedAt = now
            if spec.healthCheck == nil { next.healthyAt = now }
        case .exited(let code):
            try next.move(to: desiredState == .stop || code == 0 ? .completed : .failed, for: event)
            next.exitCode = code
            next.finishedAt = now
            if next.state == .failed { next.error = "exited with code \(code)" }
        case .startFailed(let reason):
            try next.move(to: desiredState == .stop ? .completed : .failed, for: event)
            next.error = reason
            next.finishedAt = now
        case .stopRequested:
            next.desiredState = .stop
            switch state {
            case .pending, .lost:
                try next.move(to: .completed, for: event)
                next.finishedAt = now
                if before == .pending { next.error = nil }
                if next.health == .starting { next.health = .none }
            case .scheduled, .running: try next.move(to: .stopping, for: event)
            case .stopping, .completed, .failed: break
            }
        case .nodeLost:
            try next.move(to: .lost, for: event)
            next.error = "node \(node.map(\.rawValue) ?? "?") was lost"
        case .requeued(let reason):
            guard desiredState == .run else { throw TaskTransitionError(task: id, from: state, event: event) }
            try next.move(to: .pending, for: event)
            if before != .scheduled { next.restartCount += 1 }
            next.node = nil
            next.error = reason
        case .abandoned(let reason):
            try next.move(to: .failed, for: event)
            next.error = reason
            next.finishedAt = now
        case .healthFailed:
            try next.move(to: desiredState == .stop ? .completed : .failed, for: event)
            next.health = .unhealthy
            next.error = event.description
            next.finishedAt = now
        case .healthChanged(let health):
            guard state == .running, spec.healthCheck != nil else {
                throw TaskTransitionError(task: id, from: state, event: event)
            }
            next.health = health
            if health != .healthy { next.healthyAt = nil } else if self.health != .healthy { next.healthyAt = now }
        }
        switch event {
        case .exited, .startFailed, .healthFailed:
            if let node = next.node, next.state.isTerminal { next.lastEnded = EndedAttempt(node: node, attempt: next.attempt) }
        default:
            break
        }
        next.updatedAt = now
        self = next
        return before
    }

    private mutating func move(to target: TaskState, for event: TaskEvent) throws(TaskTransitionError) {
        guard state.canTransition(to: target) else { throw TaskTransitionError(task: id, from: state, event: event) }
        state = target
    }
}
