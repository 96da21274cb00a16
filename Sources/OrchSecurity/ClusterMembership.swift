import Foundation
import Logging
import NIOCore
import NIOSSL
import OrchCore
import OrchWire
import Synchronization
import X509

/// A worker's membership of its cluster: the credentials in its state directory
/// (``NodeCredentials``), the join that gets them, their renewal at half their life, and
/// the TLS handler of every connection it dials to the manager.
///
/// - **Join**: with no certificate for the cluster (none yet, expired, or from another CA
///   than the join token pins), the worker dials without a certificate, checks the
///   manager's against the token's CA digest during the TLS handshake, and sends
///   `join_request` (the token's secret and a CSR for its node id). The manager answers
///   `join_result` (the certificate and the CA's) or `refused`, and closes.
/// - **Renewal**: the same `join_request` without a secret, on a connection made with the
///   current certificate; the connection to the manager held meanwhile is not touched.
public final class ClusterMembership: Sendable {
    public let node: NodeID
    /// The managers it may ask (the leader answers; a follower names it).
    public let managers: ManagerAddresses
    public var host: String { managers.current.host }
    public var port: Int { managers.current.port }
    private let directory: String?
    private let state: Mutex<(credentials: NodeCredentials, context: NIOSSLContext?)>

    /// The credentials kept in `directory` (the node's key is made there when there is none);
    /// with no directory, a new key kept in memory only.
    public convenience init(node: NodeID, directory: String?, host: String, port: Int) throws {
        try self.init(node: node, directory: directory, managers: ManagerAddresses(host: host, port: port))
    }

    public init(node: NodeID, directory: String?, managers: ManagerAddresses) throws {
        self.node = node
        self.directory = directory
        self.managers = managers
        let credentials = try directory.map(NodeCredentials.loadOrCreate(in:)) ?? .ephemeral()
        let context = credentials.certificate == nil ? nil : try? ClusterTLS.memberContext(credentials: credentials)
        state = Mutex((credentials, context))
    }

    /// A new key kept in memory only (simulated workers of tests and benchmarks).
    public init(node: NodeID, host: String, port: Int) {
        self.node = node
        directory = nil
        managers = ManagerAddresses(host: host, port: port)
        state = Mutex((NodeCredentials.ephemeral(), nil))
    }

    public var credentials: NodeCredentials { state.withLock { $0.credentials } }

    /// Makes the TLS handler of a connection to the manager, with the node's certificate.
    public var tlsHandler: WireListener.TLSHandlerMaker {
        { [self] in
            guard let context = state.withLock({ $0.context }) else {
                throw SecurityError.invalidRequest("this node has no certificate yet: it must join first")
            }
            return try NIOSSLClientHandler(context: context, serverHostname: nil)
        }
    }

    /// Why the node must join before it can connect, or nil when its certificate will do:
    /// valid now, and (given a token) from the CA the token names.
    public func joinNeeded(for token: JoinToken?, now: Date = Date()) -> String? {
        let credentials = credentials
        guard let certificate = credentials.certificate, let ca = credentials.ca else { return "it has no certificate" }
        if now >= certificate.notValidAfter { return "its certificate expired on \(certificate.notValidAfter)" }
        if let token, let der = try? derBytes(ca), ClusterCA.fingerprint(ofDER: der) != token.caFingerprint {
            return "its certificate is from another cluster's CA than the join token names"
        }
        return nil
    }

    /// Joins when ``joinNeeded(for:now:)`` says so, trying again with backoff while the
    /// manager cannot be reached or refuses for now. Throws `WireClientError.refused` on a
    /// permanent refusal (a wrong secret), `SecurityError` when the manager's certificate is
    /// not from the pinned CA or there is no token to join with.
    public func ensureJoined(token: JoinToken?, logger: Logger, backoff: ReconnectBackoff = ReconnectBackoff()) async throws {
        guard let why = joinNeeded(for: token) else { return }
        guard let token else {
            throw SecurityError.invalidJoinToken("this worker must join the cluster (\(why)): give it the manager's join token with --join-token, ORCH_JOIN_TOKEN or --join-token-file (the manager keeps it in join.token in its data directory)")
        }
        logger.info("joining the cluster at \(managers.all.map(\.description).joined(separator: ", ")) as node \(node) (\(why))")
        var backoff = backoff
        var random = SystemRandomNumberGenerator()
        var warned = false
        while true {
            try Task.checkCancellation()
            do {
                try await join(token: token)
                logger.info("joined the cluster as node \(node); certificate valid until \(credentials.certificate?.notValidAfter.description ?? "?")")
                return
            } catch let failure as JoinFailure {
                if !warned { logger.warning("cannot join yet: \(failure.reason); retrying with backoff") }
                warned = true
                try await Task.sleep(for: backoff.nextDelay(using: &random))
            }
        }
    }

    /// One join attempt with `token`.
    public func join(token: JoinToken) async throws {
        let rejected = Mutex<String?>(nil)
        let context = try ClusterTLS.joiningContext()
        let result = try await exchange(
            JoinRequest(nodeID: node, secret: token.secret, csr: try credentials.signingRequest(for: node)),
            tls: { try ClusterTLS.joiningHandler(context: context, fingerprint: token.caFingerprint) { reason in rejected.withLock { $0 = reason } } },
            rejected: { rejected.withLock { $0 } })
        try keep(result)
    }

    /// One renewal: a new certificate for the same key, asked with the current one.
    public func renew() async throws {
        let result = try await exchange(
            JoinRequest(nodeID: node, secret: nil, csr: try credentials.signingRequest(for: node)),
            tls: tlsHandler, rejected: { nil })
        try keep(result)
    }

    /// When the certificate is due for renewal: at half its life.
    public var renewalDate: Date? { credentials.renewalDate }

    /// Renews the certificate at half its life, for as long as the task runs; a failed
    /// renewal is tried again (every tenth of the time left, at least every 10 s).
    public func keepRenewed(logger: Logger) async {
        while !Task.isCancelled {
            guard let due = renewalDate, let expiry = credentials.certificate?.notValidAfter else { return }
            // At least a second apart, whatever the clock says.
            let wait = max(due.timeIntervalSinceNow, 1)
            do { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) } catch { return }
            do {
                try await renew()
                logger.info("renewed this node's certificate; valid until \(credentials.certificate?.notValidAfter.description ?? "?")")
            } catch let error as WireClientError {
                logger.error("the manager refused to renew this node's certificate: \(error)")
                return
            } catch {
                let retry = max(10, expiry.timeIntervalSinceNow / 10)
                logger.warning("cannot renew this node's certificate yet (\(error)); trying again in \(Int(retry)) s")
                do { try await Task.sleep(for: .seconds(retry)) } catch { return }
            }
        }
    }

    private func keep(_ result: JoinResult) throws {
        guard result.nodeID == node else {
            throw SecurityError.untrustedPeer("the manager issued a certificate for node \(result.nodeID), not \(node)")
        }
        var credentials = credentials
        try credentials.store(certificate: result.certificate, ca: result.caCertificate, in: directory)
        let issued = try Certificate(derEncoded: result.certificate)
        guard issued.commonName == node.rawValue else {
            throw SecurityError.untrustedPeer("the certificate issued names \(issued.commonName ?? "nobody"), not node \(node)")
        }
        let context = try ClusterTLS.memberContext(credentials: credentials)
        state.withLock { $0 = (credentials, context) }
    }

    /// One `join_request`, to the leader: a manager that does not answer or does not lead
    /// passes it to the next (the leader a follower names first), once round the list.
    private func exchange(
        _ request: JoinRequest, tls: @escaping WireListener.TLSHandlerMaker, rejected: @escaping @Sendable () -> String?
    ) async throws -> JoinResult {
        var failure = JoinFailure(reason: "no manager to ask")
        for _ in 0 ..< managers.all.count + 1 {
            do {
                return try await exchangeOnce(request, tls: tls, rejected: rejected)
            } catch let refused as JoinFailure {
                failure = refused
                if let leader = refused.leader, managers.follow(leader: leader) { continue }
                managers.advance()
            }
        }
        throw failure
    }

    /// One `join_request` on a connection of its own to the current manager, answered within 10 s.
    private func exchangeOnce(
        _ request: JoinRequest, tls: @escaping WireListener.TLSHandlerMaker, rejected: @Sendable () -> String?
    ) async throws -> JoinResult {
        let channel: WireChannel
        let address = managers.current
        do {
            channel = try await WireDialer.connect(host: address.host, port: address.port, tls: tls)
        } catch {
            throw JoinFailure(reason: "\(address): \(WireClient.describe(error))")
        }
        let timer = channel.channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.channel.close(promise: nil) }
        defer { timer.cancel() }
        let answer: WireMessage?
        do {
            answer = try await channel.executeThenClose { inbound, _ in
                try await WireSender(channel).write(.joinRequest(request))
                var messages = inbound.makeAsyncIterator()
                return try await messages.next()
            }
        } catch {
            if let reason = rejected() { throw SecurityError.untrustedPeer(reason) }
            throw JoinFailure(reason: "the connection to the manager failed: \(error)")
        }
        switch answer {
        case .joinResult(let result)?: return result
        case .refused(let refused)? where refused.permanent: throw WireClientError.refused(refused)
        case .refused(let refused)?:
            throw JoinFailure(reason: "refused for now: \(refused.reason)", leader: refused.code == .notLeader ? refused.leader : nil)
        case let other?: throw JoinFailure(reason: "the manager answered \(other.kind), not join_result")
        case nil:
            if let reason = rejected() { throw SecurityError.untrustedPeer(reason) }
            throw JoinFailure(reason: "the manager closed the connection without an answer")
        }
    }
}

/// A join or renewal that did not happen this time, worth trying again.
public struct JoinFailure: Error, CustomStringConvertible {
    public var reason: String
    /// A follower named the leader's cluster port.
    public var leader: String?
    public init(reason: String, leader: String? = nil) {
        self.reason = reason
        self.leader = leader
    }
    public var description: String { reason }
}
