import Foundation
import OrchCore

/// How a worker is run (`orchctl worker`).
public struct WorkerConfiguration: Sendable {
    public var managerHost = "127.0.0.1"
    public var managerPort = 5556
    /// More managers sharing one store (`--manager A,B,C`): the worker dials the one that
    /// leads, and follows a change of leader.
    public var otherManagers: [(host: String, port: Int)] = []
    /// The worker's own HTTP API (port 0: any free port).
    public var httpHost = "127.0.0.1"
    public var httpPort = 5557
    public var name: String
    /// Where the node id is kept; default `~/.orch/worker-NAME`.
    public var stateDirectory: String
    /// Overrides the detected CPUs (so that two workers on one host each offer a share).
    public var cpus: Double?
    /// Overrides the detected memory, in bytes.
    public var memoryBytes: Int?
    /// On exit, say "draining" (move my tasks) instead of "restarting" (keep them for a while).
    public var drain = false
    public var labels: [String: String] = [:]
    /// The worker's advertise address: where published ports bind, and where other workers
    /// and users reach them.
    public var publishAddress = "127.0.0.1"
    public var joinToken: String?
    /// The HAProxy binary of the routing mesh (a path, or a name looked up in `PATH`).
    public var haproxy = "haproxy"
    /// A connection on which the manager said nothing (it answers a heartbeat in three) for
    /// this long, and at least 4 heartbeat intervals, is dropped and dialed again.
    public var managerSilence: Duration = .seconds(5)

    public init(name: String, stateDirectory: String? = nil) {
        self.name = name
        self.stateDirectory = stateDirectory ?? Self.defaultStateDirectory(name: name)
    }

    /// The advertise address given (an IP address), else the host of `--http` unless that is
    /// every address (then 127.0.0.1).
    public static func advertiseAddress(_ given: String?, httpHost: String) throws -> String {
        guard let given else { return ["0.0.0.0", "::", ""].contains(httpHost) ? "127.0.0.1" : httpHost }
        let isIP = given.split(separator: ".").count == 4 && given.split(separator: ".").allSatisfy { UInt8($0) != nil } || given.contains(":")
        guard isIP, !["0.0.0.0", "::"].contains(given) else {
            throw WorkerError.badAdvertiseAddress("--advertise-address must be one IP address of this host, such as 127.0.0.1 or 10.0.0.5, not \(String(reflecting: given))")
        }
        return given
    }

    /// The token the worker's HTTP API asks for.
    public var apiTokenPath: String { "\(stateDirectory)/api.token" }

    public static func defaultStateDirectory(name: String) -> String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return "\(home)/.orch/worker-\(name)"
    }

    public static var defaultName: String {
        ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "worker"
    }
}

/// The worker's stable node id, kept in its state directory so that a restarted worker is
/// the same node and finds its own containers.
public enum NodeIdentity {
    public static let fileName = "node-id"

    /// Reads the node id from `directory`, creating the directory and a new id when there is none.
    public static func loadOrCreate(in directory: String) throws -> NodeID {
        let path = "\(directory)/\(fileName)"
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard TaskID.problem(with: id) == nil else {
                throw WorkerError.badStateDirectory("\(path) holds no valid node id (\"\(id.prefix(40))\"); remove it to make a new one")
            }
            return NodeID(rawValue: id)
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let id = NodeID.random()
            // Written to a temporary file and renamed, so that a crash never leaves half an id.
            try Data((id.rawValue + "\n").utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
            return id
        } catch {
            throw WorkerError.badStateDirectory("cannot keep the node id in \(directory): \(error.localizedDescription)")
        }
    }
}

public enum WorkerError: Error, Sendable, Hashable, CustomStringConvertible {
    case badStateDirectory(String)
    case notConnected
    case submitTimedOut
    case submitRefused(String)
    /// Its HTTP API would be reachable off this host without TLS.
    case exposed(String)
    case badAdvertiseAddress(String)

    public var description: String {
        switch self {
        case .badStateDirectory(let text), .exposed(let text), .badAdvertiseAddress(let text): text
        case .notConnected: "no connection to the manager; try again when the worker is connected"
        case .submitTimedOut: "the manager did not answer the submission in time"
        case .submitRefused(let reason): "the manager refused the task: \(reason)"
        }
    }
}
