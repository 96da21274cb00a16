import Foundation

/// Where one task of a service can be reached, and whether traffic should go there.
///
/// An endpoint exists while its task's container runs with its ports published (from
/// `running` until the attempt ends); it is *ready* only while the task is to keep running,
/// passes its health check (or has none) and its node is up. A task told to stop (a deploy,
/// a scale down, a stop) stays listed as draining until its container is gone, so that a
/// load balancer stops sending it new connections before it goes.
public struct ServiceEndpoint: Sendable, Hashable, Codable {
    public var task: TaskID
    public var slot: Int
    public var version: ServiceVersion
    public var node: NodeID
    public var nodeName: String?
    /// The address its ports are published on (the worker's advertise address).
    public var address: String
    public var ports: [PublishedPort]
    public var health: TaskHealth
    /// Told to stop, or on a node that is not up: no new connections.
    public var draining: Bool
    /// Healthy (or without a health check), not draining: where traffic goes.
    public var ready: Bool

    public init(task: TaskID, slot: Int, version: ServiceVersion, node: NodeID, nodeName: String?, address: String,
                ports: [PublishedPort], health: TaskHealth, draining: Bool) {
        self.task = task
        self.slot = slot
        self.version = version
        self.node = node
        self.nodeName = nodeName
        self.address = address
        self.ports = ports
        self.health = health
        self.draining = draining
        ready = !draining && (health == .none || health == .healthy)
    }

    /// The host port published for `containerPort` (the first TCP port when nil).
    public func hostPort(for containerPort: Int? = nil) -> Int? {
        ports.first { port in containerPort.map { port.containerPort == $0 } ?? (port.protocol == .tcp) }?.hostPort
    }

    /// The endpoint of `record`, if it is one: a replica whose container runs with its ports
    /// published. `nodeAddress` is the node's advertise address, used where a port was
    /// published on every address; `nodeUp` whether its node heartbeats.
    public static func of(_ record: TaskRecord, nodeName: String?, nodeAddress: String?, nodeUp: Bool) -> ServiceEndpoint? {
        guard let replica = record.replica, let node = record.node, record.containerID != nil,
              record.state == .running || record.state == .stopping else { return nil }
        let published = record.hostPorts.first?.hostIP ?? ""
        let address = anyAddress.contains(published) ? (nodeAddress ?? "127.0.0.1") : published
        return ServiceEndpoint(
            task: record.id, slot: replica.slot, version: replica.version, node: node, nodeName: nodeName, address: address,
            ports: record.hostPorts, health: record.health,
            draining: record.state != .running || record.desiredState != .run || !nodeUp)
    }

    static let anyAddress: Set<String> = ["", "0.0.0.0", "::"]
}

/// A service's endpoints as of one index: the index grows whenever they change, so that a
/// watcher asking with the index it has is answered only when there is something new.
public struct ServiceCatalog: Sendable, Hashable, Codable {
    public var service: String
    public var index: UInt64
    /// By slot, then task.
    public var endpoints: [ServiceEndpoint]

    public init(service: String, index: UInt64, endpoints: [ServiceEndpoint]) {
        self.service = service
        self.index = index
        self.endpoints = endpoints
    }

    public var ready: [ServiceEndpoint] { endpoints.filter(\.ready) }
}
