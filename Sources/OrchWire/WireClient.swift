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

/// What the client needs from its owner (the worker).
public struct WireClientHandlers: Sendable {
    /// The full task list, sent after every (re)connect so the manager can reconcile.
    public var taskList: @Sendable () async -> TaskList
    /// Machine metrics for each heartbeat.
    public var metrics: @Sendable () async -> MachineMetrics
    /// Every message from the manager but `ack` (which the client handles). Runs on the
    /// reading path: start long work in a task of its own and return.
    public var received: @Sendable (WireMessage) async -> Void

    public init(
        taskList: @escaping @Sendable () async -> TaskList,
        metrics: @escaping @Sendable () async -> MachineMetrics,
        received: @escaping @Sendable (WireMessage) async -> Void
    ) {
        self.taskList = taskList
        self.metrics = metrics
        self.received = received
    }
}

/// The worker's end of the cluster protocol: dials the manager, shakes hands, heartbeats on
/// the interval the manager chose, and reconnects by itself with backoff and jitter when the
/// connection drops. On every (re)connect it sends the full task list, then every terminal
/// status the manager has not acknowledged (WIRE.md, "Delivery rules").
///
/// Writes from many tasks go through this actor one message at a time; each write waits
/// while the connection is not writable (backpressure), so nothing piles up without bound.
public actor WireClient {
    public let host: String
    public let port: Int
    private var hello: Hello
    private let handshakeTimeout: Duration
    private var backoff: ReconnectBackoff
    private let logger: Logger

    private var outbox = StatusOutbox()
    private var writer: WireSender?
    private var heartbeatSequence: UInt64 = 0
    public private(set) var state: ConnectionState = .connecting(attempt: 0)
    private let stateStream: (stream: AsyncStream<ConnectionState>, continuation: AsyncStream<ConnectionState>.Continuation)

    public init(
        host: String, port: Int, hello: Hello, backoff: ReconnectBackoff = ReconnectBackoff(),
        handshakeTimeout: Duration = .seconds(10), logger: Logger = Logger(label: "orch.wire.client")
    ) {
        self.host = host
        self.port = port
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

    /// Terminal statuses not yet acknowledged, oldest first.
    public var unacknowledged: [TaskStatus] { outbox.resend }

    /// Connects and stays connected until the task is cancelled. Throws
    /// `WireClientError.refused` when the manager refuses this worker for good.
    public func run(_ handlers: WireClientHandlers) async throws {
        var random = SystemRandomNumberGenerator()
        var attempt = 0
        var warned = false
        while !Task.isCancelled {
            setState(.connecting(attempt: attempt))
            let reason: String
            do {
                reason = try await session(handlers)
                attempt = 0
                warned = false
            } catch let error as WireClientError {
                if case .refused(let refused) = error { setState(.refused(refused)) }
                stateStream.continuation.finish()
                throw error
            } catch is CancellationError {
                break
            } catch {
                reason = Self.describe(error)
            }
            detach()
            if Task.isCancelled { break }
            attempt += 1
            let delay = backoff.nextDelay(using: &random)
            setState(.disconnected(reason: reason, retryIn: delay))
            // Said once per outage, not on every try.
            if !warned {
                logger.warning("no connection to the manager at \(host):\(port): \(reason); retrying with backoff")
                warned = true
            } else {
                logger.debug("reconnect attempt \(attempt) failed: \(reason)")
            }
            try? await Task.sleep(for: delay)
        }
        detach()
        stateStream.continuation.finish()
    }

    /// Sends a task status. A terminal status is kept until the manager acknowledges it and
    /// is re-sent after a reconnect; a non-terminal one that cannot be sent now is dropped
    /// (the task list sent on reconnect supersedes it). Returns the status as numbered.
    @discardableResult
    public func send(status: TaskStatus) async -> TaskStatus {
        let numbered = outbox.enqueue(status)
        try? await write(.taskStatus(numbered))
        return numbered
    }

    /// Sends any other message (log data, a submission, goodbye); throws `notConnected`
    /// when no connection is up.
    public func send(_ message: WireMessage) async throws {
        try await write(message)
    }

    /// A connection error as one short line ("cannot connect: Connection refused").
    static func describe(_ error: any Error) -> String {
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
    private func session(_ handlers: WireClientHandlers) async throws -> String {
        let channel = try await WireDialer.connect(host: host, port: port, connectTimeout: .seconds(5))
        // A manager that never answers hello is dropped after the handshake timeout.
        let handshakeTimer = channel.channel.eventLoop.scheduleTask(in: .nanoseconds(handshakeTimeout.nanoseconds)) {
            channel.channel.close(promise: nil)
        }
        defer { handshakeTimer.cancel() }
        let sender = WireSender(channel)
        return try await channel.executeThenClose { inbound, _ in
            let outbound = sender
            var messages = inbound.makeAsyncIterator()
            try await outbound.write(.hello(hello))
            let welcome = try welcome(from: try await messages.next())
            handshakeTimer.cancel()
            backoff.reset()
            writer = outbound
            heartbeatSequence = 0
            setState(.connected(version: welcome.version, heartbeatInterval: welcome.heartbeatInterval))
            logger.info("connected to the manager at \(host):\(port) (protocol \(welcome.version))")

            let tasks = await handlers.taskList()
            try await outbound.write(.taskList(tasks))
            for status in outbox.resend { try await outbound.write(.taskStatus(status)) }

            // Heartbeats run beside the reading loop and are cancelled when it ends.
            async let _: Void = heartbeats(every: welcome.heartbeatInterval, metrics: handlers.metrics)
            while let message = try await messages.next() {
                switch message {
                case .ack(let ack): outbox.acknowledge(ack.statusID)
                case .error(let error): return "the manager closed the connection: \(error.message)"
                default: await handlers.received(message)
                }
            }
            return "the manager closed the connection"
        }
    }

    /// The manager's answer to hello: welcome, or why not.
    private func welcome(from answer: WireMessage?) throws -> Welcome {
        switch answer {
        case .welcome(let welcome)?:
            return welcome
        case .refused(let refused)? where refused.permanent:
            logger.error("the manager refused this worker: \(refused.reason)")
            throw WireClientError.refused(refused)
        case .refused(let refused)?:
            throw HandshakeFailure(reason: "refused for now: \(refused.reason)")
        case .error(let error)?:
            throw HandshakeFailure(reason: "the manager answered an error: \(error.message)")
        case let other?:
            throw HandshakeFailure(reason: "expected welcome, got \(other.kind)")
        case nil:
            throw HandshakeFailure(reason: "no welcome within \(handshakeTimeout)")
        }
    }

    private func heartbeats(every interval: Duration, metrics: @Sendable () async -> MachineMetrics) async throws {
        let interval = max(interval, .milliseconds(10))
        while true {
            heartbeatSequence += 1
            try await write(.heartbeat(Heartbeat(sequence: heartbeatSequence, metrics: await metrics())))
            try await Task.sleep(for: interval)
        }
    }

    private func write(_ message: WireMessage) async throws {
        guard let writer else { throw WireClientError.notConnected }
        try await writer.write(message)
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
    var description: String { reason }
}

