import Foundation

/// A task as the manager's REST gateway shows it.
public struct TaskDTO: Codable, Sendable, Hashable {
    public var id: TaskID
    public var name: String?
    public var image: String
    public var state: TaskState
    public var desiredState: DesiredState
    public var node: NodeID?
    public var nodeName: String?
    public var container: ContainerID?
    public var attempt: Int
    public var restarts: Int
    public var exitCode: Int?
    public var error: String?
    public var health: TaskHealth
    public var ports: [PublishedPort]
    public var createdAt: Date
    public var updatedAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var spec: TaskSpec
    /// The manager's revision when this task last changed.
    public var revision: UInt64
    /// The service, its version and the slot, for a replica of a service.
    public var service: String?
    public var version: ServiceVersion?
    public var slot: Int?
    /// The task's history, oldest first (GET /tasks/{taskID} only).
    public var events: [TaskEventDTO]?
    /// When a task waiting out its restart backoff (crash-looping) is placed again.
    public var backoffUntil: Date?

    public init(_ record: TaskRecord, nodeName: String?, events: [TaskHistoryEntry]? = nil, backoffUntil: Date? = nil) {
        self.backoffUntil = backoffUntil
        id = record.id
        name = record.spec.name
        image = record.spec.image
        state = record.state
        desiredState = record.desiredState
        node = record.node
        self.nodeName = nodeName
        container = record.containerID
        attempt = record.attempt - (record.attemptBase ?? 0)
        restarts = record.restartCount
        exitCode = record.exitCode
        error = record.error
        health = record.health
        ports = record.hostPorts
        createdAt = record.createdAt
        updatedAt = record.updatedAt
        startedAt = record.startedAt
        finishedAt = record.finishedAt
        spec = record.spec
        revision = record.revision
        service = record.replica?.service
        version = record.replica?.version
        slot = record.replica?.slot
        self.events = events?.map { TaskEventDTO(at: $0.at, state: $0.state, message: $0.message) }
    }
}

public struct TaskEventDTO: Codable, Sendable, Hashable {
    public var at: Date
    public var state: TaskState
    public var message: String
}

/// A node as the manager's REST gateway shows it.
public struct NodeDTO: Codable, Sendable, Hashable {
    public struct Resources: Codable, Sendable, Hashable {
        public var millicores: Int
        public var memoryBytes: Int
        public init(millicores: Int, memoryBytes: Int) {
            self.millicores = millicores
            self.memoryBytes = memoryBytes
        }
    }
    public struct Metrics: Codable, Sendable, Hashable {
        public var cpuMillicoresUsed: Int
        public var memoryUsedBytes: Int
        public var memoryTotalBytes: Int
        public var diskUsedBytes: Int
        public var diskTotalBytes: Int
        public var load1: Double
        public var load5: Double
        public var load15: Double
        public var runningTasks: Int
        public init(
            cpuMillicoresUsed: Int, memoryUsedBytes: Int, memoryTotalBytes: Int, diskUsedBytes: Int, diskTotalBytes: Int,
            load1: Double, load5: Double, load15: Double, runningTasks: Int
        ) {
            self.cpuMillicoresUsed = cpuMillicoresUsed
            self.memoryUsedBytes = memoryUsedBytes
            self.memoryTotalBytes = memoryTotalBytes
            self.diskUsedBytes = diskUsedBytes
            self.diskTotalBytes = diskTotalBytes
            self.load1 = load1
            self.load5 = load5
            self.load15 = load15
            self.runningTasks = runningTasks
        }
    }
    /// up: heartbeating; down: silent past the grace period, or gone; restarting: said
    /// goodbye "restarting" and is waited for; draining: said goodbye "draining".
    public enum State: String, Codable, Sendable, Hashable, CaseIterable {
        case up, down, restarting, draining
    }
    public var id: NodeID
    public var name: String
    public var addresses: [String]
    public var state: State
    public var labels: [String: String]
    public var capacity: NodeCapacity
    public var reserved: Resources
    public var metrics: Metrics?
    /// Tasks whose current attempt is on this node and not ended.
    public var tasks: Int
    public var joinedAt: Date
    public var lastHeartbeat: Date?
    /// Set while the node's container engine does not answer (its words); nothing is placed
    /// there meanwhile.
    public var engineError: String?
    /// Drained by a user (`orchctl node drain`): nothing new is placed on it.
    public var drained = false

    public init(
        id: NodeID, name: String, addresses: [String], state: State, labels: [String: String], capacity: NodeCapacity,
        reserved: Resources, metrics: Metrics?, tasks: Int, joinedAt: Date, lastHeartbeat: Date?, engineError: String? = nil
    ) {
        self.engineError = engineError
        self.id = id
        self.name = name
        self.addresses = addresses
        self.state = state
        self.labels = labels
        self.capacity = capacity
        self.reserved = reserved
        self.metrics = metrics
        self.tasks = tasks
        self.joinedAt = joinedAt
        self.lastHeartbeat = lastHeartbeat
    }
}

/// `GET /healthz`: the manager answers; whether it leads, and who does.
public struct HealthDTO: Codable, Sendable, Hashable {
    public var status: String
    /// `leader` (it acts: alone on its own store, or by the lease) or `follower`.
    public var role: String?
    /// This manager's name.
    public var manager: String?
    /// Who leads, when known, where its REST gateway is, and its epoch (by the lease).
    public var leader: String?
    public var leaderURL: String?
    public var epoch: Int64?

    public init(status: String, role: String? = nil, manager: String? = nil, leader: String? = nil, leaderURL: String? = nil, epoch: Int64? = nil) {
        self.status = status
        self.role = role
        self.manager = manager
        self.leader = leader
        self.leaderURL = leaderURL
        self.epoch = epoch
    }
}

/// A manager as `GET /managers` lists them.
public struct ManagerDTO: Codable, Sendable, Hashable {
    public var name: String
    /// Its REST gateway and its cluster port, as it announced them.
    public var apiURL: String
    public var wireAddress: String?
    /// `leader` or `follower`.
    public var role: String
    /// The leader's epoch (the leader only; none for a manager alone on its own store).
    public var epoch: Int64?
    public var startedAt: Date
    /// How long ago it last said it runs (every second while it does).
    public var seenSecondsAgo: Double

    public init(name: String, apiURL: String, wireAddress: String? = nil, role: String, epoch: Int64?, startedAt: Date, seenSecondsAgo: Double) {
        self.name = name
        self.apiURL = apiURL
        self.wireAddress = wireAddress
        self.role = role
        self.epoch = epoch
        self.startedAt = startedAt
        self.seenSecondsAgo = seenSecondsAgo
    }
}
