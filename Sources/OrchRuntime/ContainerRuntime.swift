import OrchCore

/// What a worker needs from a container engine. ``DockerRuntime`` speaks Docker's Engine
/// API; tests of the worker's logic may use an in-memory one.
///
/// Every call is bounded in time; errors are ``RuntimeError``s whose text a user can act on.
public protocol ContainerRuntime: Sendable {
    /// Checks that the engine answers.
    func ping() async throws
    /// Makes `image` present, pulling it only when it is missing.
    func ensureImage(_ image: String) async throws -> ImageAvailability
    /// Creates (does not start) a container.
    func create(_ config: ContainerConfig) async throws -> ContainerID
    func start(_ id: ContainerID) async throws
    /// Sends SIGTERM, then SIGKILL after `grace`. Stopping a stopped container is no error.
    func stop(_ id: ContainerID, grace: Duration) async throws
    /// Removes the container, killing it first if it runs.
    func remove(_ id: ContainerID) async throws
    func inspect(_ id: ContainerID) async throws -> ContainerInfo
    /// One reading of the container's resource use.
    func stats(_ id: ContainerID) async throws -> ContainerStats
    /// The container's output; with `follow`, the stream goes on until the container ends.
    func logs(_ id: ContainerID, tail: Int?, follow: Bool) async throws -> RuntimeStream<LogChunk>
    /// Containers (running or not) that carry every one of `labels`.
    func list(labels: [String: String]) async throws -> [ContainerSummary]
    /// Container events (create, start, die, ...) for containers carrying every one of
    /// `labels`, from now on; the stream is how exits are seen without polling.
    func events(labels: [String: String]) async throws -> RuntimeStream<ContainerEvent>
    /// The host's address on the engine's default bridge network, which containers reach
    /// (nil when there is none).
    func bridgeGateway() async throws -> String?
}

/// Whether an image was already there or had to be pulled.
public enum ImageAvailability: Sendable, Hashable {
    case present, pulled
}

/// The labels every container created for a task carries: they tie it to its node, its
/// task and its attempt, so that a restarted worker can find and adopt its containers.
public enum ContainerLabel {
    public static let node = "orch.node"
    public static let task = "orch.task"
    public static let attempt = "orch.attempt"
    /// The task's stop grace period and `disconnect.stopAfter`, in nanoseconds: a worker that
    /// adopts the container after a restart honours them before the manager resends its spec.
    public static let stopGrace = "orch.stop-grace-ns"
    public static let stopAfter = "orch.stop-after-ns"
}

/// How to create a task's container.
public struct ContainerConfig: Sendable, Hashable {
    public var name: String?
    public var image: String
    /// nil keeps the image's own command.
    public var command: [String]?
    public var environment: [String: String]
    public var ports: [PortSpec]
    /// The host address published ports bind to.
    public var publishAddress: String
    public var resources: Resources
    public var stopGracePeriod: Duration
    public var labels: [String: String]
    /// The DNS servers of the container (empty: the engine's default).
    public var dns: [String] = []

    public init(
        name: String? = nil, image: String, command: [String]? = nil, environment: [String: String] = [:],
        ports: [PortSpec] = [], publishAddress: String = "127.0.0.1", resources: Resources = .default,
        stopGracePeriod: Duration = TaskSpec.defaultStopGracePeriod, labels: [String: String] = [:]
    ) {
        self.name = name
        self.image = image
        self.command = command
        self.environment = environment
        self.ports = ports
        self.publishAddress = publishAddress
        self.resources = resources
        self.stopGracePeriod = stopGracePeriod
        self.labels = labels
    }

    /// The container of one attempt of a task on `node`, labelled for adoption.
    public init(task: TaskID, attempt: Int, node: NodeID, spec: TaskSpec, publishAddress: String = "127.0.0.1") {
        self.init(
            name: "orch-\(task.rawValue)-\(attempt)", image: spec.image, command: spec.command,
            environment: spec.environment, ports: spec.ports, publishAddress: publishAddress,
            resources: spec.resources, stopGracePeriod: spec.stopGracePeriod,
            labels: [
                ContainerLabel.node: node.rawValue,
                ContainerLabel.task: task.rawValue,
                ContainerLabel.attempt: String(attempt),
                ContainerLabel.stopGrace: String(spec.stopGracePeriod.nanoseconds),
            ].merging(spec.disconnect.map { [ContainerLabel.stopAfter: String($0.stopAfter.nanoseconds)] } ?? [:]) { a, _ in a })
    }
}

/// What inspecting a container tells.
public struct ContainerInfo: Sendable, Hashable {
    public var id: ContainerID
    public var name: String
    public var image: String
    public var labels: [String: String]
    /// Docker's status: created, running, paused, restarting, removing, exited or dead.
    public var status: String
    public var running: Bool
    public var exitCode: Int
    /// The engine's error, e.g. why the container could not start.
    public var error: String?
    public var oomKilled: Bool
    public var publishedPorts: [PublishedPort]
    public var memoryLimitBytes: Int
    /// The soft memory limit (0: none).
    public var memoryReservationBytes: Int
    /// The CPU cap (0: none).
    public var nanoCPUs: Int
    /// The CPU weight.
    public var cpuShares: Int
    public var startedAt: Date?
    public var finishedAt: Date?
}

/// A container as listing shows it.
public struct ContainerSummary: Sendable, Hashable {
    public var id: ContainerID
    public var name: String
    public var image: String
    public var labels: [String: String]
    /// Docker's state: created, running, exited, ...
    public var state: String
}

/// One reading of a container's resource use.
public struct ContainerStats: Sendable, Hashable {
    public var memoryUsageBytes: Int
    public var memoryLimitBytes: Int
    /// CPU time the container used since it started.
    public var cpuUsageNanoseconds: Int
    public var onlineCPUs: Int
    public var processes: Int
}

/// A piece of a container's output.
public struct LogChunk: Sendable, Hashable {
    public enum Stream: UInt8, Sendable, Hashable {
        case stdin = 0, stdout = 1, stderr = 2
    }
    public var stream: Stream
    public var bytes: [UInt8]

    public init(stream: Stream, bytes: [UInt8]) {
        self.stream = stream
        self.bytes = bytes
    }

    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// Something that happened to a container.
public struct ContainerEvent: Sendable, Hashable {
    /// Docker's action: create, start, die, stop, kill, destroy, oom, health_status, ...
    public var action: String
    public var container: ContainerID
    /// The container's labels and Docker's attributes (name, image, exitCode).
    public var attributes: [String: String]
    public var time: Date

    /// The exit code a `die` event carries.
    public var exitCode: Int? { attributes["exitCode"].flatMap { Int($0) } }
}

/// A single-pass stream from the runtime (a response body being read); iterate it once.
public struct RuntimeStream<Element: Sendable>: AsyncSequence, Sendable {
    public typealias Failure = any Error
    private let makeNext: @Sendable () -> (() async throws -> Element?)

    /// A stream whose iterator calls the closure that `makeNext` returns until it gives nil.
    public init(_ makeNext: @escaping @Sendable () -> (() async throws -> Element?)) {
        self.makeNext = makeNext
    }

    public func makeAsyncIterator() -> Iterator { Iterator(next: makeNext()) }

    public struct Iterator: AsyncIteratorProtocol {
        let nextElement: () async throws -> Element?
        init(next: @escaping () async throws -> Element?) { nextElement = next }
        public mutating func next() async throws -> Element? { try await nextElement() }
    }
}

extension ContainerRuntime {
    public func bridgeGateway() async throws -> String? { nil }
}
