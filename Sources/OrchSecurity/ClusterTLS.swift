import NIOCore
import NIOSSL
import OrchCore
import X509

/// The TLS layer of the cluster protocol (swift-nio-ssl), TLS 1.3 only:
///
/// - the manager presents a certificate issued by the cluster's CA, with the CA behind it,
///   and asks every client for a certificate of that CA; a client without one may only
///   join (the manager sees no peer certificate), one with another CA's fails the handshake;
/// - a worker joining has no certificate: it checks the manager's chain against the CA its
///   join token pins (``PinnedCA``) before anything is sent;
/// - a worker that joined presents its node certificate and trusts the CA it was given.
///
/// The handlers are made here and handed to OrchWire's listener and dialer as plain channel
/// handlers, so that the framing knows nothing of certificates.
public enum ClusterTLS {
    /// The manager's context, with a server certificate for `hosts` (the addresses workers dial).
    public static func serverContext(ca: ClusterCA, hosts: [String], lifetime: Duration = ClusterCA.defaultNodeLifetime) throws -> NIOSSLContext {
        var configuration = try serverConfiguration(ca: ca, hosts: hosts, lifetime: lifetime)
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateVerification = .optionalVerification
        configuration.trustRoots = .certificates([try nio(ca.certificate)])
        return try NIOSSLContext(configuration: configuration)
    }

    /// A server presenting a new certificate from the cluster's CA for `hosts`, with the CA
    /// behind it (the cluster port, and the REST API off loopback); no client certificates asked.
    public static func serverConfiguration(ca: ClusterCA, hosts: [String], lifetime: Duration) throws -> TLSConfiguration {
        let (certificate, key) = try ca.issueServerCertificate(hosts: hosts, lifetime: lifetime)
        return TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try nio(certificate)), .certificate(try nio(ca.certificate))],
            privateKey: .privateKey(try nio(key)))
    }

    /// A worker's context before it has joined: no certificate of its own. The chain the
    /// manager presents is checked by the handler ``joiningHandler(context:fingerprint:)``
    /// makes, not by the context.
    public static func joiningContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: configuration)
    }

    /// The client handler of a joining worker: the manager's chain must come from the CA
    /// with `fingerprint` (the join token's digest), or the handshake fails.
    /// `rejected` hears why, when the chain is refused.
    public static func joiningHandler(
        context: NIOSSLContext, fingerprint: String, rejected: @escaping @Sendable (String) -> Void = { _ in }
    ) throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(context: context, serverHostname: nil) { chain, promise in
            do {
                try PinnedCA.verify(chain: try chain.map { try $0.toDERBytes() }, fingerprint: fingerprint)
                promise.succeed(.certificateVerified)
            } catch {
                rejected("\(error)")
                promise.succeed(.failed)
            }
        }
    }

    /// A worker's context once it has joined: its node certificate, and the CA it trusts.
    public static func memberContext(credentials: NodeCredentials) throws -> NIOSSLContext {
        guard let certificate = credentials.certificate, let ca = credentials.ca else {
            throw SecurityError.invalidRequest("this node has no certificate yet: it must join first")
        }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateVerification = .noHostnameVerification
        configuration.trustRoots = .certificates([try nio(ca)])
        configuration.certificateChain = [.certificate(try nio(certificate))]
        configuration.privateKey = .privateKey(try nio(credentials.key))
        return try NIOSSLContext(configuration: configuration)
    }

    /// The node a peer's certificate names (its common name), or nil when it presented none.
    /// Ask it once the handshake is done (after the first frame has arrived).
    public static func peerNode(of channel: any Channel) async throws -> NodeID? {
        guard let peer = try await channel.nioSSL_peerCertificate().get() else { return nil }
        let certificate = try Certificate(derEncoded: try peer.toDERBytes())
        return certificate.commonName.map { NodeID(rawValue: $0) }
    }

    static func nio(_ certificate: Certificate) throws -> NIOSSLCertificate {
        try NIOSSLCertificate(bytes: try derBytes(certificate), format: .der)
    }

    static func nio(_ key: Certificate.PrivateKey) throws -> NIOSSLPrivateKey {
        try NIOSSLPrivateKey(bytes: Array(try key.serializeAsPEM().pemString.utf8), format: .pem)
    }
}
