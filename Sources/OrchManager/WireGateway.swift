import Logging
import NIOCore
import OrchControl
import OrchCore
import OrchSecurity
import OrchWire
import X509

/// The manager's end of the cluster protocol: one connection per worker, always over mutual
/// TLS (``ClusterTLS``). Every frame goes to the cluster in order; the handshake, its
/// deadline and every answer are the machine's. The one exception is a connection whose
/// first message is `join_request`: it is answered here (the secret, the CA and the
/// certificate are this shell's), with the machine deciding whether the node id may have one.
struct WireGateway: Sendable {
    let cluster: Cluster
    let ca: ClusterCA
    let joinSecret: JoinSecret
    let certificateLifetime: Duration
    let logger: Logger

    func serve(_ connection: WireChannel) async {
        guard let id = await cluster.connected(connection.channel) else {
            await refuseAsFollower(connection)
            return
        }
        do {
            try await connection.executeThenClose { inbound, _ in
                var first = true
                for try await message in inbound {
                    if first {
                        first = false
                        // The TLS handshake is over once a frame has come: who is it?
                        let peer = try await ClusterTLS.peerNode(of: connection.channel)
                        if case .joinRequest(let request) = message {
                            let answer = await issue(request, peer: peer, from: connection.channel.remoteAddress)
                            try await WireSender(connection).write(answer)
                            return
                        }
                        await cluster.authenticated(id, as: peer)
                    }
                    let read = ContinuousClock.now
                    await cluster.received(message, on: id)
                    if case .heartbeat = message { cluster.metrics.heartbeatApplied(after: ContinuousClock.now - read) }
                }
            }
        } catch {
            logger.debug("connection ended: \(error)")
        }
        await cluster.disconnected(id)
    }

    /// A follower's answer to whatever comes first (a hello, a join request): refused for
    /// now, naming the leader's cluster port when it is known; then closed.
    private func refuseAsFollower(_ connection: WireChannel) async {
        let leader = cluster.directory.otherLeader
        let reason = leader.map { "this manager does not lead; \($0.name) does, at \($0.wireAddress)" }
            ?? "this manager does not lead, and no manager leads right now"
        do {
            try await connection.executeThenClose { inbound, _ in
                for try await _ in inbound {
                    try await WireSender(connection).write(.refused(Refused(
                        code: .notLeader, permanent: false, reason: reason, leader: leader?.wireAddress)))
                    return
                }
            }
        } catch {
            logger.debug("connection to a follower ended: \(error)")
        }
    }

    /// The answer to a `join_request`: a joiner (no certificate) must bring the join
    /// token's secret; a renewal comes with the node's own certificate and asks for that
    /// node. Either way the machine must agree that the id may have a certificate.
    func issue(_ request: JoinRequest, peer: NodeID?, from remote: SocketAddress?) async -> WireMessage {
        let source = remote?.ipAddress ?? "an unknown address"
        func refuse(_ code: Refused.Code, permanent: Bool, _ reason: String) -> WireMessage {
            logger.warning("refused node \(request.nodeID) from \(source) a certificate: \(reason)")
            return .refused(Refused(code: code, permanent: permanent, reason: reason))
        }
        guard let version = ProtocolVersion.negotiate(peerOldest: request.oldestVersion, peerNewest: request.newestVersion) else {
            return refuse(.noCommonVersion, permanent: true,
                          "this manager speaks protocol \(ProtocolVersion.oldest)...\(ProtocolVersion.newest), the worker \(request.oldestVersion)...\(request.newestVersion)")
        }
        if let peer {
            guard peer == request.nodeID else {
                return refuse(.invalidHello, permanent: true, "a renewal for node \(request.nodeID) with the certificate of node \(peer)")
            }
        } else {
            guard let secret = request.secret, joinSecret.matches(secret) else {
                return refuse(.badToken, permanent: true,
                              "the join token is not this cluster's current one (rotated?); the manager's is in join.token in its data directory")
            }
        }
        do {
            try await cluster.admit(request.nodeID, renewing: peer != nil)
        } catch .nodeConnected(let name) {
            return refuse(.duplicateNode, permanent: false, ClusterError.nodeConnected(name).description)
        } catch .nodeRemoved(let node) {
            return refuse(.nodeRemoved, permanent: true, ClusterError.nodeRemoved(node).description)
        } catch {
            return refuse(.invalidHello, permanent: true, error.description)
        }
        do {
            let certificate = try ca.issueNodeCertificate(csr: request.csr, node: request.nodeID, lifetime: certificateLifetime)
            logger.info("\(peer == nil ? "issued a certificate to node \(request.nodeID) joining" : "renewed the certificate of node \(request.nodeID)") from \(source), valid until \(certificate.notValidAfter)")
            return .joinResult(JoinResult(
                version: version, nodeID: request.nodeID, certificate: try derBytes(certificate), caCertificate: try ca.certificateDER))
        } catch {
            return refuse(.invalidHello, permanent: true, "\(error)")
        }
    }
}
