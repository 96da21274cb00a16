import Foundation
import NIOCore
import NIOPosix
import OrchCore
@testable import OrchWire
import Synchronization
import Testing

/// Counts connections that completed the handshake and are still open.
final class ConnectionCounter: Sendable {
    let state = Mutex((open: 0, peak: 0, heartbeats: 0))
    func opened() { state.withLock { $0.open += 1; $0.peak = max($0.peak, $0.open) } }
    func closed() { state.withLock { $0.open -= 1 } }
    func heartbeat() { state.withLock { $0.heartbeats += 1 } }
}

/// A minimal manager side: answers hello with welcome and counts heartbeats.
func serveHandshake(_ connection: WireChannel, counter: ConnectionCounter) async {
    do {
        try await connection.executeThenClose { inbound, outbound in
            var messages = inbound.makeAsyncIterator()
            guard case .hello(let hello)? = try await messages.next(),
                  let version = ProtocolVersion.negotiate(peerOldest: hello.oldestVersion, peerNewest: hello.newestVersion)
            else {
                try await outbound.write(.error(ErrorMessage(code: .unexpectedMessage, message: "hello first")))
                return
            }
            try await outbound.write(.welcome(Welcome(version: version, heartbeatInterval: .seconds(1))))
            counter.opened()
            defer { counter.closed() }
            while let message = try await messages.next() {
                if case .heartbeat = message { counter.heartbeat() }
            }
        }
    } catch {
        // A client that goes away mid-handshake ends only its own connection.
    }
}

/// Runs `body` against a listener on a free loopback port, then stops the listener.
func withListener(
    counter: ConnectionCounter, _ body: @escaping @Sendable (Int) async throws -> Void
) async throws {
    let listener = try await WireListener.bind(host: "127.0.0.1", port: 0)
    let port = try #require(listener.localAddress.port)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await listener.run { await serveHandshake($0, counter: counter) } }
        try await body(port)
        group.cancelAll()
    }
}

func hello(_ index: Int) -> WireMessage {
    .hello(Hello(
        nodeID: NodeID(rawValue: "node-\(index)"), name: "w\(index)", addresses: ["127.0.0.1:0"],
        capacity: Capacity(millicores: 1000, memoryBytes: 1 << 30, diskBytes: 1 << 30)))
}

@Suite("Cluster protocol over loopback TCP", .serialized, .timeLimit(.minutes(3)))
struct TransportTests {
    @Test func listenerOnPortZeroReportsTheRealPort() async throws {
        let listener = try await WireListener.bind(host: "127.0.0.1", port: 0)
        #expect((listener.localAddress.port ?? 0) > 0)
        try await listener.server.channel.close()
    }

    @Test func aThousandClientsAreConnectedAtTheSameMoment() async throws {
        let counter = ConnectionCounter()
        let clients = 1000
        try await withListener(counter: counter) { port in
            let allIn = AsyncStream<Void>.makeStream()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<clients {
                    group.addTask {
                        let channel = try await WireDialer.connect(host: "127.0.0.1", port: port)
                        try await channel.executeThenClose { inbound, outbound in
                            try await outbound.write(hello(index))
                            var messages = inbound.makeAsyncIterator()
                            guard case .welcome? = try await messages.next() else { throw WireError.unknownType(0) }
                            try await outbound.write(.heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics())))
                            // Hold the connection until every client is in.
                            for await _ in allIn.stream { break }
                        }
                    }
                }
                let clock = ContinuousClock()
                let deadline = clock.now + .seconds(60)
                while counter.state.withLock({ $0.open < clients || $0.heartbeats < clients }), clock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                let (open, heartbeats) = counter.state.withLock { ($0.open, $0.heartbeats) }
                #expect(open == clients, "connections open at the same moment")
                #expect(heartbeats == clients)
                allIn.continuation.finish()
                try await group.waitForAll()
            }
        }
    }

    @Test func aMalformedFrameClosesOnlyItsConnection() async throws {
        let counter = ConnectionCounter()
        try await withListener(counter: counter) { port in
            let good = try await WireDialer.connect(host: "127.0.0.1", port: port)
            try await good.executeThenClose { inbound, outbound in
                try await outbound.write(hello(1))
                var messages = inbound.makeAsyncIterator()
                guard case .welcome? = try await messages.next() else { throw WireError.unknownType(0) }
                // A second connection sends a 4 GiB length: it gets an error frame and is closed.
                let bad = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connect(host: "127.0.0.1", port: port) { channel in
                        channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                    }
                let answer = try await bad.executeThenClose { badIn, badOut in
                    try await badOut.write(ByteBuffer(bytes: [0xff, 0xff, 0xff, 0xff]))
                    var bytes = ByteBuffer()
                    for try await chunk in badIn { bytes.writeImmutableBuffer(chunk) }
                    return bytes
                }
                var frame = answer
                guard case .error(let error)? = try Frame.decode(from: &frame) else { Issue.record("expected an error frame"); return }
                #expect(error.code == .frameTooLarge)
                // The good connection still works.
                try await outbound.write(.heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics())))
                let clock = ContinuousClock()
                let deadline = clock.now + .seconds(10)
                while counter.state.withLock({ $0.heartbeats }) < 1, clock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
                #expect(counter.state.withLock { $0.heartbeats } == 1)
            }
        }
    }
    /// A server writes 256 MiB of log chunks to a peer that has stopped reading: its writes
    /// wait (backpressure) instead of piling up in memory, and all arrive once the peer reads.
    @Test func aPeerThatStopsReadingIsMetWithBackpressure() async throws {
        let chunk = [UInt8](repeating: 0x61, count: 60 << 10)
        let total = chunk.count * 4096   // 240 MiB
        // In flight at most: the kernel's socket buffers (both ends), NIO's write watermark
        // and the reader's few buffered reads.
        let inFlight = kernelBufferLimit("tcp_rmem") + kernelBufferLimit("tcp_wmem") + (8 << 20)
        let accepted = Mutex(0)
        let listener = try await WireListener.bind(host: "127.0.0.1", port: 0)
        let port = try #require(listener.localAddress.port)
        let serving = Task {
            try await listener.run { connection in
                let outbound = WireSender(connection)
                try? await connection.executeThenClose { inbound, _ in
                    var messages = inbound.makeAsyncIterator()
                    guard case .hello? = try await messages.next() else { return }
                    while accepted.withLock({ $0 }) < total {
                        try await outbound.write(.logChunk(LogData(streamID: 1, stream: .stdout, bytes: chunk)))
                        accepted.withLock { $0 += chunk.count }
                    }
                }
            }
        }
        defer { serving.cancel() }

        let reader = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let residentBefore = residentBytes()
        let received = try await reader.executeThenClose { inbound, outbound in
            var frame = ByteBuffer()
            Frame.encode(hello(1), into: &frame)
            try await outbound.write(frame)
            // Not reading: the server's writes must stall well short of the total.
            var stalledAt = 0
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(20)
            while clock.now < deadline {
                let before = accepted.withLock { $0 }
                try await Task.sleep(for: .milliseconds(500))
                let after = accepted.withLock { $0 }
                if after == before, after > 0 { stalledAt = after; break }
            }
            #expect(stalledAt > 0, "the server's writes stall while the peer does not read")
            #expect(stalledAt < inFlight, "at most the socket buffers and the write watermark are in flight, not \(stalledAt) bytes")
            let growth = residentBytes() - residentBefore
            print("backpressure: writes stalled at \(stalledAt) of \(total) bytes (limit \(inFlight)), resident memory grew by \(growth) bytes")
            #expect(growth < 100 << 20, "resident memory grew by \(growth) bytes while 240 MiB waited to be written")
            // Reading again: everything arrives.
            var bytes = 0
            for try await buffer in inbound {
                bytes += buffer.readableBytes
                if bytes >= total { break }
            }
            return bytes
        }
        #expect(received > total, "all \(total) bytes of log data arrive, framed")
        // The server counts a chunk once its write returns, which may be a moment after the
        // reader has it: waited for, with a deadline.
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(10)
        while accepted.withLock({ $0 }) < total, clock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(accepted.withLock { $0 } == total)
    }
}

/// The largest buffer the kernel gives one TCP socket (the third field of /proc/sys/net/ipv4/NAME).
func kernelBufferLimit(_ name: String) -> Int {
    let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/\(name)", encoding: .utf8)) ?? ""
    return text.split(whereSeparator: \.isWhitespace).last.flatMap { Int($0) } ?? (8 << 20)
}

/// This process's resident memory, from /proc/self/statm.
func residentBytes() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = statm.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * 4096 : 0
}

@Suite struct ReconnectBackoffTests {
    @Test func delaysDoubleUpToTheMaximumWithJitter() {
        var backoff = ReconnectBackoff(initial: .milliseconds(100), maximum: .seconds(1))
        var random = SeededGenerator(state: 42)
        var ceilings: [Duration] = []
        for _ in 0..<6 {
            ceilings.append(backoff.ceiling)
            let delay = backoff.nextDelay(using: &random)
            #expect(delay >= .zero && delay <= ceilings.last!)
        }
        #expect(ceilings == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
        backoff.reset()
        #expect(backoff.ceiling == .milliseconds(100))
    }
}
