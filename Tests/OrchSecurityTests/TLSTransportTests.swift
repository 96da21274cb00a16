import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import OrchCore
import OrchSecurity
import OrchWire
import Testing

/// The cluster protocol's TLS layer over real TCP on loopback: a listener with the cluster
/// CA's server certificate that names each client by its certificate, and the three kinds of
/// client (joining with a pinned CA, joined with a node certificate, and everyone else).
@Suite("Cluster TLS over loopback TCP", .serialized, .timeLimit(.minutes(1)))
struct TLSTransportTests {
    /// A listener that answers each connection's first message with an error frame naming
    /// the peer its certificate says (`peer none` without one), then closes.
    static func listener(_ ca: ClusterCA) async throws -> (WireListener, Task<Void, any Error>) {
        let context = try ClusterTLS.serverContext(ca: ca, hosts: ["127.0.0.1", "localhost"])
        let listener = try await WireListener.bind(host: "127.0.0.1", port: 0, tls: { NIOSSLServerHandler(context: context) })
        let serving = Task {
            try await listener.run { connection in
                try? await connection.executeThenClose { inbound, outbound in
                    var messages = inbound.makeAsyncIterator()
                    guard try await messages.next() != nil else { return }
                    let peer = try await ClusterTLS.peerNode(of: connection.channel)
                    try await outbound.write(.error(ErrorMessage(code: .unexpectedMessage, message: "peer \(peer?.rawValue ?? "none")")))
                }
            }
        }
        return (listener, serving)
    }

    static func port(_ listener: WireListener) -> Int { listener.localAddress.port ?? 0 }

    /// Sends one message and returns the answer's text, or nil when the connection ended
    /// (or failed) without one.
    static func exchange(port: Int, tls: WireListener.TLSHandlerMaker?) async -> String? {
        do {
            let channel = try await WireDialer.connect(host: "127.0.0.1", port: port, connectTimeout: .seconds(2), tls: tls)
            return try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(.heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics())))
                var messages = inbound.makeAsyncIterator()
                guard case .error(let error)? = try await messages.next() else { return nil }
                return error.message
            }
        } catch {
            return nil
        }
    }

    @Test func aJoiningClientTrustsOnlyThePinnedCAAndIsSeenWithoutACertificate() async throws {
        let ca = try ClusterCA.create()
        let (listener, serving) = try await Self.listener(ca)
        defer { serving.cancel() }
        let joining = try ClusterTLS.joiningContext()
        let pinned = try ca.fingerprint
        #expect(await Self.exchange(port: Self.port(listener), tls: { try ClusterTLS.joiningHandler(context: joining, fingerprint: pinned) }) == "peer none")

        // Pinned to another cluster's CA: the handshake fails before anything is sent.
        let other = try ClusterCA.create().fingerprint
        #expect(await Self.exchange(port: Self.port(listener), tls: { try ClusterTLS.joiningHandler(context: joining, fingerprint: other) }) == nil)
    }

    @Test func aJoinedNodeIsNamedByItsCertificateAndOneOfAnotherCAIsRefused() async throws {
        let ca = try ClusterCA.create()
        let (listener, serving) = try await Self.listener(ca)
        defer { serving.cancel() }

        let state = NSTemporaryDirectory() + "orch-tls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        var credentials = try NodeCredentials.loadOrCreate(in: state)
        let issued = try ca.issueNodeCertificate(csr: try credentials.signingRequest(for: NodeID(rawValue: "w1")), node: NodeID(rawValue: "node-42"))
        try credentials.store(certificate: try derBytes(issued), ca: try ca.certificateDER, in: state)
        let member = try ClusterTLS.memberContext(credentials: credentials)
        #expect(await Self.exchange(port: Self.port(listener), tls: { try NIOSSLClientHandler(context: member, serverHostname: nil) }) == "peer node-42",
                "the identity is the certificate's, whatever the node claims")

        // A node certificate from another CA: the manager refuses the handshake.
        let stranger = try ClusterCA.create()
        let otherState = state + "-other"
        try FileManager.default.createDirectory(atPath: otherState, withIntermediateDirectories: true)
        var foreign = try NodeCredentials.loadOrCreate(in: otherState)
        let foreignCert = try stranger.issueNodeCertificate(csr: try foreign.signingRequest(for: NodeID(rawValue: "x")), node: NodeID(rawValue: "x"))
        // It trusts the real CA (so only the manager's check can refuse it).
        try foreign.store(certificate: try derBytes(foreignCert), ca: try ca.certificateDER, in: otherState)
        let foreignContext = try ClusterTLS.memberContext(credentials: foreign)
        #expect(await Self.exchange(port: Self.port(listener), tls: { try NIOSSLClientHandler(context: foreignContext, serverHostname: nil) }) == nil)
    }

    @Test func aPlaintextClientGetsNothingButAClosedConnection() async throws {
        let ca = try ClusterCA.create()
        let (listener, serving) = try await Self.listener(ca)
        defer { serving.cancel() }
        #expect(await Self.exchange(port: Self.port(listener), tls: nil) == nil, "no frame answers a client that does not speak TLS")
    }
}
