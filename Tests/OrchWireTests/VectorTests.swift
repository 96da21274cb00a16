import Foundation
import NIOCore
import OrchCore
@testable import OrchWire
import Testing

let vectorsDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Protocol/vectors")

/// The bytes of a vector file: hex digits, with `#` comments and white space ignored.
func vectorBytes(_ url: URL) throws -> [UInt8] {
    let text = try String(contentsOf: url, encoding: .utf8)
    let hex = text.split(separator: "\n").map { $0.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? "" }
        .joined().filter { !$0.isWhitespace }
    var bytes: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        bytes.append(try #require(UInt8(hex[index..<next], radix: 16), "bad hex in \(url.lastPathComponent)"))
        index = next
    }
    return bytes
}

/// What each vector must decode to, written from the vector's own comment.
let expectedMessages: [String: WireMessage] = [
    "hello": .hello(Hello(
        oldestVersion: 8, newestVersion: 8, nodeID: NodeID(rawValue: "n1"), name: "w", addresses: ["127.0.0.1:5557"],
        capacity: Capacity(millicores: 2000, memoryBytes: 1 << 30, diskBytes: 10 << 30), labels: ["zone": "a"])),
    "welcome": .welcome(Welcome(version: 8, heartbeatInterval: .seconds(1), serviceTables: 2, epoch: 3)),
    "join_request": .joinRequest(JoinRequest(
        oldestVersion: 8, newestVersion: 8, nodeID: NodeID(rawValue: "n1"), secret: "s3", csr: [0x30, 0x02, 0x05, 0x00])),
    "join_request_renewal": .joinRequest(JoinRequest(
        oldestVersion: 8, newestVersion: 8, nodeID: NodeID(rawValue: "n1"), secret: nil, csr: [0x30, 0x02, 0x05, 0x00])),
    "join_result": .joinResult(JoinResult(
        version: 8, nodeID: NodeID(rawValue: "n1"), certificate: [0x30, 0x01, 0x00], caCertificate: [0x30, 0x00])),
    "refused_removed": .refused(Refused(code: .nodeRemoved, permanent: true, reason: "n1 was removed")),
    "refused_duplicate": .refused(Refused(code: .duplicateNode, permanent: false, reason: "n1 is connected")),
    "refused_not_leader": .refused(Refused(code: .notLeader, permanent: false, reason: "this manager does not lead", leader: "127.0.0.1:5556")),
    "heartbeat_answer": .heartbeat(Heartbeat(sequence: 7, metrics: MachineMetrics())),
    "heartbeat_engine_down": .heartbeat(Heartbeat(
        sequence: 8, metrics: MachineMetrics(runningTasks: 2), engineError: "engine: connection refused")),
    "assign_task_disconnect": .assignTask(AssignTask(task: TaskID(rawValue: "t1"), attempt: 1, spec: TaskSpec(
        id: TaskID(rawValue: "t1"), image: "img", disconnect: DisconnectPolicy(stopAfter: .seconds(10))), epoch: 3)),
    "refused": .refused(Refused(code: .noCommonVersion, permanent: true, reason: "no common version")),
    "heartbeat": .heartbeat(Heartbeat(sequence: 7, metrics: MachineMetrics(
        cpuMillicoresUsed: 1500, memoryUsedBytes: 256 << 20, memoryTotalBytes: 1 << 30, diskUsedBytes: 1 << 30,
        diskTotalBytes: 10 << 30, load1Hundredths: 150, load5Hundredths: 100, load15Hundredths: 50, runningTasks: 3))),
    "assign_task": .assignTask(AssignTask(task: TaskID(rawValue: "t1"), attempt: 2, spec: TaskSpec(
        id: TaskID(rawValue: "t1"), image: "img", command: ["sleep", "9"], environment: ["A": "1"],
        ports: [PortSpec(containerPort: 8080)],
        resources: Resources(millicores: 100, memoryBytes: 64 << 20, cpuLimitMillicores: 200, memoryMaxBytes: 128 << 20),
        restartPolicy: RestartPolicy(mode: .onFailure, maxRestarts: 3),
        healthCheck: HealthCheck(path: "/h", port: 8080, interval: .seconds(10), timeout: .seconds(2), failureThreshold: 3)), epoch: 3)),
    "stop_task": .stopTask(StopTask(task: TaskID(rawValue: "t1"), attempt: 2, epoch: 3)),
    "task_status": .taskStatus(TaskStatus(
        statusID: 5, task: TaskID(rawValue: "t1"), attempt: 2, state: .running, container: ContainerID(rawValue: "c1"),
        ports: [PublishedPort(containerPort: 8080, protocol: .tcp, hostIP: "127.0.0.1", hostPort: 32768)], health: .healthy)),
    "task_status_failed": .taskStatus(TaskStatus(
        statusID: 6, task: TaskID(rawValue: "t1"), attempt: 2, state: .failed, exitCode: -1, error: "boom")),
    "task_list": .taskList(TaskList(entries: [
        .init(task: TaskID(rawValue: "t1"), attempt: 2, state: .running, container: ContainerID(rawValue: "c1")),
        .init(task: TaskID(rawValue: "t2"), attempt: 1, state: .completed),
    ])),
    "submit_task": .submitTask(SubmitTask(requestID: 9, spec: TaskSpec(image: "img", constraints: PlacementConstraints(node: "n1")))),
    "submit_result": .submitResult(SubmitResult(requestID: 9, task: TaskID(rawValue: "t3"), error: nil)),
    "ack": .ack(Ack(statusID: 5)),
    "log_request": .logRequest(LogRequest(streamID: 1, task: TaskID(rawValue: "t1"), tail: 100, follow: true, credit: 65536, attempt: 3)),
    "log_chunk": .logChunk(LogData(streamID: 1, stream: .stdout, bytes: Array("hi\n".utf8))),
    "log_credit": .logCredit(LogCredit(streamID: 1, bytes: 65536)),
    "log_end": .logEnd(LogEnd(streamID: 1, error: nil)),
    "goodbye": .goodbye(Goodbye(reason: .restarting, message: "upgrade")),
    "service_table": .serviceTable(ServiceTable(
        service: "web", index: 9, listeners: [.init(publish: 8080, containerPort: 80, mode: .http)],
        endpoints: [.init(task: TaskID(rawValue: "t1"), address: "127.0.0.2",
                          ports: [PublishedPort(containerPort: 80, protocol: .tcp, hostIP: "127.0.0.2", hostPort: 32768)], state: .draining)],
        drain: .seconds(2))),
    "service_table_removed": .serviceTable(ServiceTable(service: "web", index: 10, listeners: [], endpoints: [], drain: .zero)),
    "error": .error(ErrorMessage(code: .unexpectedMessage, message: "hello first")),
]

func vectorNames(_ folder: URL) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".hex") }
        .map { String($0.dropLast(4)) }.sorted()
}

/// The name of a wire error as malformed vectors write it.
func errorName(_ error: WireError) -> String {
    switch error {
    case .frameTooLarge: "frame_too_large"
    case .emptyFrame: "empty_frame"
    case .unknownType: "unknown_type"
    case .truncated: "truncated"
    case .invalidUTF8: "invalid_utf8"
    case .listTooLong: "list_too_long"
    case .invalidValue: "invalid_value"
    case .trailingBytes: "trailing_bytes"
    }
}

@Suite struct VectorTests {
    @Test func everyMessageTypeHasAVector() throws {
        let names = try vectorNames(vectorsDirectory)
        #expect(Set(names) == Set(expectedMessages.keys))
        #expect(Set(expectedMessages.values.map(\.kind)) == Set(WireMessage.Kind.allCases))
    }

    @Test("Each vector decodes to its message and encodes back to the same bytes", arguments: expectedMessages.keys.sorted())
    func vectorRoundTrips(name: String) throws {
        let bytes = try vectorBytes(vectorsDirectory.appendingPathComponent("\(name).hex"))
        var buffer = ByteBuffer(bytes: bytes)
        let message = try Frame.decode(from: &buffer)
        #expect(message == expectedMessages[name])
        #expect(buffer.readableBytes == 0)
        #expect(Array(Frame.encode(try #require(expectedMessages[name])).readableBytesView) == bytes)
    }

    @Test("Each malformed vector gives its documented error", arguments: try vectorNames(vectorsDirectory.appendingPathComponent("malformed")))
    func malformedVectorIsRefused(name: String) throws {
        let url = vectorsDirectory.appendingPathComponent("malformed/\(name).hex")
        let firstLine = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").first ?? ""
        let expected = try #require(firstLine.split(separator: "# error: ").last.map(String.init))
        var buffer = ByteBuffer(bytes: try vectorBytes(url))
        #expect {
            _ = try Frame.decode(from: &buffer)
        } throws: { error in
            (error as? WireError).map(errorName) == expected
        }
    }

    @Test func versionNegotiationPicksTheHighestCommonVersion() {
        #expect(ProtocolVersion.negotiate(peerOldest: 1, peerNewest: 9) == 8)
        #expect(ProtocolVersion.negotiate(peerOldest: 9, peerNewest: 10) == nil)
        #expect(ProtocolVersion.negotiate(peerOldest: 7, peerNewest: 7) == nil, "version 7 carries no leader's epoch")
        #expect(ProtocolVersion.negotiate(peerOldest: 6, peerNewest: 6) == nil, "version 6 names no attempt in its log requests")
        #expect(ProtocolVersion.negotiate(peerOldest: 5, peerNewest: 5) == nil, "version 5 has no CPU cap or memory maximum in its specs")
        #expect(ProtocolVersion.negotiate(peerOldest: 4, peerNewest: 4) == nil, "version 4 has no service tables")
        #expect(ProtocolVersion.negotiate(peerOldest: 3, peerNewest: 3) == nil, "version 3 has no join exchange (and a token in its hello)")
        #expect(ProtocolVersion.negotiate(peerOldest: 1, peerNewest: 1) == nil, "version 1 has no disconnect block in its specs")
        #expect(ProtocolVersion.negotiate(peerOldest: 2, peerNewest: 2) == nil, "version 2 has no engine error in its heartbeats")
    }
}
