import Foundation
import OrchCore

/// How a manager is run (`orchctl manager`).
public struct ManagerConfiguration: Sendable {
    /// The REST gateway (port 0: any free port).
    public var httpHost = "127.0.0.1"
    public var httpPort = 5555
    /// The cluster protocol's listener, which workers dial.
    public var wireHost = "127.0.0.1"
    public var wirePort = 5556
    /// Where the SQLite file lives; default `~/.orch/manager`.
    public var dataDirectory: String
    public var scheduler: SchedulerKind = .epvm
    public var heartbeatInterval: Duration = .seconds(1)
    /// A node silent this long is down and its tasks are lost.
    public var heartbeatGrace: Duration = .seconds(5)
    /// How long the tasks of a node that said goodbye "restarting" are kept for it.
    public var restartWindow: Duration = .seconds(30)
    /// `synchronous = FULL`: survive power loss, not only a killed process.
    public var fsync = false
    public var maximumFrameBytes = 1 << 20
    /// How long the certificates issued to nodes (and the manager's own) are valid; nodes
    /// renew theirs at half of it.
    public var certificateLifetime: Duration = .seconds(30 * 24 * 3600)

    public init(dataDirectory: String? = nil) {
        self.dataDirectory = dataDirectory ?? Self.defaultDataDirectory
    }

    public static var defaultDataDirectory: String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return "\(home)/.orch/manager"
    }

    /// Why these listeners may not start: the REST gateway on an address off this host's
    /// loopback would carry its tokens in the clear (there is no TLS on it yet). Nil when
    /// they may.
    public var exposureProblem: String? {
        LoopbackAddress.refusal(of: "the REST API", carrying: "its tokens", host: httpHost, port: httpPort)
    }

    public var databasePath: String { "\(dataDirectory)/manager.sqlite" }
    /// The admin's REST token, written at the first start (0600).
    public var adminTokenPath: String { "\(dataDirectory)/admin.token" }
}
