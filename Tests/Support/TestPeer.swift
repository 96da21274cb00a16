import NIOCore
import NIOSSL
import OrchCore
import OrchSecurity
import OrchWire
import Synchronization

/// What the scripted manager saw, in order.
public enum ManagerEvent: Sendable {
    case connected(Int, Hello)
    /// A join or renewal answered with a certificate (renewing: the node's own certificate came with it).
    case joined(NodeID, renewing: Bool)
    case message(Int, WireMessage)
    case closed(Int)
}

/// A manager side for the client's tests, over real loopback TCP: answers hello as told,
/// reports every message, and lets the test write to or drop each connection.
public final class ScriptedManager: Sendable {
    public let log = Mutex<[ManagerEvent]>([])
    private let state = Mutex<(count: Int, writers: [Int: WireSender], channels: [Int: any Channel])>(
        (0, [:], [:]))
    /// The answer to the next hellos: nil = welcome; a refusal otherwise.
    public let refusals = Mutex<[Refused]>([])
    /// Read hello and never answer it.
    public let silent = Mutex(false)
    /// Acknowledge every task status at once, as the manager does once it has recorded it.
    public let autoAck = Mutex(false)
    /// Answer every heartbeat with one, as the manager does. Off: the connection stays open
    /// but the manager says nothing more (a stuck manager, a half-open connection).
    public let answersHeartbeats = Mutex(true)
    public let heartbeatInterval: Duration
    /// The version the welcome names (a manager that breaks the negotiation, when changed).
    public let welcomeVersion = Mutex(ProtocolVersion.newest)

    /// The cluster's CA and join token, when it listens with TLS (as a manager does).
    public let ca: ClusterCA
    public let joinToken: JoinToken
    /// How long the certificates it issues are valid.
    public let certificateLifetime = Mutex<Duration>(ClusterCA.defaultNodeLifetime)

    public init(heartbeatInterval: Duration = .milliseconds(50)) {
        self.heartbeatInterval = heartbeatInterval
        ca = try! ClusterCA.create()   // a new key and certificate in memory: nothing to fail on
        joinToken = JoinToken.make(caFingerprint: try! ca.fingerprint)
    }

    public func serve(_ connection: WireChannel) async {
        let outbound = WireSender(connection)
        try? await connection.executeThenClose { inbound, _ in
            var messages = inbound.makeAsyncIterator()
            let first = try await messages.next()
            if case .joinRequest(let request)? = first {
                // A connection of its own, not counted among the worker's connections.
                try await outbound.write(try await join(request, on: connection.channel))
                return
            }
            let index = state.withLock { $0.count += 1; return $0.count }
            state.withLock { $0.channels[index] = connection.channel }
            defer {
                state.withLock { $0.writers[index] = nil; $0.channels[index] = nil }
                record(.closed(index))
            }
            guard case .hello(let hello)? = first else { return }
            if silent.withLock({ $0 }) {
                while try await messages.next() != nil {}
                return
            }
            let refusal = refusals.withLock { $0.isEmpty ? nil : $0.removeFirst() }
            if let refusal {
                try await outbound.write(.refused(refusal))
                return
            }
            try await outbound.write(.welcome(Welcome(version: welcomeVersion.withLock { $0 }, heartbeatInterval: heartbeatInterval)))
            state.withLock { $0.writers[index] = outbound }
            record(.connected(index, hello))
            while let message = try await messages.next() {
                record(.message(index, message))
                if case .taskStatus(let status) = message, autoAck.withLock({ $0 }) {
                    try await outbound.write(.ack(Ack(statusID: status.statusID)))
                }
                if case .heartbeat(let beat) = message, answersHeartbeats.withLock({ $0 }) {
                    try await outbound.write(.heartbeat(Heartbeat(sequence: beat.sequence, metrics: MachineMetrics())))
                }
            }
        }
    }

    /// A join (with the token's secret) or a renewal (with a certificate of this CA) gets a
    /// certificate; anything else is refused as the manager refuses it.
    private func join(_ request: JoinRequest, on channel: any Channel) async throws -> WireMessage {
        let peer = try? await ClusterTLS.peerNode(of: channel)
        if let peer, peer != request.nodeID {
            return .refused(Refused(code: .invalidHello, permanent: true, reason: "a renewal for another node"))
        }
        if peer == nil, request.secret != joinToken.secret {
            return .refused(Refused(code: .badToken, permanent: true, reason: "the join token is not this cluster's current one"))
        }
        let certificate = try ca.issueNodeCertificate(csr: request.csr, node: request.nodeID, lifetime: certificateLifetime.withLock { $0 })
        record(.joined(request.nodeID, renewing: peer != nil))
        return .joinResult(JoinResult(
            version: ProtocolVersion.newest, nodeID: request.nodeID, certificate: try derBytes(certificate), caCertificate: try ca.certificateDER))
    }

    /// Listens on 127.0.0.1:`port` (0 = any free port) until the returned task is cancelled;
    /// with `tls`, in mutual TLS with its own CA, as a manager does (workers join it with
    /// ``joinToken``).
    public func listen(port: Int = 0, tls: Bool = false) async throws -> (port: Int, task: Task<Void, any Error>) {
        let context = tls ? try ClusterTLS.serverContext(ca: ca, hosts: ["127.0.0.1"]) : nil
        let listener = try await WireListener.bind(
            host: "127.0.0.1", port: port, tls: context.map { context in { @Sendable in NIOSSLServerHandler(context: context) } })
        let task = Task { try await listener.run { await self.serve($0) } }
        return (listener.localAddress.port ?? port, task)
    }

    /// The newest connection that completed the handshake and is still open.
    public var currentConnection: Int? { state.withLock { $0.writers.keys.max() } }

    /// Every message received so far, on any connection.
    public var messages: [WireMessage] {
        log.withLock { $0.compactMap { if case .message(_, let message) = $0 { message } else { nil } } }
    }

    private func record(_ event: ManagerEvent) { log.withLock { $0.append(event) } }

    public func send(_ message: WireMessage, on connection: Int) async throws {
        guard let writer = state.withLock({ $0.writers[connection] }) else { throw TestTimeout(what: "connection \(connection) to be open") }
        try await writer.write(message)
    }

    /// Closes every open connection, as a manager that restarts would.
    public func dropAll() async {
        let channels = state.withLock { Array($0.channels.values) }
        for channel in channels { try? await channel.close() }
    }
}

/// Reads the manager's events in order, with a deadline on every wait.
public struct EventReader {
    let manager: ScriptedManager
    var cursor = 0

    public init(_ manager: ScriptedManager) { self.manager = manager }

    /// The next event that `match` accepts; earlier ones are passed to `skipped`.
    public mutating func next<T>(
        within timeout: Duration = .seconds(10), _ what: String,
        skipped: (ManagerEvent) -> Void = { _ in }, _ match: (ManagerEvent) -> T?
    ) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let cursor = self.cursor
            let fresh = manager.log.withLock { Array($0[cursor...]) }
            for event in fresh {
                self.cursor += 1
                if let value = match(event) { return value }
                skipped(event)
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw TestTimeout(what: what)
    }
}

public struct TestTimeout: Error, CustomStringConvertible {
    public var what: String
    public init(what: String) { self.what = what }
    public var description: String { "timed out waiting for \(what)" }
}

/// Records a client's states so that tests can wait for one, with a deadline.
public final class StateRecorder: Sendable {
    let log = Mutex<[ConnectionState]>([])
    let cursor = Mutex(0)

    public init(_ client: WireClient) {
        let states = client.states
        Task { [self] in for await state in states { log.withLock { $0.append(state) } } }
    }

    /// The next state (after those already returned) that `match` accepts.
    public func next(_ what: String, within timeout: Duration = .seconds(10), _ match: (ConnectionState) -> Bool) async throws -> ConnectionState {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let found: ConnectionState? = cursor.withLock { cursor in
                let states = log.withLock { $0 }
                while cursor < states.count {
                    cursor += 1
                    if match(states[cursor - 1]) { return states[cursor - 1] }
                }
                return nil
            }
            if let found { return found }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw TestTimeout(what: what)
    }
}

/// Runs `body` until `deadline`; nil if it did not finish in time.
public func withDeadline<T: Sendable>(_ deadline: ContinuousClock.Instant, _ body: @escaping @Sendable () async -> T) async -> T? {
    await withTaskGroup(of: T?.self) { group in
        group.addTask { await body() }
        group.addTask { try? await Task.sleep(until: deadline); return nil }
        defer { group.cancelAll() }
        return await group.next() ?? nil
    }
}

