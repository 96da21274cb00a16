/// Every message of the cluster protocol (WIRE.md has each one's byte layout).
public enum WireMessage: Sendable, Hashable {
    case hello(Hello)
    case welcome(Welcome)
    case refused(Refused)
    case joinRequest(JoinRequest)
    case joinResult(JoinResult)
    case heartbeat(Heartbeat)
    case assignTask(AssignTask)
    case stopTask(StopTask)
    case taskStatus(TaskStatus)
    case taskList(TaskList)
    case submitTask(SubmitTask)
    case submitResult(SubmitResult)
    case ack(Ack)
    case logRequest(LogRequest)
    case logChunk(LogData)
    case logCredit(LogCredit)
    case logEnd(LogEnd)
    case goodbye(Goodbye)
    case serviceTable(ServiceTable)
    case error(ErrorMessage)

    /// The type byte of each message.
    public enum Kind: UInt8, Sendable, Hashable, CaseIterable {
        case hello = 0x01, welcome = 0x02, refused = 0x03, joinRequest = 0x04, joinResult = 0x05
        case heartbeat = 0x10
        case assignTask = 0x20, stopTask = 0x21, taskStatus = 0x22, taskList = 0x23
        case submitTask = 0x24, submitResult = 0x25
        case ack = 0x30
        case logRequest = 0x40, logChunk = 0x41, logCredit = 0x42, logEnd = 0x43
        case goodbye = 0x50
        case serviceTable = 0x60
        case error = 0x7F
    }

    public var kind: Kind {
        switch self {
        case .hello: .hello
        case .welcome: .welcome
        case .refused: .refused
        case .joinRequest: .joinRequest
        case .joinResult: .joinResult
        case .heartbeat: .heartbeat
        case .assignTask: .assignTask
        case .stopTask: .stopTask
        case .taskStatus: .taskStatus
        case .taskList: .taskList
        case .submitTask: .submitTask
        case .submitResult: .submitResult
        case .ack: .ack
        case .logRequest: .logRequest
        case .logChunk: .logChunk
        case .logCredit: .logCredit
        case .logEnd: .logEnd
        case .goodbye: .goodbye
        case .serviceTable: .serviceTable
        case .error: .error
        }
    }
}

// MARK: - Handshake

/// The protocol versions this build speaks.
public enum ProtocolVersion {
    public static let oldest: UInt16 = 8
    public static let newest: UInt16 = 8

    /// The highest version in both ranges, or nil when they do not meet.
    public static func negotiate(peerOldest: UInt16, peerNewest: UInt16) -> UInt16? {
        let chosen = min(newest, peerNewest)
        return chosen >= max(oldest, peerOldest) ? chosen : nil
    }
}

/// What a worker offers.
public struct Capacity: Sendable, Hashable {
    public var millicores: UInt32
    public var memoryBytes: UInt64
    public var diskBytes: UInt64

    public init(millicores: UInt32, memoryBytes: UInt64, diskBytes: UInt64) {
        self.millicores = millicores
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
    }
}

/// The worker's first message.
public struct Hello: Sendable, Hashable {
    public var oldestVersion: UInt16
    public var newestVersion: UInt16
    public var nodeID: NodeID
    public var name: String
    /// The addresses the worker really listens on (its HTTP API), `HOST:PORT`.
    public var addresses: [String]
    public var capacity: Capacity
    public var labels: [String: String]

    public init(
        oldestVersion: UInt16 = ProtocolVersion.oldest, newestVersion: UInt16 = ProtocolVersion.newest, nodeID: NodeID,
        name: String, addresses: [String], capacity: Capacity, labels: [String: String] = [:]
    ) {
        self.oldestVersion = oldestVersion
        self.newestVersion = newestVersion
        self.nodeID = nodeID
        self.name = name
        self.addresses = addresses
        self.capacity = capacity
        self.labels = labels
    }
}

/// A worker asking for its node certificate, as the first and only message of a connection:
/// joining (no certificate of its own yet: `secret` is the join token's) or renewing (on a
/// connection made with its current certificate: no secret). The manager answers
/// `join_result` or `refused`, and closes.
public struct JoinRequest: Sendable, Hashable {
    public var oldestVersion: UInt16
    public var newestVersion: UInt16
    /// The node id the certificate is to name (the worker's own, from its state directory).
    public var nodeID: NodeID
    public var secret: String?
    /// A PKCS #10 certificate signing request (DER), signed with the node's key.
    public var csr: [UInt8]

    public init(
        oldestVersion: UInt16 = ProtocolVersion.oldest, newestVersion: UInt16 = ProtocolVersion.newest,
        nodeID: NodeID, secret: String?, csr: [UInt8]
    ) {
        self.oldestVersion = oldestVersion
        self.newestVersion = newestVersion
        self.nodeID = nodeID
        self.secret = secret
        self.csr = csr
    }
}

/// The certificate issued for a `join_request`, with the CA's certificate the node trusts from then on.
public struct JoinResult: Sendable, Hashable {
    public var version: UInt16
    public var nodeID: NodeID
    /// The node's certificate and the CA's, both DER.
    public var certificate: [UInt8]
    public var caCertificate: [UInt8]

    public init(version: UInt16, nodeID: NodeID, certificate: [UInt8], caCertificate: [UInt8]) {
        self.version = version
        self.nodeID = nodeID
        self.certificate = certificate
        self.caCertificate = caCertificate
    }
}

/// The manager's acceptance of a hello.
public struct Welcome: Sendable, Hashable {
    public var version: UInt16
    public var heartbeatInterval: Duration
    /// How many `service_table`s follow at once: every service that publishes a port, so
    /// that the worker's load balancer knows when it has them all (version 5).
    public var serviceTables: UInt32
    /// The leader's epoch (version 8): every assignment and stop on this connection carries
    /// it, and a worker ignores a command from an epoch older than the newest it has seen.
    /// 0 for a manager that leads alone (a SQLite store).
    public var epoch: UInt64

    public init(version: UInt16, heartbeatInterval: Duration, serviceTables: UInt32 = 0, epoch: UInt64 = 0) {
        self.version = version
        self.heartbeatInterval = heartbeatInterval
        self.serviceTables = serviceTables
        self.epoch = epoch
    }
}

/// The manager's refusal of a hello; the connection closes after it.
public struct Refused: Sendable, Hashable {
    public enum Code: UInt16, Sendable, Hashable, CaseIterable {
        case noCommonVersion = 1, badToken = 2, duplicateNode = 3, shuttingDown = 4, invalidHello = 5
        /// The node was removed from the cluster: its certificate is no longer honoured.
        case nodeRemoved = 6
        /// This manager does not lead (transient): `leader` says where the leader listens.
        case notLeader = 7
    }
    public var code: Code
    /// A permanent refusal ends the worker; a transient one is retried.
    public var permanent: Bool
    public var reason: String
    /// With `notLeader`: the cluster port (`HOST:PORT`) of the manager that leads, when
    /// this one knows it (version 8).
    public var leader: String?

    public init(code: Code, permanent: Bool, reason: String, leader: String? = nil) {
        self.code = code
        self.permanent = permanent
        self.reason = reason
        self.leader = leader
    }
}

// MARK: - Heartbeats

/// A worker's machine metrics; CPU in millicores busy, loads in hundredths.
public struct MachineMetrics: Sendable, Hashable {
    public var cpuMillicoresUsed: UInt32
    public var memoryUsedBytes: UInt64
    public var memoryTotalBytes: UInt64
    public var diskUsedBytes: UInt64
    public var diskTotalBytes: UInt64
    public var load1Hundredths: UInt32
    public var load5Hundredths: UInt32
    public var load15Hundredths: UInt32
    public var runningTasks: UInt32

    public init(
        cpuMillicoresUsed: UInt32 = 0, memoryUsedBytes: UInt64 = 0, memoryTotalBytes: UInt64 = 0,
        diskUsedBytes: UInt64 = 0, diskTotalBytes: UInt64 = 0, load1Hundredths: UInt32 = 0,
        load5Hundredths: UInt32 = 0, load15Hundredths: UInt32 = 0, runningTasks: UInt32 = 0
    ) {
        self.cpuMillicoresUsed = cpuMillicoresUsed
        self.memoryUsedBytes = memoryUsedBytes
        self.memoryTotalBytes = memoryTotalBytes
        self.diskUsedBytes = diskUsedBytes
        self.diskTotalBytes = diskTotalBytes
        self.load1Hundredths = load1Hundredths
        self.load5Hundredths = load5Hundredths
        self.load15Hundredths = load15Hundredths
        self.runningTasks = runningTasks
    }
}

public struct Heartbeat: Sendable, Hashable {
    public var sequence: UInt64
    public var metrics: MachineMetrics
    /// Set while the worker's container engine does not answer (version 3): why, in its
    /// words. Nil when it answers, and always in the manager's answers.
    public var engineError: String?

    public init(sequence: UInt64, metrics: MachineMetrics, engineError: String? = nil) {
        self.sequence = sequence
        self.metrics = metrics
        self.engineError = engineError
    }
}

// MARK: - Tasks

/// Run attempt `attempt` of a task. Idempotent on (task, attempt).
public struct AssignTask: Sendable, Hashable {
    public var task: TaskID
    public var attempt: UInt64
    public var spec: TaskSpec
    /// The epoch of the leader that sent it (version 8; 0 from a manager that leads alone).
    public var epoch: UInt64

    public init(task: TaskID, attempt: UInt64, spec: TaskSpec, epoch: UInt64 = 0) {
        self.task = task
        self.attempt = attempt
        self.spec = spec
        self.epoch = epoch
    }
}

/// Stop attempt `attempt` of a task; harmless when that attempt is not current.
public struct StopTask: Sendable, Hashable {
    public var task: TaskID
    public var attempt: UInt64
    /// The epoch of the leader that sent it (version 8).
    public var epoch: UInt64

    public init(task: TaskID, attempt: UInt64, epoch: UInt64 = 0) {
        self.task = task
        self.attempt = attempt
        self.epoch = epoch
    }
}

/// A change of one attempt's state, as the worker saw it. Acknowledged by `ack(statusID)`.
public struct TaskStatus: Sendable, Hashable {
    /// Numbers the worker's statuses; the manager acknowledges by it.
    public var statusID: UInt64
    public var task: TaskID
    public var attempt: UInt64
    public var state: TaskState
    public var container: ContainerID?
    public var exitCode: Int32?
    public var error: String?
    public var ports: [PublishedPort]
    public var health: TaskHealth

    public init(
        statusID: UInt64, task: TaskID, attempt: UInt64, state: TaskState, container: ContainerID? = nil,
        exitCode: Int32? = nil, error: String? = nil, ports: [PublishedPort] = [], health: TaskHealth = .none
    ) {
        self.statusID = statusID
        self.task = task
        self.attempt = attempt
        self.state = state
        self.container = container
        self.exitCode = exitCode
        self.error = error
        self.ports = ports
        self.health = health
    }
}

/// Every attempt the worker holds, sent after each (re)connect so the manager can reconcile.
public struct TaskList: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        public var task: TaskID
        public var attempt: UInt64
        public var state: TaskState
        public var container: ContainerID?

        public init(task: TaskID, attempt: UInt64, state: TaskState, container: ContainerID? = nil) {
            self.task = task
            self.attempt = attempt
            self.state = state
            self.container = container
        }
    }
    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }
}

/// A task posted to a worker's own API, forwarded to the manager pinned to that worker.
public struct SubmitTask: Sendable, Hashable {
    public var requestID: UInt64
    public var spec: TaskSpec

    public init(requestID: UInt64, spec: TaskSpec) {
        self.requestID = requestID
        self.spec = spec
    }
}

/// The manager's answer to a submit: the task's id, or why it was refused.
public struct SubmitResult: Sendable, Hashable {
    public var requestID: UInt64
    public var task: TaskID?
    public var error: String?

    public init(requestID: UInt64, task: TaskID?, error: String?) {
        self.requestID = requestID
        self.task = task
        self.error = error
    }
}

/// The manager has recorded the status with this id.
public struct Ack: Sendable, Hashable {
    public var statusID: UInt64

    public init(statusID: UInt64) { self.statusID = statusID }
}

// MARK: - Logs

/// Ask for a task's logs on a new stream; `credit` bytes may be sent before more credit comes.
public struct LogRequest: Sendable, Hashable {
    public var streamID: UInt64
    public var task: TaskID
    public var tail: UInt32?
    public var follow: Bool
    public var credit: UInt32
    /// The attempt whose output is wanted (version 7): the current one, or one that ended
    /// and whose container is gone (the worker serves the copy it kept of its output).
    public var attempt: UInt64

    public init(streamID: UInt64, task: TaskID, tail: UInt32?, follow: Bool, credit: UInt32, attempt: UInt64) {
        self.streamID = streamID
        self.task = task
        self.tail = tail
        self.follow = follow
        self.credit = credit
        self.attempt = attempt
    }
}

/// Output of a log stream; its bytes use up credit.
public struct LogData: Sendable, Hashable {
    public enum Stream: UInt8, Sendable, Hashable { case stdout = 1, stderr = 2 }
    public var streamID: UInt64
    public var stream: Stream
    public var bytes: [UInt8]

    public init(streamID: UInt64, stream: Stream, bytes: [UInt8]) {
        self.streamID = streamID
        self.stream = stream
        self.bytes = bytes
    }
}

/// More bytes the receiver of a log stream is ready for.
public struct LogCredit: Sendable, Hashable {
    public var streamID: UInt64
    public var bytes: UInt32

    public init(streamID: UInt64, bytes: UInt32) {
        self.streamID = streamID
        self.bytes = bytes
    }
}

/// The end of a log stream, or (with `error`) why it could not go on. Either side may send it.
public struct LogEnd: Sendable, Hashable {
    public var streamID: UInt64
    public var error: String?

    public init(streamID: UInt64, error: String?) {
        self.streamID = streamID
        self.error = error
    }
}

// MARK: - Ending

/// Why a worker leaves.
public struct Goodbye: Sendable, Hashable {
    public enum Reason: UInt8, Sendable, Hashable, CaseIterable {
        /// Coming back soon: keep my tasks for the restart window.
        case restarting = 1
        /// Move my tasks at once.
        case draining = 2
    }
    public var reason: Reason
    public var message: String

    public init(reason: Reason, message: String) {
        self.reason = reason
        self.message = message
    }
}

/// A protocol error; the sender closes the connection after it.
public struct ErrorMessage: Sendable, Hashable {
    public var code: WireErrorCode
    public var message: String

    public init(code: WireErrorCode, message: String) {
        self.code = code
        self.message = message
    }
}

/// The codes of the `error` message.
public enum WireErrorCode: UInt16, Sendable, Hashable, CaseIterable {
    case malformedFrame = 1
    case frameTooLarge = 2
    case unknownType = 3
    /// A valid message that is not allowed now (e.g. a heartbeat before the handshake).
    case unexpectedMessage = 4
    case internalError = 5
}

// MARK: - The routing mesh

/// A service as every worker's load balancer sees it: the ports it is published on across
/// the cluster and where its replicas are. The manager sends one to every worker whenever
/// either changes, and all of them after each `welcome`. A table without listeners or
/// endpoints takes the service off the worker's load balancer.
public struct ServiceTable: Sendable, Hashable {
    public var service: String
    /// The catalog's index of these endpoints: a table older than the one held is ignored.
    public var index: UInt64
    public var listeners: [Listener]
    public var endpoints: [Endpoint]
    /// How long a replica told to stop is kept from new connections before it is stopped.
    public var drain: Duration

    /// A port every worker listens on (on its advertise address), balanced over the
    /// endpoints' host ports for `containerPort`.
    public struct Listener: Sendable, Hashable {
        public var publish: UInt16
        public var containerPort: UInt16
        public var mode: PublishMode
        public init(publish: UInt16, containerPort: UInt16, mode: PublishMode = .tcp) {
            self.publish = publish
            self.containerPort = containerPort
            self.mode = mode
        }
    }

    public struct Endpoint: Sendable, Hashable {
        public var task: TaskID
        public var address: String
        public var ports: [PublishedPort]
        public var state: State
        public init(task: TaskID, address: String, ports: [PublishedPort], state: State) {
            self.task = task
            self.address = address
            self.ports = ports
            self.state = state
        }

        /// The host port published for `containerPort`, if any.
        public func hostPort(for containerPort: UInt16) -> Int? {
            ports.first { $0.containerPort == Int(containerPort) && $0.protocol == .tcp }?.hostPort
        }
    }

    /// Where traffic goes: `ready` takes new connections; `draining` keeps the ones it has
    /// (told to stop); `down` takes none (unhealthy, or its node is not up).
    public enum State: UInt8, Sendable, Hashable, CaseIterable {
        case ready = 0, draining = 1, down = 2
    }

    public init(service: String, index: UInt64, listeners: [Listener], endpoints: [Endpoint], drain: Duration) {
        self.service = service
        self.index = index
        self.listeners = listeners
        self.endpoints = endpoints
        self.drain = drain
    }
}
