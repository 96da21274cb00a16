#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
import OrchCore

/// Where a worker's connection to its manager stands.
public enum ConnectionState: Sendable, Hashable {
    /// Dialing; `attempt` counts the tries since the last connection held.
    case connecting(attempt: Int)
    /// Welcomed by the manager.
    case connected(version: UInt16, heartbeatInterval: Duration)
    /// The connection failed or dropped; the next try comes after `retryIn`.
    case disconnected(reason: String, retryIn: Duration)
    /// Refused for good: the client has stopped.
    case refused(Refused)
}

/// Why a `WireClient` stopped for good.
public enum WireClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The manager refused this worker permanently (no common version, bad token, duplicate node).
    case refused(Refused)
    /// A write while no connection is up.
    case notConnected

    public var description: String {
        switch self {
        case .refused(let refused): "the manager refused this worker: \(refused.reason)"
        case .notConnected: "not connected to the manager"
        }
    }
}

/// What the client tells its owner (the worker). The client only dials, shakes hands,
/// reads and writes; what is sent after a welcome (the task list, re-sent statuses,
/// heartbeats) and when a silent manager is given up on are the owner's decisions.
public struct WireClientHandlers: Sendable {
    /// A new connection was welcomed; writes are possible from now until `disconnected`.
    /// Runs before anything is read on the connection.
    public var connected: @Sendable (Welcome) async -> Void
    /// The welcomed connection is gone (dropped, closed by either side, or `dropConnection`);
    /// the client dials again after its backoff.
    public var disconnected: @Sendable () async -> Void
    /// Every message from the manager after the welcome, in order (ack and heartbeat
    /// included). Runs on the reading path: start long work in a task of its own and return.
    public var received: @Sendable (WireMessage) async -> Void

    public init(
        connected: @escaping @Sendable (Welcome) async -> Void = { _ in },
        disconnected: @escaping @Sendable () async -> Void = {},
        received: @escaping @Sendable (WireMessage) async -> Void
    ) {
        self.connected = connected
        self.disconnected = disconnected
        self.received = received
    }
}

/// The worker's end of the cluster protocol's connection: dials the manager, shakes hands
/// (hello, then welcome or refused), reconnects by itself with backoff and jitter when the
/// connection drops, and reads and writes messages. A permanent refusal ends it.
///
/// Writes from many tasks go through this actor one message at a time; each write waits
/// while the connection is not writable (backpressure), so nothing piles up without bound.
public actor WireClient {
    /// The managers it may dial; it dials one at a time, and follows the leader a follower names.
    public nonisolated let managers: ManagerAddresses
    public nonisolated var host: String { managers.current.host }
    public nonisolated var port: Int { managers.current.port }
    private var hello: Hello
    private let handshakeTimeout: Duration
    private let tls: WireListener.TLSHandlerMaker?
    private var backoff: ReconnectBackoff
    private let logger: Logger

    private var writer: WireSender?
    /// Why the current connection is being dropped on demand, if it is.
    private var dropReason: String?
    public private(set) var state: ConnectionState = .connecting(attempt: 0)
    private let stateStream: (stream: AsyncStream<ConnectionState>, continuation: AsyncStream<ConnectionState>.Continuation)

    public init(
        host: String, port: Int, hello: Hello, backoff: ReconnectBackoff = ReconnectBackoff(),
        handshakeTimeout: Duration = .seconds(10), tls: WireListener.TLSHandlerMaker? = nil,
        logger: Logger = Logger(label: "orch.wire.client")
    ) {
        self.init(managers: ManagerAddresses(host: host, port: port), hello: hello, backoff: backoff,
                  handshakeTimeout: handshakeTimeout, tls: tls, logger: logger)
    }

    public init(
        managers: ManagerAddresses, hello: Hello, backoff: ReconnectBackoff = ReconnectBackoff(),
        handshakeTimeout: Duration = .seconds(10), tls: WireListener.TLSHandlerMaker? = nil,
        logger: Logger = Logger(label: "orch.wire.client")
    ) {
        self.tls = tls
        self.managers = managers
        self.hello = hello
        self.backoff = backoff
        self.handshakeTimeout = handshakeTimeout
        self.logger = logger
        self.stateStream = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(64))
    }

    /// Every change of `state`, in order (the newest 64 are kept for a slow reader).
    public nonisolated var states: AsyncStream<ConnectionState> { stateStream.stream }

    public var isConnected: Bool { writer != nil }

    /// The addresses sent in the next hello (a listener on port 0 knows its port only once it runs).
    public func advertise(addresses: [String]) { hello.addresses = addresses }

    /// Connects and stays connected until the task is cancelled. Throws
    /// `WireClientError.refused` when the manager refuses this worker for good.
    public func run(_ handlers: WireClientHandlers) async throws {
        var random = SystemRandomNumberGenerator()
        var attempt = 0
        var warned = false
        /// The last manager that could not be dialed at all: a follower naming it as the
        /// leader has not yet seen its lease expire, and is not followed there.
        var unreachable: ManagerAddresses.Address?
        while !Task.isCancelled {
            setState(.connecting(attempt: attempt))
            let reason: String
            var welcomed = false
            var follower = false
            var leader: String?
            let dialed = managers.current
            do {
                reason = try await session(handlers, welcomed: &welcomed)
                attempt = 0
                warned = false
                unreachable = nil
            } catch let failure as HandshakeFailure {
                reason = failure.reason
                follower = failure.follower
                leader = failure.leader
            } catch let error as WireClientError {
                if case .refused(let refused) = error { setState(.refused(refused)) }
                stateStream.continuation.finish()
                throw error
            } catch is CancellationError {
                if welcomed { detach(); await handlers.disconnected() }
                break
            } catch {
                reason = dropReason ?? Self.describe(error)
                if !welcomed { unreachable = dialed }
            }
            let wasUp = writer != nil || welcomed
            detach()
            if wasUp { await handlers.disconnected() }
            if Task.isCancelled { break }
            attempt += 1
            if follower {
                // A manager answered: the cluster is there, a leader is being chosen or named.
                backoff.reset()
            }
            var delay = backoff.nextDelay(using: &random)
            if let leader, let named = ManagerAddresses.Address(leader), named != dialed, named != unreachable {
                // A follower named the leader: dialed next, at once.
                managers.follow(leader: leader)
                delay = min(delay, .milliseconds(50))
                logger.info("\(dialed) does not lead; dialing the leader at \(named)")
            } else if !welcomed {
                // Not answered, or not the leader: the next manager in the list.
                managers.advance()
                if follower { delay = min(delay, .milliseconds(250)) }
            }
            setState(.disconnected(reason: reason, retryIn: delay))
            // Said once per outage, not on every try.
            if !warned {
                logger.warning("no connection to the manager at \(dialed): \(reason); retrying with backoff")
                warned = true
            } else {
                logger.debug("reconnect attempt \(attempt) failed: \(reason)")
            }
            try? await Task.sleep(for: delay)
        }
        detach()
        stateStream.continuation.finish()
    }

    /// Writes a message on the current connection; throws `notConnected` when none is up.
    public func send(_ message: WireMessage) async throws {
        guard let writer else { throw WireClientError.notConnected }
        try await writer.write(message)
    }

    /// Closes the current connection (the manager fell silent, say); the client dials again
    /// after its backoff. Nothing happens while no connection is up.
    public func dropConnection(reason: String) {
        guard let writer else { return }
        dropReason = reason
        logger.warning("dropping the connection to the manager: \(reason)")
        writer.channel.close(promise: nil)
    }

    /// A connection error as one short line ("cannot connect: Connection refused").
    public static func describe(_ error: any Error) -> String {
        if let error = error as? NIOConnectionError {
            let io = error.connectionErrors.lazy.compactMap { $0.error as? IOError }.first
            if let io, let text = strerror(io.errnoCode) { return "cannot connect: \(String(cString: text))" }
            if error.dnsAAAAError != nil || error.dnsAError != nil { return "cannot resolve \(error.host)" }
            return "cannot connect to \(error.host):\(error.port)"
        }
        if let error = error as? ChannelError, case .connectTimeout = error { return "cannot connect: timed out" }
        return "\(error)"
    }

    // MARK: - One connection

    /// One connection from dial to drop; returns why it ended.
    private func session(_ handlers: WireClientHandlers, welcomed: inout Bool) async throws -> String {
        dropReason = nil
        let channel = try await WireDialer.connect(host: host, port: port, connectTimeout: .seconds(5), tls: tls)
        // A manager that never answers hello is dropped after the handshake timeout.
        let handshakeTimer = channel.channel.eventLoop.scheduleTask(in: .nanoseconds(handshakeTimeout.nanoseconds)) {
            channel.channel.close(promise: nil)
        }
        defer { handshakeTimer.cancel() }
        let sender = WireSender(channel)
        var up = false
        defer { welcomed = up }
        return try await channel.executeThenClose { inbound, _ in
            let outbound = sender
            var messages = inbound.makeAsyncIterator()
            try await outbound.write(.hello(hello))
            let welcome = try welcome(from: try await messages.next())
            handshakeTimer.cancel()
            backoff.reset()
            writer = outbound
            up = true
            setState(.connected(version: welcome.version, heartbeatInterval: welcome.heartbeatInterval))
            logger.info("connected to the manager at \(host):\(port) (protocol \(welcome.version))")
            await handlers.connected(welcome)

            while let message = try await messages.next() {
                await handlers.received(message)
                if case .error(let error) = message { return "the manager closed the connection: \(error.message)" }
            }
            return dropReason ?? "the manager closed the connection"
        }
    }

    /// The manager's answer to hello: welcome, or why not.
    private func welcome(from answer: WireMessage?) throws -> Welcome {
        switch answer {
        case .welcome(let welcome)? where (hello.oldestVersion...hello.newestVersion).contains(welcome.version):
            return welcome
        case .welcome(let welcome)?:
            // Outside the range offered: a protocol error of the manager's; dial again later.
            throw HandshakeFailure(reason: "the manager chose protocol \(welcome.version), outside \(hello.oldestVersion)...\(hello.newestVersion)")
        case .refused(let refused)? where refused.permanent:
            logger.error("the manager refused this worker: \(refused.reason)")
            throw WireClientError.refused(refused)
        case .refused(let refused)?:
            throw HandshakeFailure(reason: "refused for now: \(refused.reason)", follower: refused.code == .notLeader, leader: refused.code == .notLeader ? refused.leader : nil)
        case .error(let error)?:
            throw HandshakeFailure(reason: "the manager answered an error: \(error.message)")
        case let other?:
            throw HandshakeFailure(reason: "expected welcome, got \(other.kind)")
        case nil:
            throw HandshakeFailure(reason: "no welcome within \(handshakeTimeout)")
        }
    }

    private func detach() { writer = nil }

    private func setState(_ new: ConnectionState) {
        state = new
        stateStream.continuation.yield(new)
    }
}

/// A handshake that did not end in welcome, worth retrying.
struct HandshakeFailure: Error, CustomStringConvertible {
    var reason: String
    /// A manager that does not lead refused it, naming the leader's cluster port when known.
    var follower = false
    var leader: String?
    var description: String { reason }
}

