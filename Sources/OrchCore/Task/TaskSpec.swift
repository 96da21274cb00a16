/// What a user asks to run: the task file, as submitted to `POST /tasks`.
///
/// Values are normalized when read: a task without resources reserves
/// ``Resources/default``, durations and policies get their defaults, so two files that
/// mean the same thing give equal specs (which is how a re-submission is recognised).
/// The JSON shape and every default are documented in `docs/TASKS.md`.
public struct TaskSpec: Sendable, Hashable {
    /// Chosen by the user, or nil to let the manager pick one.
    public var id: TaskID?
    /// A name for people; also the container's name prefix.
    public var name: String?
    /// The image reference, e.g. `orch-busybox:latest`.
    public var image: String
    /// The command to run instead of the image's own; nil keeps the image's.
    public var command: [String]?
    /// Environment variables set in the container.
    public var environment: [String: String]
    /// Container ports to publish on the worker's host.
    public var ports: [PortSpec]
    /// What the task reserves on its node and is limited to.
    public var resources: Resources
    /// What happens when the container exits.
    public var restartPolicy: RestartPolicy
    /// How long a stop waits after SIGTERM before SIGKILL.
    public var stopGracePeriod: Duration
    /// An HTTP check on a published port, run by the worker.
    public var healthCheck: HealthCheck?
    /// Where the task may be placed.
    public var constraints: PlacementConstraints
    /// What happens to the task while its worker cannot reach the manager; nil: it runs on.
    public var disconnect: DisconnectPolicy?

    public static let defaultStopGracePeriod: Duration = .seconds(10)

    public init(
        id: TaskID? = nil, name: String? = nil, image: String, command: [String]? = nil,
        environment: [String: String] = [:], ports: [PortSpec] = [], resources: Resources = .default,
        restartPolicy: RestartPolicy = .never, stopGracePeriod: Duration = TaskSpec.defaultStopGracePeriod,
        healthCheck: HealthCheck? = nil, constraints: PlacementConstraints = .none, disconnect: DisconnectPolicy? = nil
    ) {
        self.id = id
        self.name = name
        self.image = image
        self.command = command
        self.environment = environment
        self.ports = ports
        self.resources = resources
        self.restartPolicy = restartPolicy
        self.stopGracePeriod = stopGracePeriod
        self.healthCheck = healthCheck
        self.constraints = constraints
        self.disconnect = disconnect
    }
}

/// A task's answer to a partition (as Nomad's `disconnect` block): its worker stops it once
/// it has not heard from the manager for `stopAfter`, and the manager places a replacement
/// only after `stopAfter`, the stop grace period and a margin have passed since it last
/// heard from that worker, so that two copies never run at once.
public struct DisconnectPolicy: Sendable, Hashable {
    public var stopAfter: Duration

    public init(stopAfter: Duration) { self.stopAfter = stopAfter }
}

/// A container port to publish.
public struct PortSpec: Sendable, Hashable {
    public var containerPort: Int
    public var `protocol`: PortProtocol
    /// A fixed host port, or nil to let Docker choose a free one.
    public var hostPort: Int?
    /// For a service's template: the port every worker's load balancer listens on for it
    /// (the routing mesh), balanced over the replicas' host ports. TCP only.
    public var publish: Int?
    /// How the published port is balanced: connections (`tcp`) or HTTP requests (`http`).
    public var publishMode: PublishMode

    public init(containerPort: Int, protocol: PortProtocol = .tcp, hostPort: Int? = nil, publish: Int? = nil, publishMode: PublishMode = .tcp) {
        self.containerPort = containerPort
        self.protocol = `protocol`
        self.hostPort = hostPort
        self.publish = publish
        self.publishMode = publishMode
    }
}

/// How a service's published port is balanced by every worker's load balancer.
public enum PublishMode: String, Sendable, Hashable, Codable, CaseIterable {
    /// Each connection goes to one replica and stays there.
    case tcp
    /// Each HTTP request goes to a replica of its own (keep-alive connections are spread
    /// too), and a request that found its replica gone (refused, or closed without an
    /// answer) is tried on another one; POST requests are not tried again.
    case http
}

/// The transport of a published port.
public enum PortProtocol: String, Sendable, Hashable, Codable, CaseIterable {
    case tcp, udp
}

/// CPU and memory a task reserves on its node; also its container's limits.
public struct Resources: Sendable, Hashable {
    /// Thousandths of a CPU (`cpus: 0.5` is 500): what placement reserves, and the task's
    /// weight when CPUs are contended (CPU shares), never a cap.
    public var millicores: Int
    /// What placement reserves, and the container's memory limit unless `memoryMaxBytes` is given.
    public var memoryBytes: Int
    /// `cpuLimit`: a hard cap (a CFS quota), only when given.
    public var cpuLimitMillicores: Int?
    /// `memoryMax`: a hard memory limit above the reservation (which becomes the soft one).
    public var memoryMaxBytes: Int?

    public init(millicores: Int, memoryBytes: Int, cpuLimitMillicores: Int? = nil, memoryMaxBytes: Int? = nil) {
        self.millicores = millicores
        self.memoryBytes = memoryBytes
        self.cpuLimitMillicores = cpuLimitMillicores
        self.memoryMaxBytes = memoryMaxBytes
    }

    /// Docker's `CpuShares` for the reservation: 1,024 for one CPU, at least 2.
    public var cpuShares: Int { max(2, millicores * 1024 / 1000) }

    /// What a task without `resources` reserves (0.1 CPU, 64 MiB), so that reservations mean something.
    public static let `default` = Resources(millicores: 100, memoryBytes: 64 << 20)
    /// Docker refuses memory limits below 6 MiB.
    public static let minimumMemoryBytes = 6 << 20
    /// Docker refuses CPU limits below 0.01 CPU.
    public static let minimumMillicores = 10

    /// CPUs as a decimal, as users write them.
    public var cpus: Double { Double(millicores) / 1000 }

    /// Upper bounds that keep sizes exact in JSON (below 2^53) and sums free of overflow.
    public static let maximumMillicores = 1_000_000
    public static let maximumMemoryBytes = 1 << 50
}

/// When a finished container is started again.
public struct RestartPolicy: Sendable, Hashable {
    public var mode: RestartMode
    /// The most restarts allowed, or nil for no limit (backoff still applies).
    public var maxRestarts: Int?

    public init(mode: RestartMode, maxRestarts: Int? = nil) {
        self.mode = mode
        self.maxRestarts = maxRestarts
    }

    public static let never = RestartPolicy(mode: .never)
}

/// The restart modes; a stop asked by a user is final in all of them.
public enum RestartMode: String, Sendable, Hashable, Codable, CaseIterable {
    /// Never restarted.
    case never
    /// Restarted when it exits non-zero, fails to start, or its node is lost.
    case onFailure = "on-failure"
    /// Restarted whenever it ends, whatever the exit code.
    case always
}

/// An HTTP GET that the worker sends to the container through its published port.
public struct HealthCheck: Sendable, Hashable {
    /// The request path, starting with `/`.
    public var path: String
    /// The container port checked; it must be one of the task's published TCP ports.
    public var port: Int
    public var interval: Duration
    public var timeout: Duration
    /// Consecutive failures that make the task unhealthy.
    public var failureThreshold: Int

    public static let defaultInterval: Duration = .seconds(10)
    public static let defaultTimeout: Duration = .seconds(2)
    public static let defaultFailureThreshold = 3

    public init(
        path: String, port: Int, interval: Duration = HealthCheck.defaultInterval,
        timeout: Duration = HealthCheck.defaultTimeout, failureThreshold: Int = HealthCheck.defaultFailureThreshold
    ) {
        self.path = path
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.failureThreshold = failureThreshold
    }
}

/// Where a task may run.
public struct PlacementConstraints: Sendable, Hashable {
    /// A node id or node name the task is pinned to.
    public var node: String?
    /// Labels the node must carry, each with this value.
    public var labels: [String: String]

    public init(node: String? = nil, labels: [String: String] = [:]) {
        self.node = node
        self.labels = labels
    }

    public static let none = PlacementConstraints()
    public var isEmpty: Bool { node == nil && labels.isEmpty }
}

// MARK: - Re-submission

extension TaskSpec {
    /// What a submission whose id is already taken by `existing` amounts to:
    /// the same spec again is the same task; another spec is a conflict.
    public func resubmission(of existing: TaskSpec) -> Resubmission {
        self == existing ? .sameTask : .conflict
    }

    public enum Resubmission: Sendable, Hashable {
        case sameTask, conflict
    }
}
