import NIOCore
import NIOPosix

/// One connection of the cluster protocol: messages in, messages out.
public typealias WireChannel = NIOAsyncChannel<WireMessage, WireMessage>

/// A listener of the cluster protocol. Each accepted connection is framed (WIRE.md) and
/// handed to `handle` in its own child task; a bad frame closes only its own connection.
public struct WireListener: Sendable {
    let server: NIOAsyncChannel<WireChannel, Never>

    /// The address really bound (port 0 becomes the port the system chose).
    public let localAddress: SocketAddress

    /// Makes the TLS handler of one connection (the cluster's TLS layer, OrchSecurity's
    /// `ClusterTLS`): put first in its pipeline, below the framing.
    public typealias TLSHandlerMaker = @Sendable () throws -> any ChannelHandler

    /// Binds `host:port` (port 0 for any free port); with `tls`, every connection is TLS.
    public static func bind(
        host: String, port: Int, maximumFrameBytes: Int = Frame.defaultMaximumBytes, tls: TLSHandlerMaker? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> WireListener {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // What a peer has not read yet is bounded: past 4 MiB the channel is not writable
            // and the manager cuts off a node that does not read.
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(try tls()) }
                    try channel.pipeline.syncOperations.addWireHandlers(maximumFrameBytes: maximumFrameBytes)
                    // Closed if dropped unserved: a stopping listener leaves accepted connections
                    // behind that `run` never gets, and NIO's newer initializer traps on such a
                    // drop (seen: a client dialing while a listener stopped crashed the process).
                    // The older one, deprecated for this very teardown, is what is wanted here.
                    return try WireChannel(synchronouslyWrapping: channel)
                }
            }
        guard let address = server.channel.localAddress else {
            throw ChannelError.unknownLocalAddress
        }
        return WireListener(server: server, localAddress: address)
    }

    /// Accepts connections until the task is cancelled, serving each with `handle`.
    /// Errors of one connection are its own; they never end the accept loop.
    public func run(_ handle: @escaping @Sendable (WireChannel) async -> Void) async throws {
        try await server.executeThenClose { connections in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in connections {
                    group.addTask { await handle(connection) }
                }
            }
        }
    }
}

/// Dials a listener of the cluster protocol.
public enum WireDialer {
    /// Dials `host:port`; with `tls`, the connection is TLS (the handler checks the manager).
    public static func connect(
        host: String, port: Int, maximumFrameBytes: Int = Frame.defaultMaximumBytes,
        connectTimeout: TimeAmount = .seconds(5), tls: WireListener.TLSHandlerMaker? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> WireChannel {
        try await ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(try tls()) }
                    try channel.pipeline.syncOperations.addWireHandlers(maximumFrameBytes: maximumFrameBytes)
                    return try WireChannel(wrappingChannelSynchronously: channel)
                }
            }
    }
}

/// Exponential backoff with full jitter for reconnecting: the n-th wait is a random
/// duration up to `min(maximum, initial * 2^n)`. Pure: the caller supplies the randomness.
public struct ReconnectBackoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration
    public private(set) var failures = 0

    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(10)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The ceiling of the next wait, before jitter.
    public var ceiling: Duration {
        let doubled = initial * (1 << min(failures, 30))
        return min(doubled, maximum)
    }

    /// Records a failure and returns how long to wait before the next try.
    public mutating func nextDelay(using random: inout some RandomNumberGenerator) -> Duration {
        let ceiling = self.ceiling
        failures += 1
        let nanoseconds = ceiling.nanoseconds
        return .nanoseconds(nanoseconds <= 0 ? 0 : Int64.random(in: 0...nanoseconds, using: &random))
    }

    /// A connection held: the next failure starts from `initial` again.
    public mutating func reset() { failures = 0 }
}

/// Writes messages to one connection, each write waiting until its frame has reached the
/// socket. That is the backpressure of the cluster protocol: a peer that stops reading
/// stalls its writers once the kernel's buffers are full, and each writer holds at most one
/// message. (`NIOAsyncChannel`'s own writer learns that the channel is not writable only
/// after the event loop has caught up, so a fast producer can queue without bound before it.)
public struct WireSender: Sendable {
    public let channel: any Channel

    public init(_ connection: WireChannel) { channel = connection.channel }

    public func write(_ message: WireMessage) async throws {
        try await channel.writeAndFlush(message).get()
    }
}
