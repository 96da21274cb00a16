import Foundation
import NIOCore
import OrchCore
@testable import OrchWire
import Testing

/// SplitMix64: small, seedable, the same sequence on every machine.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Decodes one whole input: a message, or a typed error (an incomplete frame is `truncated`).
func decodeWhole(_ bytes: [UInt8]) throws(WireError) -> WireMessage {
    var buffer = ByteBuffer(bytes: bytes)
    guard let message = try Frame.decode(from: &buffer) else { throw .truncated(field: "frame") }
    return message
}

@Suite struct FuzzTests {
    static let seed: UInt64 = {
        let seed = ProcessInfoSeed.value ?? UInt64.random(in: 0...UInt64.max)
        print("wire fuzz seed: \(seed) (set ORCH_FUZZ_SEED to replay)")
        return seed
    }()

    @Test func randomAndMutatedFramesEndInAMessageOrATypedError() throws {
        var random = SeededGenerator(state: Self.seed)
        let valid = try vectorNames(vectorsDirectory).map { try vectorBytes(vectorsDirectory.appendingPathComponent("\($0).hex")) }
        var messages = 0, errors = 0
        for round in 0..<100_000 {
            var input: [UInt8]
            switch round % 4 {
            case 0:   // random bytes, often with a plausible header
                input = (0..<Int.random(in: 0...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                if input.count > 5, Bool.random(using: &random) {
                    let length = UInt32(input.count - 4)
                    input.replaceSubrange(0..<4, with: [UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)])
                }
            case 1:   // a valid frame with bytes flipped (the header kept, so the body is read)
                input = valid.randomElement(using: &random)!
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    input[Int.random(in: 4..<input.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            case 2:   // a valid frame cut short or with a wrong length
                input = valid.randomElement(using: &random)!
                if Bool.random(using: &random) {
                    input = Array(input.prefix(Int.random(in: 0..<input.count, using: &random)))
                } else {
                    input[Int.random(in: 0..<4, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            default:   // a random valid message
                input = Array(Frame.encode(RandomMessages.message(using: &random)).readableBytesView)
            }
            do {
                let message = try decodeWhole(input)
                messages += 1
                // Whatever decodes must encode to a frame that decodes to the same message.
                let again = try decodeWhole(Array(Frame.encode(message).readableBytesView))
                if again != message { Issue.record("round trip failed (seed \(Self.seed), round \(round)): \(message)") }
            } catch {
                errors += 1
            }
        }
        #expect(messages + errors == 100_000)
        #expect(messages >= 25_000, "the random valid messages all decode")
        #expect(errors > 0)
    }

    @Test func randomValidMessagesRoundTripExactly() throws {
        var random = SeededGenerator(state: Self.seed ^ 0x5555)
        for _ in 0..<10_000 {
            let message = RandomMessages.message(using: &random)
            let bytes = Array(Frame.encode(message).readableBytesView)
            #expect(try decodeWhole(bytes) == message, "seed \(Self.seed)")
        }
    }
}

enum ProcessInfoSeed {
    static let value: UInt64? = {
        guard let text = getenv("ORCH_FUZZ_SEED") else { return nil }
        return UInt64(String(cString: text))
    }()
}

/// Random messages within the ranges the wire carries.
enum RandomMessages {
    static func string(_ r: inout SeededGenerator) -> String {
        let alphabet = Array("abcXYZ019-_./:é漢🙂 ")
        return String((0..<Int.random(in: 0...12, using: &r)).map { _ in alphabet.randomElement(using: &r)! })
    }

    static func map(_ r: inout SeededGenerator) -> [String: String] {
        var map: [String: String] = [:]
        for _ in 0..<Int.random(in: 0...3, using: &r) { map[string(&r)] = string(&r) }
        return map
    }

    static func optional<T>(_ r: inout SeededGenerator, _ make: (inout SeededGenerator) -> T) -> T? {
        Bool.random(using: &r) ? make(&r) : nil
    }

    static func duration(_ r: inout SeededGenerator) -> Duration { .nanoseconds(Int64.random(in: 0...Int64.max, using: &r)) }

    static func spec(_ r: inout SeededGenerator) -> TaskSpec {
        TaskSpec(
            id: optional(&r) { TaskID(rawValue: string(&$0)) }, name: optional(&r, string), image: string(&r),
            command: optional(&r) { r in (0..<Int.random(in: 0...3, using: &r)).map { _ in string(&r) } },
            environment: map(&r),
            ports: (0..<Int.random(in: 0...3, using: &r)).map { _ in
                PortSpec(containerPort: Int.random(in: 0...65535, using: &r), protocol: Bool.random(using: &r) ? .tcp : .udp,
                         hostPort: optional(&r) { Int.random(in: 0...65535, using: &$0) })
            },
            resources: Resources(millicores: Int.random(in: 0...Int(UInt32.max), using: &r), memoryBytes: Int.random(in: 0...Int.max, using: &r)),
            restartPolicy: RestartPolicy(mode: RestartMode.allCases.randomElement(using: &r)!,
                                         maxRestarts: optional(&r) { Int.random(in: 0...Int(UInt32.max), using: &$0) }),
            stopGracePeriod: duration(&r),
            healthCheck: optional(&r) { r in
                HealthCheck(path: string(&r), port: Int.random(in: 0...65535, using: &r), interval: duration(&r),
                            timeout: duration(&r), failureThreshold: Int.random(in: 0...Int(UInt32.max), using: &r))
            },
            constraints: PlacementConstraints(node: optional(&r, string), labels: map(&r)))
    }

    static func message(using r: inout SeededGenerator) -> WireMessage {
        let u64 = { (r: inout SeededGenerator) in UInt64.random(in: 0...UInt64.max, using: &r) }
        let u32 = { (r: inout SeededGenerator) in UInt32.random(in: 0...UInt32.max, using: &r) }
        let task = { (r: inout SeededGenerator) in TaskID(rawValue: string(&r)) }
        switch WireMessage.Kind.allCases.randomElement(using: &r)! {
        case .hello:
            return .hello(Hello(
                oldestVersion: .random(in: 0...9, using: &r), newestVersion: .random(in: 0...9, using: &r),
                nodeID: NodeID(rawValue: string(&r)), name: string(&r), addresses: [string(&r)],
                capacity: Capacity(millicores: u32(&r), memoryBytes: u64(&r), diskBytes: u64(&r)), labels: map(&r)))
        case .joinRequest:
            return .joinRequest(JoinRequest(
                oldestVersion: .random(in: 0...9, using: &r), newestVersion: .random(in: 0...9, using: &r),
                nodeID: NodeID(rawValue: string(&r)), secret: optional(&r, string), csr: Array(string(&r).utf8)))
        case .joinResult:
            return .joinResult(JoinResult(
                version: .random(in: 0...9, using: &r), nodeID: NodeID(rawValue: string(&r)),
                certificate: Array(string(&r).utf8), caCertificate: Array(string(&r).utf8)))
        case .welcome: return .welcome(Welcome(version: .random(in: 0...9, using: &r), heartbeatInterval: duration(&r), serviceTables: u32(&r)))
        case .refused:
            return .refused(Refused(code: Refused.Code.allCases.randomElement(using: &r)!, permanent: .random(using: &r), reason: string(&r)))
        case .heartbeat:
            return .heartbeat(Heartbeat(sequence: u64(&r), metrics: MachineMetrics(
                cpuMillicoresUsed: u32(&r), memoryUsedBytes: u64(&r), memoryTotalBytes: u64(&r), diskUsedBytes: u64(&r),
                diskTotalBytes: u64(&r), load1Hundredths: u32(&r), load5Hundredths: u32(&r), load15Hundredths: u32(&r),
                runningTasks: u32(&r))))
        case .assignTask: return .assignTask(AssignTask(task: task(&r), attempt: u64(&r), spec: spec(&r)))
        case .stopTask: return .stopTask(StopTask(task: task(&r), attempt: u64(&r)))
        case .taskStatus:
            return .taskStatus(TaskStatus(
                statusID: u64(&r), task: task(&r), attempt: u64(&r), state: TaskState.allCases.randomElement(using: &r)!,
                container: optional(&r) { ContainerID(rawValue: string(&$0)) }, exitCode: optional(&r) { Int32.random(in: .min ... .max, using: &$0) },
                error: optional(&r, string),
                ports: [PublishedPort(containerPort: .random(in: 0...65535, using: &r), protocol: .udp, hostIP: string(&r), hostPort: .random(in: 0...65535, using: &r))],
                health: [TaskHealth.none, .starting, .healthy, .unhealthy].randomElement(using: &r)!))
        case .taskList:
            return .taskList(TaskList(entries: (0..<Int.random(in: 0...3, using: &r)).map { _ in
                .init(task: task(&r), attempt: u64(&r), state: TaskState.allCases.randomElement(using: &r)!,
                      container: optional(&r) { ContainerID(rawValue: string(&$0)) })
            }))
        case .submitTask: return .submitTask(SubmitTask(requestID: u64(&r), spec: spec(&r)))
        case .submitResult: return .submitResult(SubmitResult(requestID: u64(&r), task: optional(&r, task), error: optional(&r, string)))
        case .ack: return .ack(Ack(statusID: u64(&r)))
        case .logRequest:
            return .logRequest(LogRequest(streamID: u64(&r), task: task(&r), tail: optional(&r, u32), follow: .random(using: &r), credit: u32(&r), attempt: u64(&r)))
        case .logChunk:
            return .logChunk(LogData(streamID: u64(&r), stream: Bool.random(using: &r) ? .stdout : .stderr, bytes: Array(string(&r).utf8)))
        case .logCredit: return .logCredit(LogCredit(streamID: u64(&r), bytes: u32(&r)))
        case .logEnd: return .logEnd(LogEnd(streamID: u64(&r), error: optional(&r, string)))
        case .goodbye: return .goodbye(Goodbye(reason: Goodbye.Reason.allCases.randomElement(using: &r)!, message: string(&r)))
        case .serviceTable:
            return .serviceTable(ServiceTable(
                service: string(&r), index: u64(&r),
                listeners: (0..<Int.random(in: 0...3, using: &r)).map { _ in .init(publish: .random(in: 0...UInt16.max, using: &r), containerPort: .random(in: 0...UInt16.max, using: &r), mode: Bool.random(using: &r) ? .tcp : .http) },
                endpoints: (0..<Int.random(in: 0...3, using: &r)).map { _ in
                    .init(task: task(&r), address: string(&r), ports: [PublishedPort(containerPort: .random(in: 0...65535, using: &r), protocol: .tcp, hostIP: string(&r), hostPort: .random(in: 0...65535, using: &r))], state: ServiceTable.State.allCases.randomElement(using: &r)!)
                },
                drain: duration(&r)))
        case .error: return .error(ErrorMessage(code: WireErrorCode.allCases.randomElement(using: &r)!, message: string(&r)))
        }
    }
}
