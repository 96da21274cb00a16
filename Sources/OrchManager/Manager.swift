import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import OrchCore
import OrchSecurity
import OrchStore
import OrchWire
import ServiceLifecycle
import Synchronization

/// A manager: keeps every task and node in SQLite, places tasks with its scheduler, keeps
/// them in their desired state from what the workers push, and serves the REST gateway.
///
/// Run it as a `Service`. Starting on a data directory that holds state resumes it: every
/// task and node comes back, and the workers are reconciled as they reconnect.
public final class Manager: Service, Sendable {
    public let configuration: ManagerConfiguration
    let store: any ManagerStore
    let cluster: Cluster
    let metrics: ManagerMetrics
    let tokens: APITokens
    /// The cluster's certificate authority and the join token's secret (data directory).
    let ca: ClusterCA
    let joinSecret: JoinSecret
    let logger: Logger
    /// The real addresses once listening (port 0 becomes the chosen port).
    public let httpAddress = Mutex<String?>(nil)
    public let wireAddress = Mutex<String?>(nil)
    public let dnsAddress = Mutex<String?>(nil)

    public init(configuration: ManagerConfiguration, logger: Logger = Logger(label: "orch.manager")) async throws {
        self.configuration = configuration
        self.logger = logger
        if let problem = configuration.exposureProblem { throw ManagerError.exposed(problem) }
        do {
            // The owner's only: it holds the CA's key and the tokens.
            try FileManager.default.createDirectory(
                atPath: configuration.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw ManagerError.dataDirectory("cannot use \(configuration.dataDirectory): \(error.localizedDescription)")
        }
        let store: any ManagerStore
        switch configuration.storeLocation {
        case .sqlite(let path):
            do {
                store = try SQLiteStore(path: path, durability: configuration.fsync ? .powerLoss : .processCrash)
            } catch {
                throw ManagerError.dataDirectory("cannot open \(path): \(error)")
            }
        case .postgres(let url):
            do {
                store = try await PostgresStore(url: url, logger: logger)
            } catch {
                throw ManagerError.store("\(error)")
            }
        }
        self.store = store
        do {
            ca = try ClusterCA.loadOrCreate(in: configuration.dataDirectory)
            joinSecret = try JoinSecret(in: configuration.dataDirectory, ca: ca)
        } catch {
            throw ManagerError.dataDirectory("cannot keep the cluster's CA and join token in \(configuration.dataDirectory): \(error)")
        }
        tokens = try await APITokens(store: store)
        if tokens.isEmpty {
            // The first start: the admin's token, in a file only this user can read, written
            // before the token is stored (a start that fails between the two starts over).
            let token = LocalTokens.newToken()
            do {
                try LocalTokens.writePrivately(token + "\n", to: configuration.adminTokenPath)
            } catch {
                throw ManagerError.dataDirectory("cannot write the admin token to \(configuration.adminTokenPath): \(error)")
            }
            _ = try await tokens.create(name: "admin", role: .admin, token: token)
            logger.info("made the admin token; it is in \(configuration.adminTokenPath)")
        }
        let snapshot = try await store.load()
        metrics = ManagerMetrics()
        cluster = Cluster(configuration: configuration, snapshot: snapshot, metrics: metrics, logger: logger)
        if !snapshot.tasks.isEmpty || !snapshot.nodes.isEmpty {
            logger.info("resumed \(snapshot.tasks.count) tasks and \(snapshot.nodes.count) nodes from \(configuration.storeLocation)")
        }
    }

    /// The join token workers need (`ORCH1-...`), 0600.
    public var joinTokenPath: String { "\(configuration.dataDirectory)/\(JoinSecret.tokenFile)" }

    public func run() async throws {
        // Left before the gateway listens, so that whoever sees it listen finds the token
        // (on port 0 the port is known only then: it is left before "listening on" is logged).
        if configuration.httpPort != 0 { leaveAdminToken(host: configuration.httpHost, port: configuration.httpPort) }
        // Mutual TLS on every connection, always: the manager's server certificate (made at
        // each start, made again at half its life) and a node certificate asked of the client.
        let serverTLS = try ServerTLS(ca: ca, hosts: [configuration.wireHost], lifetime: configuration.certificateLifetime)
        let listener = try await WireListener.bind(
            host: configuration.wireHost, port: configuration.wirePort, maximumFrameBytes: configuration.maximumFrameBytes,
            tls: { NIOSSLServerHandler(context: serverTLS.context) })
        let wire = "\(listener.localAddress.ipAddress ?? configuration.wireHost):\(listener.localAddress.port ?? configuration.wirePort)"
        wireAddress.withLock { $0 = wire }
        logger.info("cluster protocol listening on \(wire)")
        let server: HTTPServerBuilder = configuration.httpTLS
            ? try .tls(.http1WithAPIErrors(), tlsConfiguration: try restTLS())
            : .http1WithAPIErrors()
        let app = Application(
            router: RESTGateway(cluster: cluster, store: store, metrics: metrics, tokens: tokens, joinSecret: joinSecret).router(),
            server: server,
            configuration: ApplicationConfiguration(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: "orch-manager"),
            onServerRunning: { channel in
                let address = "\(channel.localAddress?.ipAddress ?? "127.0.0.1"):\(channel.localAddress?.port ?? 0)"
                if self.configuration.httpPort == 0 { self.leaveAdminToken(host: self.configuration.httpHost, port: channel.localAddress?.port ?? 0) }
                self.httpAddress.withLock { $0 = address }
                self.logger.info("listening on \(address)\(self.configuration.httpTLS ? " (TLS: https://)" : "")")
            },
            logger: logger)
        let gateway = WireGateway(
            cluster: cluster, ca: ca, joinSecret: joinSecret, certificateLifetime: configuration.certificateLifetime, logger: logger)
        do {
            try await serve(app: app, listener: listener, gateway: gateway, serverTLS: serverTLS)
        } catch is ShutdownRequested {
            logger.info("stopping; the state is in \(configuration.databasePath)")
        }
        await tokens.flushLastUse()
        await cluster.abandonRequests(reason: "the manager is stopping")
    }

    private func answerDNS(host: String) async throws {
        let dns: DNSResponder
        do {
            dns = try await DNSResponder.bind(host: host, port: configuration.dnsPort, cluster: cluster, logger: logger)
        } catch {
            throw ManagerError.dns("cannot answer DNS on \(host):\(configuration.dnsPort) (\(error)); choose another with --dns HOST:PORT, or --dns off")
        }
        dnsAddress.withLock { $0 = dns.localAddress }
        logger.info("DNS for service.orch answering on \(dns.localAddress)")
        try await dns.run()
    }

    private func serve(app: some ApplicationProtocol, listener: WireListener, gateway: WireGateway, serverTLS: ServerTLS) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            // Bound here, where it is also run: a channel bound and never run traps when it goes.
            if let host = configuration.dnsHost {
                group.addTask { try await self.answerDNS(host: host) }
            }
            group.addTask { try await self.commitJournal() }
            group.addTask {
                while true {
                    try await Task.sleep(for: self.configuration.certificateLifetime / 2)
                    do { try serverTLS.renew() } catch { self.logger.error("cannot renew the cluster port's certificate: \(error)") }
                }
            }
            group.addTask { try await app.runService() }
            group.addTask { try await listener.run { await gateway.serve($0) } }
            group.addTask { try await self.controlLoop() }
            group.addTask {
                while true {
                    try await Task.sleep(for: .seconds(10))
                    await self.tokens.flushLastUse()
                }
            }
            group.addTask {
                try? await gracefulShutdown()
                // The last batches are written before the group ends (within a bound).
                await self.awaitCommitted(within: .seconds(5))
                throw ShutdownRequested()
            }
        }
    }

    /// Leaves the admin token for orchctl run by this user on this host (``LocalTokens``).
    private func leaveAdminToken(host: String, port: Int) {
        guard let token = try? String(contentsOfFile: configuration.adminTokenPath, encoding: .utf8) else { return }
        do {
            try LocalTokens.write(token.trimmingCharacters(in: .whitespacesAndNewlines), host: host, port: port)
            // Over TLS with the cluster's CA, orchctl on this host trusts that CA for this API.
            if configuration.httpTLS, configuration.httpCertificatePath == nil {
                try LocalTokens.writeCA(try ca.certificate.serializeAsPEM().pemString + "\n", host: host, port: port)
            }
        } catch {
            logger.warning("cannot leave the admin token for orchctl in \(LocalTokens.directory): \(error); give it --token")
        }
    }

    /// The REST gateway's TLS: the certificate and key given, or a server certificate from
    /// the cluster's CA (a year; made again at each start) naming the addresses it serves on.
    private func restTLS() throws -> TLSConfiguration {
        var tls: TLSConfiguration
        if let certificatePath = configuration.httpCertificatePath, let keyPath = configuration.httpKeyPath {
            do {
                tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(certificatePath).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem)))
            } catch {
                throw ManagerError.dataDirectory("cannot use --http-cert \(certificatePath) and --http-key \(keyPath): \(error)")
            }
        } else {
            let wildcard = ["0.0.0.0", "::", ""].contains(configuration.httpHost)
            var hosts = wildcard ? [] : [configuration.httpHost]
            hosts += ["127.0.0.1", "localhost", ProcessInfo.processInfo.hostName] + configuration.httpNames
            var seen = Set<String>()
            hosts = hosts.filter { !$0.isEmpty && seen.insert($0).inserted }
            tls = try ClusterTLS.serverConfiguration(ca: ca, hosts: hosts, lifetime: .seconds(365 * 24 * 3600))
        }
        tls.minimumTLSVersion = .tlsv12
        return tls
    }

    /// Ends the serving group on graceful shutdown.
    struct ShutdownRequested: Error {}

    /// Writes the machine's batches to the store, in order: every batch waiting is written in
    /// one transaction (group commit). A failed write loses nothing: the batches go back in
    /// front and are tried again after a backoff (50 ms doubling to 5 s), for as long as it
    /// takes; the machine refuses new changes meanwhile.
    private func commitJournal() async throws {
        var delay: Duration = .milliseconds(50)
        for await _ in cluster.journalReady {
            while let batches = await cluster.takeBatches() {
                do {
                    try await store.apply(batches)
                    delay = .milliseconds(50)
                    await cluster.committed(through: batches.last?.sequence ?? 0)
                } catch {
                    await cluster.commitFailed(batches, reason: "\(error)")
                    try await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(5))
                }
            }
        }
    }

    /// Waits until every batch handed out is written, or `bound` has passed.
    private func awaitCommitted(within bound: Duration) async {
        let deadline = ContinuousClock.now + bound
        while !(await cluster.isCommitted), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The timer: fires the machine's wakes (heartbeat deadlines, backoffs, handshakes). It
    /// looks every 20 ms whether the earliest one has come; everything else is driven by the
    /// events that cause it (a submission, a frame, a connection, a commit).
    private func controlLoop() async throws {
        while true {
            try await Task.sleep(for: .milliseconds(20))
            await cluster.tick()
        }
    }
}

public enum ManagerError: Error, Sendable, CustomStringConvertible {
    case dataDirectory(String)
    /// A listener would be reachable off this host without TLS.
    case exposed(String)
    /// The DNS port could not be bound.
    case dns(String)
    /// The store (a PostgreSQL server) could not be opened.
    case store(String)

    public var description: String {
        switch self {
        case .dataDirectory(let text), .exposed(let text), .dns(let text), .store(let text): text
        }
    }
}

/// The cluster port's TLS context: a server certificate from the cluster's CA, made again
/// before it expires (connections made from then on present the new one).
final class ServerTLS: Sendable {
    private let ca: ClusterCA
    private let hosts: [String]
    private let lifetime: Duration
    private let current: Mutex<NIOSSLContext>

    init(ca: ClusterCA, hosts: [String], lifetime: Duration) throws {
        self.ca = ca
        self.hosts = hosts
        self.lifetime = lifetime
        current = Mutex(try ClusterTLS.serverContext(ca: ca, hosts: hosts, lifetime: lifetime))
    }

    var context: NIOSSLContext { current.withLock { $0 } }

    func renew() throws {
        let fresh = try ClusterTLS.serverContext(ca: ca, hosts: hosts, lifetime: lifetime)
        current.withLock { $0 = fresh }
    }
}
