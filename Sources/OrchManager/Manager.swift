import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import OrchCore
import OrchHTTP
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
    /// Who leads (this manager alone on SQLite; by the lease on PostgreSQL).
    let directory: LeaderDirectory
    /// The lease, when the store is shared (PostgreSQL).
    private let keeper: LeaseKeeper?
    private let startedAt = Date()
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
        let shared = store as? PostgresStore
        if let shared {
            // Managers on one PostgreSQL share the cluster's CA and join token through it.
            do {
                let bundle = try await shared.secret("ca") { Array(try ClusterCA.create().pemBundle.utf8) }
                ca = try ClusterCA(pemBundle: String(decoding: bundle, as: UTF8.self))
                joinSecret = try await JoinSecret(in: configuration.dataDirectory, ca: ca, sharedIn: shared)
            } catch {
                throw ManagerError.store("cannot keep the cluster's CA and join token in \(configuration.storeLocation): \(error)")
            }
        } else {
            do {
                ca = try ClusterCA.loadOrCreate(in: configuration.dataDirectory)
                joinSecret = try JoinSecret(in: configuration.dataDirectory, ca: ca)
            } catch {
                throw ManagerError.dataDirectory("cannot keep the cluster's CA and join token in \(configuration.dataDirectory): \(error)")
            }
        }
        tokens = try await APITokens(store: store)
        if tokens.isEmpty { try await Self.makeAdminToken(tokens, configuration: configuration, logger: logger) }
        metrics = ManagerMetrics()
        let name = configuration.name ?? Self.keptName(in: configuration.dataDirectory, logger: logger)
        directory = LeaderDirectory(name: name, alone: shared == nil)
        if let shared {
            // A follower loads nothing: the state is loaded when it takes the lease.
            let cluster = Cluster(
                configuration: configuration, snapshot: StoreSnapshot(tasks: [], nodes: []), directory: directory, metrics: metrics, logger: logger)
            self.cluster = cluster
            let box = TakeOver()
            keeper = LeaseKeeper(
                store: shared, name: name, configuration: configuration.lease, cluster: cluster, logger: logger,
                takeOver: { epoch in await box.manager?.takeOver(epoch: epoch) })
            box.manager = self
        } else {
            let snapshot = try await store.load()
            cluster = Cluster(configuration: configuration, snapshot: snapshot, directory: directory, metrics: metrics, logger: logger)
            keeper = nil
            if !snapshot.tasks.isEmpty || !snapshot.nodes.isEmpty {
                logger.info("resumed \(snapshot.tasks.count) tasks and \(snapshot.nodes.count) nodes from \(configuration.storeLocation)")
            }
        }
    }

    /// The first start: the admin's token, in a file only this user can read, written
    /// before the token is stored (a start that fails between the two starts over). When
    /// another manager on the same store made it first, this one's file is removed.
    private static func makeAdminToken(_ tokens: APITokens, configuration: ManagerConfiguration, logger: Logger) async throws {
        let token = LocalTokens.newToken()
        do {
            try LocalTokens.writePrivately(token + "\n", to: configuration.adminTokenPath)
        } catch {
            throw ManagerError.dataDirectory("cannot write the admin token to \(configuration.adminTokenPath): \(error)")
        }
        do {
            _ = try await tokens.create(name: "admin", role: .admin, token: token)
        } catch let error as APIError where error.status == .conflict {
            try? FileManager.default.removeItem(atPath: configuration.adminTokenPath)
            try await tokens.reload()
            logger.info("another manager made the admin token (it is in its data directory)")
            return
        }
        logger.info("made the admin token; it is in \(configuration.adminTokenPath)")
    }

    /// The name of a manager not given one: the host's and a few random characters, made at
    /// its first start and kept in its data directory (`manager-name`), so that the same
    /// manager started again is the lease's same holder and takes its own lease back at once.
    static func keptName(in directory: String, logger: Logger) -> String {
        let path = "\(directory)/manager-name"
        if let kept = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !kept.isEmpty {
            return kept
        }
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "manager"
        let name = "\(host)-\(String(UInt32.random(in: 0 ... .max), radix: 36))"
        do {
            try LocalTokens.writePrivately(name + "\n", to: path)
        } catch {
            logger.warning("cannot keep this manager's name in \(path) (\(error)); it is \(name) until it stops")
        }
        return name
    }

    /// Set once the manager is made, for the lease keeper's call back into it.
    private final class TakeOver: @unchecked Sendable {
        weak var manager: Manager?
    }

    /// Leads with `epoch`: the tokens, join token and whole state are loaded from the store,
    /// then the cluster acts. A load that fails gives the lease up for now (it is taken
    /// again at the next turn, with the next epoch).
    func takeOver(epoch: Int64) async {
        let started = ContinuousClock.now
        do {
            try await tokens.reload()
            try await joinSecret.reload()
            let snapshot = try await store.load()
            try Task.checkCancellation()
            guard await cluster.lead(snapshot: snapshot, epoch: epoch) else { return }
            logger.notice("leading with epoch \(epoch): \(snapshot.tasks.count) tasks and \(snapshot.nodes.count) nodes loaded in \((ContinuousClock.now - started).milliseconds) ms")
        } catch is CancellationError {
            return
        } catch {
            logger.error("cannot load the state to lead with epoch \(epoch): \(error)")
            keeper?.deposed()
        }
    }

    /// Loads the web console (`/ui`); nil when its templates cannot be read.
    private func loadConsole() async -> Console? {
        do {
            return try await Console.load()
        } catch {
            logger.warning("no web console: \(error)")
            return nil
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
            router: RESTGateway(
                cluster: cluster, store: store, metrics: metrics, tokens: tokens, joinSecret: joinSecret, directory: directory,
                startedAt: startedAt, apiURL: { [weak self] in self?.apiURL }, console: await loadConsole(), secureCookies: configuration.httpTLS).router(),
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
            logger.info("stopping; the state is in \(configuration.storeLocation)")
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
            if let keeper, let shared = store as? PostgresStore {
                group.addTask { await keeper.run() }
                group.addTask { try await self.announceLoop(shared) }
                group.addTask { await self.listenForReleases(shared, keeper: keeper) }
            }
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
                if let keeper = self.keeper, let shared = self.store as? PostgresStore {
                    // A planned stop hands over at once: the lease is released, and the
                    // standbys listening take it.
                    await keeper.stop()
                    try? await shared.forgetManager(self.directory.info.name)
                }
                throw ShutdownRequested()
            }
        }
    }

    /// Where clients reach this manager's REST gateway: the address given, or the one it
    /// listens on (nil until it listens).
    var apiURL: String? {
        if let given = configuration.advertiseAPI { return given }
        guard let address = httpAddress.withLock({ $0 }) else { return nil }
        let wildcard = ["0.0.0.0", "::", ""].contains(configuration.httpHost)
        let port = address.split(separator: ":").last.map(String.init) ?? "\(configuration.httpPort)"
        let host = wildcard ? ProcessInfo.processInfo.hostName : configuration.httpHost
        return "\(configuration.httpTLS ? "https" : "http")://\(host.contains(":") ? "[\(host)]" : host):\(port)"
    }

    /// Where workers reach this manager's cluster port: the address given, or the one it
    /// listens on.
    var wireURL: String? {
        if let given = configuration.advertiseWire { return given }
        return wireAddress.withLock { $0 }
    }

    /// Every second: says in the store that this manager runs and where it serves, and
    /// reads who leads and where the others serve. A follower also reads the API tokens
    /// again (the leader may have made or revoked some).
    private func announceLoop(_ shared: PostgresStore) async throws {
        var failing = false
        while true {
            do {
                if let api = apiURL, let wire = wireURL {
                    try await shared.announce(ManagerAnnouncement(name: directory.info.name, apiURL: api, wireAddress: wire, startedAt: startedAt))
                }
                let (managers, leader) = try await shared.managers()
                directory.update { info in
                    info.managers = managers
                    if !info.acting || leader?.name != info.name {
                        info.leader = leader?.name
                        info.leaderEpoch = leader?.epoch
                    }
                }
                if !directory.info.acting { try await tokens.reload() }
                if failing { logger.notice("the store answers again") }
                failing = false
            } catch {
                if !failing { logger.warning("cannot announce this manager in the store: \(error)") }
                failing = true
            }
            try await Task.sleep(for: .seconds(1))
        }
    }

    /// Wakes the lease keeper whenever a holder releases the lease; listens again when the
    /// connection it listens on is lost.
    private func listenForReleases(_ shared: PostgresStore, keeper: LeaseKeeper) async {
        while !Task.isCancelled {
            do {
                try await shared.listenForReleases { keeper.released() }
            } catch {
                logger.debug("listening for the lease's release: \(error)")
            }
            try? await Task.sleep(for: .seconds(1))
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
            while let commit = await cluster.takeBatches() {
                do {
                    if let fence = commit.fence, let shared = store as? PostgresStore {
                        // The leader's writes are fenced by its epoch: a deposed one commits nothing.
                        try await shared.apply(commit.batches, fencedBy: fence)
                    } else {
                        try await store.apply(commit.batches)
                    }
                    delay = .milliseconds(50)
                    await cluster.committed(commit)
                } catch let error as StaleEpochError {
                    logger.warning("\(error)")
                    keeper?.deposed()
                    await cluster.commitFailed(commit, reason: "\(error)")
                } catch {
                    await cluster.commitFailed(commit, reason: "\(error)")
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
