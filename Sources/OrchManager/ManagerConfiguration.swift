import Foundation
import OrchControl
import OrchCore

/// How a manager is run (`orchctl manager`).
public struct ManagerConfiguration: Sendable {
    /// The REST gateway (port 0: any free port).
    public var httpHost = "127.0.0.1"
    public var httpPort = 5555
    /// The cluster protocol's listener, which workers dial.
    public var wireHost = "127.0.0.1"
    public var wirePort = 5556
    /// Where DNS for `service.orch.` is answered (UDP; port 0: any free port); nil: not at all.
    /// `orchctl manager` answers on 127.0.0.1:8600 unless told otherwise.
    public var dnsHost: String?
    public var dnsPort = 8600
    /// Where the SQLite file lives; default `~/.orch/manager`.
    public var dataDirectory: String
    public var scheduler: SchedulerKind = .epvm
    public var heartbeatInterval: Duration = .seconds(1)
    /// A node silent this long is down and its tasks are lost.
    public var heartbeatGrace: Duration = .seconds(5)
    /// How long the tasks of a node that said goodbye "restarting" are kept for it.
    public var restartWindow: Duration = .seconds(30)
    /// Ended tasks (not a service's) are removed this long after they ended, with their history.
    public var retention: Duration = .seconds(24 * 3600)
    /// At most this many ended tasks are kept; the oldest are removed first.
    public var retainedEndedTasks = 100_000
    /// `synchronous = FULL`: survive power loss, not only a killed process.
    public var fsync = false
    /// Where the state is kept: nil, the SQLite file in the data directory.
    public var store: StoreLocation?
    public var maximumFrameBytes = 1 << 20
    /// How long the certificates issued to nodes (and the manager's own) are valid; nodes
    /// renew theirs at half of it.
    public var certificateLifetime: Duration = .seconds(30 * 24 * 3600)
    /// The REST gateway's own certificate and key (PEM files); without them, one from the
    /// cluster's CA when it serves TLS.
    public var httpCertificatePath: String?
    public var httpKeyPath: String?
    /// More names (DNS or IP) for the certificate the CA makes for the REST gateway.
    public var httpNames: [String] = []
    /// This manager's name among several on one store (the lease's holder); nil: the
    /// host's name and a few random characters.
    public var name: String?
    /// Where clients and workers reach this manager, as the others tell them (redirects,
    /// refusals naming the leader); nil: the addresses it listens on.
    public var advertiseAPI: String?
    public var advertiseWire: String?
    /// The lease's timings (renewed every 2 s, 6 s long, acting for 4 s after a renewal).
    public var lease = LeaseMachine.Configuration()

    /// TLS on the REST gateway: whenever it binds off loopback, or is given a certificate.
    public var httpTLS: Bool { httpCertificatePath != nil || !LoopbackAddress.contains(httpHost) }

    public init(dataDirectory: String? = nil) {
        self.dataDirectory = dataDirectory ?? Self.defaultDataDirectory
    }

    public static var defaultDataDirectory: String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return "\(home)/.orch/manager"
    }

    /// Why the listeners may not start as configured, or nil. (Off loopback the REST
    /// gateway serves TLS and the cluster port is always mutual TLS: neither is refused.)
    public var exposureProblem: String? {
        if (httpCertificatePath == nil) != (httpKeyPath == nil) {
            return "give both --http-cert and --http-key (a certificate and its private key, PEM), or neither"
        }
        return nil
    }

    public var databasePath: String { "\(dataDirectory)/manager.sqlite" }
    /// The store it opens: the one given, else the SQLite file in the data directory.
    public var storeLocation: StoreLocation { store ?? .sqlite(databasePath) }
    /// The admin's REST token, written at the first start (0600).
    public var adminTokenPath: String { "\(dataDirectory)/admin.token" }
}

/// Where a manager keeps its state: `sqlite:PATH` (one manager; the default, in its data
/// directory) or `postgres://USER@HOST:PORT/DATABASE` (a PostgreSQL server, which several
/// managers can share).
public enum StoreLocation: Sendable, Hashable, CustomStringConvertible {
    case sqlite(String)
    case postgres(String)

    /// Reads `sqlite:PATH`, a bare path, or a `postgres://` (`postgresql://`) URL.
    public init(_ text: String) throws(StoreLocationError) {
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            self = .postgres(text)
        } else if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            guard !path.isEmpty else { throw StoreLocationError(text: text, reason: "no path after sqlite:") }
            self = .sqlite(path)
        } else if text.contains("://") {
            throw StoreLocationError(text: text, reason: "a store is sqlite:PATH or postgres://USER@HOST:PORT/DATABASE")
        } else {
            guard !text.isEmpty else { throw StoreLocationError(text: text, reason: "empty") }
            self = .sqlite(text)
        }
    }

    /// For messages: the file, or the URL without its password.
    public var description: String {
        switch self {
        case .sqlite(let path): return path
        case .postgres(let url):
            guard var components = URLComponents(string: url), components.password != nil else { return url }
            components.password = nil
            return components.string ?? url
        }
    }
}

public struct StoreLocationError: Error, CustomStringConvertible, Sendable {
    public var text: String
    public var reason: String
    public var description: String { "--store \(text): \(reason)" }
}
