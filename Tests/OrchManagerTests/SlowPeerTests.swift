import Foundation
import NIOCore
import NIOPosix
import OrchCore
@testable import OrchManager
import OrchSecurity
import OrchTestSupport
import OrchWire
import Testing

/// Peers that misbehave on the cluster port (one that stops reading, a thousand that never
/// speak, one that sends garbage after its handshake) cost the others nothing: a well-behaved
/// worker stays up, the REST gateway answers, and the manager's memory stays bounded.
@Suite("Manager against slow and stuck peers over loopback TCP", .serialized, .timeLimit(.minutes(3)))
struct SlowPeerTests {
    typealias Raw = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    func connect(_ port: Int, receiveBuffer: Int? = nil, tls membership: ClusterMembership? = nil) async throws -> Raw {
        try await rawConnection(port, receiveBuffer: receiveBuffer, tls: membership)
    }

    func hello(_ name: String) -> ByteBuffer {
        Frame.encode(.hello(Hello(
            nodeID: NodeID(rawValue: "raw-\(name)"), name: name, addresses: ["127.0.0.1:0"],
            capacity: Capacity(millicores: 64000, memoryBytes: 64 << 30, diskBytes: 1 << 30), labels: [:])))
    }

    /// The REST gateway answers GET /tasks within a second.
    func gatewayAnswers(_ harness: ManagerHarness) async throws -> Bool {
        let address = try #require(harness.manager.httpAddress.withLock { $0 })
        let started = ContinuousClock.now
        let answer = try await http(.GET, "http://\(address)/tasks")
        return answer.status == 200 && ContinuousClock.now - started < .seconds(1)
    }

    @Test func aWorkerThatStopsReadingIsCutOffWhileTheOthersAreServed() async throws {
        let harness = try await ManagerHarness.start(scheduler: .spread, grace: .seconds(30))
        defer { Task { await harness.stop() } }
        // Too small for the tasks below: they all go to the stuck node.
        let good = harness.worker("good", millicores: 100)
        let run = good.start()
        defer { run.cancel() }
        try await harness.waitForNode(good.node, .up)

        // Joins, then never reads again. Each assignment carries a 256 KiB environment: 48
        // of them are 12 MiB of frames it leaves unread, past the 4 MiB the manager allows.
        let stuckNode = NodeID(rawValue: "raw-stuck")
        let stuck = try await connect(harness.wirePort, receiveBuffer: 4096, tls: try await harness.joined(stuckNode))
        try await stuck.outbound.write(hello("stuck"))
        try await harness.waitForNode(stuckNode, .up)
        let padding = String(repeating: "x", count: 256 << 10)
        var spec = task(500)
        spec.environment = ["PADDING": padding]
        let started = ContinuousClock.now
        for _ in 0..<48 { _ = try await harness.submit(spec) }
        var cutAfter: Duration?
        while cutAfter == nil, ContinuousClock.now - started < .seconds(60) {
            if await !harness.cluster.isConnected(stuckNode) { cutAfter = .now - started }
            try await Task.sleep(for: .milliseconds(50))
        }
        let cut = try #require(cutAfter, "the manager never cut off a peer that does not read")
        #expect(cut < .seconds(30))
        #expect(await harness.cluster.listNodes().first { $0.id == good.node }?.state == .up, "the good worker stayed up")
        #expect(await harness.cluster.isConnected(good.node))
        #expect(try await gatewayAnswers(harness))
        stuck.outbound.finish()
        try? await stuck.channel.close()
    }

    @Test func aThousandConnectionsThatNeverSpeakAreClosedAtTheirDeadlineAndCostLittle() async throws {
        let harness = try await ManagerHarness.start(grace: .seconds(30))
        defer { Task { await harness.stop() } }
        let before = residentBytes()
        var silent: [Raw] = []
        for _ in 0..<1000 { silent.append(try await connect(harness.wirePort)) }
        let grown = residentBytes() - before
        // Both ends of every connection are in this process; a connection costs tens of KB.
        #expect(grown < 128 << 20, "1,000 silent connections grew this process by \(grown >> 20) MiB")

        let good = harness.worker("good")
        let run = good.start()
        defer { run.cancel() }
        try await harness.waitForNode(good.node, .up)
        #expect(try await gatewayAnswers(harness), "the gateway answers while they hang on")

        // The handshake deadline (10 s) closes them all: each read ends.
        let connections = silent
        let closed = await withDeadline(ContinuousClock.now + .seconds(30)) {
            await withTaskGroup(of: Bool.self) { group in
                for connection in connections {
                    group.addTask {
                        // A close or a reset both end it; only the deadline leaves it open.
                        (try? await connection.executeThenClose { inbound, _ in
                            for try await _ in inbound {}
                            return !Task.isCancelled
                        }) ?? !Task.isCancelled
                    }
                }
                var count = 0
                for await ended in group where ended { count += 1 }
                return count
            }
        }
        #expect(closed == 1000, "closed by the manager within 30 s: \(closed.map(String.init) ?? "none") of 1000")
        #expect(await harness.cluster.listNodes().first { $0.id == good.node }?.state == .up)
    }

    @Test func garbageAfterAHandshakeGetsAnErrorAndClosesOnlyThatConnection() async throws {
        let harness = try await ManagerHarness.start(grace: .seconds(30))
        defer { Task { await harness.stop() } }
        let good = harness.worker("good")
        let run = good.start()
        defer { run.cancel() }
        try await harness.waitForNode(good.node, .up)

        let rude = try await connect(harness.wirePort, tls: try await harness.joined(NodeID(rawValue: "raw-rude")))
        let received = try await rude.executeThenClose { inbound, outbound in
            try await outbound.write(hello("rude"))
            var bytes = ByteBuffer()
            var iterator = inbound.makeAsyncIterator()
            // The welcome first; then the garbage.
            while bytes.readableBytes < 4 || bytes.readableBytes < 4 + Int(bytes.getInteger(at: bytes.readerIndex, as: UInt32.self) ?? 0) {
                guard let chunk = try await iterator.next() else { break }
                bytes.writeImmutableBuffer(chunk)
            }
            var garbage = ByteBuffer()
            garbage.writeBytes([0, 0, 0, 8, 0x7f, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02])
            try await outbound.write(garbage)
            while let chunk = try await iterator.next() { bytes.writeImmutableBuffer(chunk) }
            return bytes
        }
        var frames = received
        var messages: [WireMessage] = []
        while let message = try Frame.decode(from: &frames) { messages.append(message) }
        #expect(messages.first.map { if case .welcome = $0 { true } else { false } } == true, "welcomed first: \(messages.map(\.kind))")
        let error = messages.compactMap { if case .error(let error) = $0 { error } else { nil } }.first
        #expect(error?.code == .malformedFrame, "then an error frame: \(messages.map(\.kind))")
        #expect(await harness.cluster.listNodes().first { $0.id == good.node }?.state == .up)
        #expect(try await gatewayAnswers(harness))
    }
}

/// A connection to the cluster port that carries bytes as they are (frames written by
/// hand), in TLS with the node certificate of `membership` when given.
func rawConnection(_ port: Int, receiveBuffer: Int? = nil, tls membership: ClusterMembership? = nil) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
    var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    if let receiveBuffer { bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer)) }
    let tls = membership?.tlsHandler
    return try await bootstrap.connect(host: "127.0.0.1", port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
            if let tls { try channel.pipeline.syncOperations.addHandler(try tls()) }
            return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
        }
    }
}

/// This process's resident memory (VmRSS), in bytes.
func residentBytes() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
    return kilobytes << 10
}
