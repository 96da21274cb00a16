import Foundation

/// A service as the manager's REST gateway shows it.
public struct ServiceDTO: Codable, Sendable, Hashable {
    public struct Replicas: Codable, Sendable, Hashable {
        public var wanted: Int
        /// Tasks of the service that run (any version), in the slots wanted.
        public var running: Int
        /// Those of them on the current version that pass their health check (or have none).
        public var healthy: Int
    }

    public struct DeployDTO: Codable, Sendable, Hashable {
        public var from: ServiceVersion
        public var to: ServiceVersion
        /// running, succeeded, failed, rolling-back or rolled-back.
        public var state: String
        public var startedAt: Date
        public var endedAt: Date?
        public var reason: String?
        public var events: [ServiceEvent]
    }

    /// One task of the service, by slot.
    public struct ReplicaDTO: Codable, Sendable, Hashable {
        public var slot: Int
        public var id: TaskID
        public var version: ServiceVersion
        public var state: TaskState
        public var desiredState: DesiredState
        public var node: NodeID?
        public var nodeName: String?
        public var health: TaskHealth
        public var error: String?
        public var ports: [PublishedPort]
        public var createdAt: Date
    }

    /// A port of the service on every worker's load balancer.
    public struct PublishedDTO: Codable, Sendable, Hashable {
        public var publish: Int
        public var containerPort: Int
        public var mode: PublishMode
    }

    public var name: String
    /// active, or removing (its tasks stop, then it is forgotten).
    public var state: String
    /// The version the replicas are to run (a rollback brings back an earlier one).
    public var version: ServiceVersion
    public var latestVersion: ServiceVersion
    public var image: String
    /// The ports the routing mesh publishes it on (the current version's).
    public var published: [PublishedDTO]
    /// What keeps the service from being reached as its file asks, in words: e.g. workers
    /// where its published ports do not listen because they run no load balancer.
    public var warnings: [String] = []
    public var replicas: Replicas
    /// The service as a file gives it now: name, replicas, task, update.
    public var spec: JSONValue
    public var deploy: DeployDTO?
    public var events: [ServiceEvent]
    /// Every task kept, by slot then age (GET /services/{name} only).
    public var tasks: [ReplicaDTO]?
    public var createdAt: Date
    public var updatedAt: Date
    public var revision: UInt64

    public init(_ record: ServiceRecord, tasks: [TaskRecord], nodeNames: [NodeID: String], withTasks: Bool) {
        name = record.name
        state = record.removing ? "removing" : "active"
        version = record.version
        latestVersion = record.latestVersion
        image = record.template.image
        published = record.template.ports.compactMap { port in
            port.publish.map { PublishedDTO(publish: $0, containerPort: port.containerPort, mode: port.publishMode) }
        }
        let running = tasks.filter { $0.state == .running && $0.desiredState == .run && ($0.replica?.slot ?? 0) <= record.replicas }
        replicas = Replicas(
            wanted: record.removing ? 0 : record.replicas, running: running.count,
            healthy: running.filter { $0.replica?.version == record.version && $0.healthyAt != nil }.count)
        spec = record.spec.json
        deploy = record.deploy.map {
            DeployDTO(from: $0.from, to: $0.to, state: $0.state.rawValue, startedAt: $0.startedAt, endedAt: $0.endedAt, reason: $0.reason, events: $0.events)
        }
        events = record.events
        self.tasks = withTasks
            ? tasks.sorted { ($0.replica?.slot ?? 0, $0.createdAt, $0.id) < ($1.replica?.slot ?? 0, $1.createdAt, $1.id) }.map { task in
                ReplicaDTO(
                    slot: task.replica?.slot ?? 0, id: task.id, version: task.replica?.version ?? 0, state: task.state,
                    desiredState: task.desiredState, node: task.node, nodeName: task.node.flatMap { nodeNames[$0] }, health: task.health,
                    error: task.error, ports: task.hostPorts, createdAt: task.createdAt)
            }
            : nil
        createdAt = record.createdAt
        updatedAt = record.updatedAt
        revision = record.revision
    }
}
