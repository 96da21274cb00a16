import NIOCore
import OrchCore

/// A frame: `u32 length (big-endian, counts the type byte and the payload) | u8 type | payload`.
public enum Frame {
    /// The largest frame (the value of the length field) accepted by default: 1 MiB.
    public static let defaultMaximumBytes = 1 << 20
    /// Bytes of the length field.
    public static let headerBytes = 4

    /// Appends `message` as one frame to `buffer`.
    public static func encode(_ message: WireMessage, into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0), endianness: .big)   // the length, set below
        var writer = WireWriter(buffer: buffer)
        writer.u8(message.kind.rawValue)
        writer.payload(message)
        buffer = writer.buffer
        buffer.setInteger(UInt32(buffer.writerIndex - start - headerBytes), at: start, endianness: .big)
    }

    /// The frame of `message` as bytes.
    public static func encode(_ message: WireMessage) -> ByteBuffer {
        var buffer = ByteBuffer()
        encode(message, into: &buffer)
        return buffer
    }

    /// Reads one frame from the front of `buffer`: nil when more bytes are needed (nothing is
    /// consumed then). The length is checked against `maximumBytes` from the header alone.
    public static func decode(from buffer: inout ByteBuffer, maximumBytes: Int = defaultMaximumBytes) throws(WireError) -> WireMessage? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else { return nil }
        guard length > 0 else { throw .emptyFrame }
        guard Int(length) <= maximumBytes else { throw .frameTooLarge(length: length, limit: maximumBytes) }
        guard buffer.readableBytes >= headerBytes + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: headerBytes)
        let body = buffer.readSlice(length: Int(length))!
        return try decodeBody(body)
    }

    /// Decodes a frame's body: the type byte and the payload, which must be used up exactly.
    public static func decodeBody(_ body: ByteBuffer) throws(WireError) -> WireMessage {
        var reader = WireReader(body)
        let type = try reader.u8("type")
        guard let kind = WireMessage.Kind(rawValue: type) else { throw .unknownType(type) }
        let message = try reader.message(kind)
        guard reader.buffer.readableBytes == 0 else { throw .trailingBytes(count: reader.buffer.readableBytes) }
        return message
    }
}

// MARK: - Payloads

extension WireWriter {
    mutating func payload(_ message: WireMessage) {
        switch message {
        case .hello(let m):
            u16(m.oldestVersion); u16(m.newestVersion); string(m.nodeID.rawValue); string(m.name)
            list(m.addresses) { $0.string($1) }
            u32(m.capacity.millicores); u64(m.capacity.memoryBytes); u64(m.capacity.diskBytes)
            map(m.labels)
        case .joinRequest(let m):
            u16(m.oldestVersion); u16(m.newestVersion); string(m.nodeID.rawValue)
            optional(m.secret) { $0.string($1) }; bytes(m.csr)
        case .joinResult(let m):
            u16(m.version); string(m.nodeID.rawValue); bytes(m.certificate); bytes(m.caCertificate)
        case .welcome(let m):
            u16(m.version); duration(m.heartbeatInterval); u32(m.serviceTables); u64(m.epoch)
        case .refused(let m):
            u16(m.code.rawValue); bool(m.permanent); string(m.reason); optional(m.leader) { $0.string($1) }
        case .heartbeat(let m):
            u64(m.sequence)
            let metrics = m.metrics
            u32(metrics.cpuMillicoresUsed); u64(metrics.memoryUsedBytes); u64(metrics.memoryTotalBytes)
            u64(metrics.diskUsedBytes); u64(metrics.diskTotalBytes)
            u32(metrics.load1Hundredths); u32(metrics.load5Hundredths); u32(metrics.load15Hundredths)
            u32(metrics.runningTasks)
            optional(m.engineError) { $0.string($1) }
        case .assignTask(let m):
            string(m.task.rawValue); u64(m.attempt); spec(m.spec); u64(m.epoch)
        case .stopTask(let m):
            string(m.task.rawValue); u64(m.attempt); u64(m.epoch)
        case .taskStatus(let m):
            u64(m.statusID); string(m.task.rawValue); u64(m.attempt); u8(m.state.wireValue)
            optional(m.container) { $0.string($1.rawValue) }
            optional(m.exitCode) { $0.i32($1) }
            optional(m.error) { $0.string($1) }
            list(m.ports) { writer, port in writer.publishedPort(port) }
            u8(m.health.wireValue)
        case .taskList(let m):
            list(m.entries) { writer, entry in
                writer.string(entry.task.rawValue); writer.u64(entry.attempt); writer.u8(entry.state.wireValue)
                writer.optional(entry.container) { $0.string($1.rawValue) }
            }
        case .submitTask(let m):
            u64(m.requestID); spec(m.spec)
        case .submitResult(let m):
            u64(m.requestID); optional(m.task) { $0.string($1.rawValue) }; optional(m.error) { $0.string($1) }
        case .ack(let m):
            u64(m.statusID)
        case .logRequest(let m):
            u64(m.streamID); string(m.task.rawValue); optional(m.tail) { $0.u32($1) }; bool(m.follow); u32(m.credit); u64(m.attempt)
        case .logChunk(let m):
            u64(m.streamID); u8(m.stream.rawValue); bytes(m.bytes)
        case .logCredit(let m):
            u64(m.streamID); u32(m.bytes)
        case .logEnd(let m):
            u64(m.streamID); optional(m.error) { $0.string($1) }
        case .goodbye(let m):
            u8(m.reason.rawValue); string(m.message)
        case .serviceTable(let m):
            string(m.service); u64(m.index)
            list(m.listeners) { writer, listener in
                writer.u16(listener.publish); writer.u16(listener.containerPort); writer.u8(listener.mode == .tcp ? 0 : 1)
            }
            list(m.endpoints) { writer, endpoint in
                writer.string(endpoint.task.rawValue); writer.string(endpoint.address)
                writer.list(endpoint.ports) { writer, port in writer.publishedPort(port) }
                writer.u8(endpoint.state.rawValue)
            }
            duration(m.drain)
        case .error(let m):
            u16(m.code.rawValue); string(m.message)
        }
    }

    /// `published_port`: `u16 container_port`, `protocol`, `string host_ip`, `u16 host_port`.
    mutating func publishedPort(_ port: PublishedPort) {
        u16(UInt16(clamping: port.containerPort)); u8(port.protocol.wireValue)
        string(port.hostIP); u16(UInt16(clamping: port.hostPort))
    }

    /// A task spec, field by field (WIRE.md, "task spec").
    mutating func spec(_ spec: TaskSpec) {
        optional(spec.id) { $0.string($1.rawValue) }
        optional(spec.name) { $0.string($1) }
        string(spec.image)
        optional(spec.command) { writer, command in writer.list(command) { $0.string($1) } }
        map(spec.environment)
        list(spec.ports) { writer, port in
            writer.u16(UInt16(clamping: port.containerPort)); writer.u8(port.protocol.wireValue)
            writer.optional(port.hostPort) { $0.u16(UInt16(clamping: $1)) }
        }
        u32(UInt32(clamping: spec.resources.millicores)); u64(UInt64(clamping: spec.resources.memoryBytes))
        optional(spec.resources.cpuLimitMillicores) { $0.u32(UInt32(clamping: $1)) }
        optional(spec.resources.memoryMaxBytes) { $0.u64(UInt64(clamping: $1)) }
        u8(spec.restartPolicy.mode.wireValue)
        optional(spec.restartPolicy.maxRestarts) { $0.u32(UInt32(clamping: $1)) }
        duration(spec.stopGracePeriod)
        optional(spec.healthCheck) { writer, check in
            writer.string(check.path); writer.u16(UInt16(clamping: check.port))
            writer.duration(check.interval); writer.duration(check.timeout); writer.u32(UInt32(clamping: check.failureThreshold))
        }
        optional(spec.constraints.node) { $0.string($1) }
        map(spec.constraints.labels)
        optional(spec.disconnect) { $0.duration($1.stopAfter) }
    }
}

extension WireReader {
    mutating func message(_ kind: WireMessage.Kind) throws(WireError) -> WireMessage {
        switch kind {
        case .hello:
            let oldest = try u16("hello.oldestVersion"), newest = try u16("hello.newestVersion")
            let node = NodeID(rawValue: try string("hello.nodeID")), name = try string("hello.name")
            let addresses = try list("hello.addresses") { (r: inout WireReader) throws(WireError) in try r.string("hello.addresses[]") }
            let capacity = Capacity(
                millicores: try u32("hello.capacity.millicores"), memoryBytes: try u64("hello.capacity.memoryBytes"),
                diskBytes: try u64("hello.capacity.diskBytes"))
            let labels = try map("hello.labels")
            return .hello(Hello(
                oldestVersion: oldest, newestVersion: newest, nodeID: node, name: name, addresses: addresses,
                capacity: capacity, labels: labels))
        case .joinRequest:
            let oldest = try u16("join.oldestVersion"), newest = try u16("join.newestVersion")
            let node = NodeID(rawValue: try string("join.nodeID"))
            let secret = try optional("join.secret") { (r: inout WireReader) throws(WireError) in try r.string("join.secret") }
            return .joinRequest(JoinRequest(
                oldestVersion: oldest, newestVersion: newest, nodeID: node, secret: secret, csr: try bytes("join.csr")))
        case .joinResult:
            return .joinResult(JoinResult(
                version: try u16("joined.version"), nodeID: NodeID(rawValue: try string("joined.nodeID")),
                certificate: try bytes("joined.certificate"), caCertificate: try bytes("joined.caCertificate")))
        case .welcome:
            return .welcome(Welcome(
                version: try u16("welcome.version"), heartbeatInterval: try duration("welcome.heartbeatInterval"),
                serviceTables: try u32("welcome.serviceTables"), epoch: try u64("welcome.epoch")))
        case .refused:
            return .refused(Refused(
                code: try enum16("refused.code", as: Refused.Code.self), permanent: try bool("refused.permanent"),
                reason: try string("refused.reason"),
                leader: try optional("refused.leader") { (r: inout WireReader) throws(WireError) in try r.string("refused.leader") }))
        case .heartbeat:
            let sequence = try u64("heartbeat.sequence")
            let metrics = MachineMetrics(
                cpuMillicoresUsed: try u32("heartbeat.cpu"), memoryUsedBytes: try u64("heartbeat.memoryUsed"),
                memoryTotalBytes: try u64("heartbeat.memoryTotal"), diskUsedBytes: try u64("heartbeat.diskUsed"),
                diskTotalBytes: try u64("heartbeat.diskTotal"), load1Hundredths: try u32("heartbeat.load1"),
                load5Hundredths: try u32("heartbeat.load5"), load15Hundredths: try u32("heartbeat.load15"),
                runningTasks: try u32("heartbeat.runningTasks"))
            let engineError = try optional("heartbeat.engineError") { (r: inout WireReader) throws(WireError) in try r.string("heartbeat.engineError") }
            return .heartbeat(Heartbeat(sequence: sequence, metrics: metrics, engineError: engineError))
        case .assignTask:
            return .assignTask(AssignTask(
                task: try taskID("assign.task"), attempt: try u64("assign.attempt"), spec: try spec("assign.spec"),
                epoch: try u64("assign.epoch")))
        case .stopTask:
            return .stopTask(StopTask(task: try taskID("stop.task"), attempt: try u64("stop.attempt"), epoch: try u64("stop.epoch")))
        case .taskStatus:
            let statusID = try u64("status.statusID"), task = try taskID("status.task"), attempt = try u64("status.attempt")
            let state = try taskState("status.state")
            let container = try optional("status.container") { (r: inout WireReader) throws(WireError) in
                ContainerID(rawValue: try r.string("status.container"))
            }
            let exitCode = try optional("status.exitCode") { (r: inout WireReader) throws(WireError) in try r.i32("status.exitCode") }
            let error = try optional("status.error") { (r: inout WireReader) throws(WireError) in try r.string("status.error") }
            let ports = try list("status.ports") { (r: inout WireReader) throws(WireError) in try r.publishedPort("status.ports[]") }
            let health = try taskHealth("status.health")
            return .taskStatus(TaskStatus(
                statusID: statusID, task: task, attempt: attempt, state: state, container: container,
                exitCode: exitCode, error: error, ports: ports, health: health))
        case .taskList:
            let entries = try list("taskList.entries") { (r: inout WireReader) throws(WireError) in
                TaskList.Entry(
                    task: try r.taskID("taskList.entries[].task"), attempt: try r.u64("taskList.entries[].attempt"),
                    state: try r.taskState("taskList.entries[].state"),
                    container: try r.optional("taskList.entries[].container") { (r: inout WireReader) throws(WireError) in
                        ContainerID(rawValue: try r.string("taskList.entries[].container"))
                    })
            }
            return .taskList(TaskList(entries: entries))
        case .submitTask:
            return .submitTask(SubmitTask(requestID: try u64("submit.requestID"), spec: try spec("submit.spec")))
        case .submitResult:
            let request = try u64("submitResult.requestID")
            let task = try optional("submitResult.task") { (r: inout WireReader) throws(WireError) in try r.taskID("submitResult.task") }
            let error = try optional("submitResult.error") { (r: inout WireReader) throws(WireError) in try r.string("submitResult.error") }
            return .submitResult(SubmitResult(requestID: request, task: task, error: error))
        case .ack:
            return .ack(Ack(statusID: try u64("ack.statusID")))
        case .logRequest:
            let stream = try u64("logRequest.streamID"), task = try taskID("logRequest.task")
            let tail = try optional("logRequest.tail") { (r: inout WireReader) throws(WireError) in try r.u32("logRequest.tail") }
            return .logRequest(LogRequest(
                streamID: stream, task: task, tail: tail, follow: try bool("logRequest.follow"), credit: try u32("logRequest.credit"),
                attempt: try u64("logRequest.attempt")))
        case .logChunk:
            return .logChunk(LogData(
                streamID: try u64("logChunk.streamID"), stream: try `enum`("logChunk.stream", as: LogData.Stream.self),
                bytes: try bytes("logChunk.bytes")))
        case .logCredit:
            return .logCredit(LogCredit(streamID: try u64("logCredit.streamID"), bytes: try u32("logCredit.bytes")))
        case .logEnd:
            let stream = try u64("logEnd.streamID")
            let error = try optional("logEnd.error") { (r: inout WireReader) throws(WireError) in try r.string("logEnd.error") }
            return .logEnd(LogEnd(streamID: stream, error: error))
        case .goodbye:
            return .goodbye(Goodbye(reason: try `enum`("goodbye.reason", as: Goodbye.Reason.self), message: try string("goodbye.message")))
        case .serviceTable:
            let service = try string("table.service"), index = try u64("table.index")
            let listeners = try list("table.listeners") { (r: inout WireReader) throws(WireError) in
                let publish = try r.u16("table.listeners[].publish"), containerPort = try r.u16("table.listeners[].containerPort")
                let mode = try r.u8("table.listeners[].mode")
                guard mode <= 1 else { throw .invalidValue(field: "table.listeners[].mode", value: UInt64(mode)) }
                return ServiceTable.Listener(publish: publish, containerPort: containerPort, mode: mode == 0 ? .tcp : .http)
            }
            let endpoints = try list("table.endpoints") { (r: inout WireReader) throws(WireError) in
                ServiceTable.Endpoint(
                    task: try r.taskID("table.endpoints[].task"), address: try r.string("table.endpoints[].address"),
                    ports: try r.list("table.endpoints[].ports") { (r: inout WireReader) throws(WireError) in try r.publishedPort("table.endpoints[].ports[]") },
                    state: try r.`enum`("table.endpoints[].state", as: ServiceTable.State.self))
            }
            return .serviceTable(ServiceTable(
                service: service, index: index, listeners: listeners, endpoints: endpoints, drain: try duration("table.drain")))
        case .error:
            return .error(ErrorMessage(code: try enum16("error.code", as: WireErrorCode.self), message: try string("error.message")))
        }
    }

    mutating func publishedPort(_ field: String) throws(WireError) -> PublishedPort {
        PublishedPort(
            containerPort: Int(try u16("\(field).containerPort")), protocol: try portProtocol("\(field).protocol"),
            hostIP: try string("\(field).hostIP"), hostPort: Int(try u16("\(field).hostPort")))
    }

    mutating func spec(_ field: String) throws(WireError) -> TaskSpec {
        let id = try optional("\(field).id") { (r: inout WireReader) throws(WireError) in try r.taskID("\(field).id") }
        let name = try optional("\(field).name") { (r: inout WireReader) throws(WireError) in try r.string("\(field).name") }
        let image = try string("\(field).image")
        let command = try optional("\(field).command") { (r: inout WireReader) throws(WireError) in
            try r.list("\(field).command") { (r: inout WireReader) throws(WireError) in try r.string("\(field).command[]") }
        }
        let environment = try map("\(field).environment")
        let ports = try list("\(field).ports") { (r: inout WireReader) throws(WireError) in
            PortSpec(
                containerPort: Int(try r.u16("\(field).ports[].containerPort")),
                protocol: try r.portProtocol("\(field).ports[].protocol"),
                hostPort: try r.optional("\(field).ports[].hostPort") { (r: inout WireReader) throws(WireError) in
                    Int(try r.u16("\(field).ports[].hostPort"))
                })
        }
        let resources = Resources(
            millicores: Int(try u32("\(field).resources.millicores")),
            memoryBytes: Int(clamping: try u64("\(field).resources.memoryBytes")),
            cpuLimitMillicores: try optional("\(field).resources.cpuLimit") { (r: inout WireReader) throws(WireError) in
                Int(try r.u32("\(field).resources.cpuLimit"))
            },
            memoryMaxBytes: try optional("\(field).resources.memoryMax") { (r: inout WireReader) throws(WireError) in
                Int(clamping: try r.u64("\(field).resources.memoryMax"))
            })
        let mode = try restartMode("\(field).restartPolicy.mode")
        let maxRestarts = try optional("\(field).restartPolicy.maxRestarts") { (r: inout WireReader) throws(WireError) in
            Int(try r.u32("\(field).restartPolicy.maxRestarts"))
        }
        let grace = try duration("\(field).stopGracePeriod")
        let check = try optional("\(field).healthCheck") { (r: inout WireReader) throws(WireError) in
            HealthCheck(
                path: try r.string("\(field).healthCheck.path"), port: Int(try r.u16("\(field).healthCheck.port")),
                interval: try r.duration("\(field).healthCheck.interval"), timeout: try r.duration("\(field).healthCheck.timeout"),
                failureThreshold: Int(try r.u32("\(field).healthCheck.failureThreshold")))
        }
        let node = try optional("\(field).constraints.node") { (r: inout WireReader) throws(WireError) in
            try r.string("\(field).constraints.node")
        }
        let labels = try map("\(field).constraints.labels")
        let disconnect = try optional("\(field).disconnect") { (r: inout WireReader) throws(WireError) in
            DisconnectPolicy(stopAfter: try r.duration("\(field).disconnect.stopAfter"))
        }
        return TaskSpec(
            id: id, name: name, image: image, command: command, environment: environment, ports: ports,
            resources: resources, restartPolicy: RestartPolicy(mode: mode, maxRestarts: maxRestarts),
            stopGracePeriod: grace, healthCheck: check, constraints: PlacementConstraints(node: node, labels: labels),
            disconnect: disconnect)
    }

    mutating func taskID(_ field: String) throws(WireError) -> TaskID { TaskID(rawValue: try string(field)) }

    mutating func enum16<T: RawRepresentable>(_ field: String, as: T.Type) throws(WireError) -> T where T.RawValue == UInt16 {
        let raw = try u16(field)
        guard let value = T(rawValue: raw) else { throw .invalidValue(field: field, value: UInt64(raw)) }
        return value
    }

    mutating func taskState(_ field: String) throws(WireError) -> TaskState {
        let raw = try u8(field)
        guard let state = TaskState.wireValues[raw] else { throw .invalidValue(field: field, value: UInt64(raw)) }
        return state
    }

    mutating func taskHealth(_ field: String) throws(WireError) -> TaskHealth {
        let raw = try u8(field)
        guard let health = TaskHealth.wireValues[raw] else { throw .invalidValue(field: field, value: UInt64(raw)) }
        return health
    }

    mutating func portProtocol(_ field: String) throws(WireError) -> PortProtocol {
        switch try u8(field) {
        case 0: .tcp
        case 1: .udp
        case let other: throw .invalidValue(field: field, value: UInt64(other))
        }
    }

    mutating func restartMode(_ field: String) throws(WireError) -> RestartMode {
        switch try u8(field) {
        case 0: .never
        case 1: .onFailure
        case 2: .always
        case let other: throw .invalidValue(field: field, value: UInt64(other))
        }
    }
}

// MARK: - Enum values on the wire

extension TaskState {
    static let wireValues: [UInt8: TaskState] = [
        0: .pending, 1: .scheduled, 2: .running, 3: .stopping, 4: .completed, 5: .failed, 6: .lost,
    ]
    var wireValue: UInt8 {
        switch self {
        case .pending: 0
        case .scheduled: 1
        case .running: 2
        case .stopping: 3
        case .completed: 4
        case .failed: 5
        case .lost: 6
        }
    }
}

extension TaskHealth {
    static let wireValues: [UInt8: TaskHealth] = [0: .none, 1: .starting, 2: .healthy, 3: .unhealthy]
    var wireValue: UInt8 {
        switch self {
        case .none: 0
        case .starting: 1
        case .healthy: 2
        case .unhealthy: 3
        }
    }
}

extension PortProtocol {
    var wireValue: UInt8 { self == .tcp ? 0 : 1 }
}

extension RestartMode {
    var wireValue: UInt8 {
        switch self {
        case .never: 0
        case .onFailure: 1
        case .always: 2
        }
    }
}
