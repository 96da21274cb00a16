import ArgumentParser
import Foundation
import Logging
import OrchCore
import OrchRuntime
import OrchSecurity
import OrchWire
import OrchWorker
import ServiceLifecycle

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Runs a worker: runs the tasks its manager assigns on the local Docker engine.",
        discussion: """
            The worker dials the manager's cluster port and keeps that connection, reconnecting by
            itself. Its node id is kept in its state directory, so that a restarted worker finds and
            adopts its containers. Ctrl-C (or SIGTERM) leaves the containers running; with --drain
            the manager moves them elsewhere.

            Joining: the cluster port speaks mutual TLS only. A worker without a certificate joins
            with the manager's join token (join.token in the manager's data directory; `orchctl
            token rotate-join` makes a new one): it checks the manager's certificate against the
            CA digest in the token, and is issued a certificate for its node id, kept in its
            state directory and renewed by itself. Later starts need no token. A wrong token
            exits with status 3.

            Examples:
              orchctl worker --join-token-file ~/.orch/manager/join.token
              orchctl worker --manager 10.0.0.5:5556 --name w1 --join-token ORCH1-...
              orchctl worker --manager 10.0.0.5:5556,10.0.0.6:5556,10.0.0.7:5556 --name w1
              orchctl worker --name w2 --http 127.0.0.1:0 --cpus 1 --memory 2GiB
            """.reflowed)

    @Option(help: ArgumentHelp(
        "The manager's cluster address; several managers sharing one store, comma-separated: the worker dials the leader and follows it (env ORCH_MANAGER).",
        valueName: "host:port[,host:port...]"))
    var manager: String = ProcessInfo.processInfo.environment["ORCH_MANAGER"] ?? "127.0.0.1:5556"

    @Option(help: ArgumentHelp("Where the worker's HTTP API listens (port 0: any free port).", valueName: "host:port"))
    var http: String = "127.0.0.1:5557"

    @Option(help: ArgumentHelp(
        "Where other workers and users reach this worker: its services' containers publish their ports here (default: the host of --http; 127.0.0.1 when that is 0.0.0.0).",
        valueName: "ip"))
    var advertiseAddress: String?

    @Option(help: ArgumentHelp(
        "The HAProxy of the routing mesh, which listens on every service's published port here (a path, or a name in PATH).",
        valueName: "path"))
    var haproxy: String = "haproxy"

    @Option(help: "The worker's name (default: the host name).")
    var name: String = WorkerConfiguration.defaultName

    @Option(help: ArgumentHelp("Where the node id is kept (default: ~/.orch/worker-NAME).", valueName: "dir"))
    var stateDir: String?

    @Option(help: "CPUs to offer (default: all of this machine's).")
    var cpus: Double?

    @Option(help: ArgumentHelp("Memory to offer, e.g. 2GiB (default: all of this machine's).", valueName: "size"))
    var memory: String?

    @Option(name: .customLong("label"), help: ArgumentHelp("A node label for placement constraints (repeatable).", valueName: "key=value"))
    var labels: [String] = []

    @Option(help: ArgumentHelp("Drop and redial a connection on which the manager said nothing for this long, e.g. 5s.", valueName: "duration"))
    var managerSilence: String = "5s"

    @Option(help: ArgumentHelp("The manager's join token, needed until this worker has its certificate (env ORCH_JOIN_TOKEN).", valueName: "token"))
    var joinToken: String? = ProcessInfo.processInfo.environment["ORCH_JOIN_TOKEN"]

    @Option(help: ArgumentHelp("A file holding the join token, e.g. the manager's join.token (env ORCH_JOIN_TOKEN_FILE).", valueName: "path"))
    var joinTokenFile: String? = ProcessInfo.processInfo.environment["ORCH_JOIN_TOKEN_FILE"]

    @Flag(help: "On exit, ask the manager to move this worker's tasks at once.")
    var drain = false

    @OptionGroup var logging: LogOptions

    /// `--manager`'s addresses, in order (at least one).
    func managerAddresses() throws -> [(host: String, port: Int)] {
        let parts = manager.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        return try parts.map { part in
            let address = try HostPort.parse(part, option: "--manager")
            return (address.host, address.port)
        }
    }

    func validate() throws {
        _ = try managerAddresses()
        _ = try HostPort.parse(http, option: "--http")
        if let memory, ByteCount.parse(memory) == nil { throw ValidationError("--memory: \"\(memory)\" is not a size such as 512MiB or 2GiB") }
        if let cpus, !(cpus > 0) { throw ValidationError("--cpus must be more than 0") }
        if !((DurationText.parse(managerSilence)).map({ $0 > .zero }) ?? false) {
            throw ValidationError("--manager-silence: \"\(managerSilence)\" is not a duration such as 5s or 1500ms")
        }
        for label in labels where !label.contains("=") { throw ValidationError("--label: \"\(label)\" is not key=value") }
        for label in labels where label.hasPrefix(NodeLabel.reservedPrefix) {
            throw ValidationError("--label: \"\(label)\": labels starting with \(NodeLabel.reservedPrefix) are set by the worker itself (e.g. \(NodeLabel.mesh))")
        }
        if let joinToken {
            do { _ = try JoinToken(parsing: joinToken) } catch { throw ValidationError("--join-token: \(error)") }
        }
    }

    /// The join token given, from --join-token or the file of --join-token-file.
    func token() throws -> String? {
        if let joinToken { return joinToken }
        guard let joinTokenFile else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: joinTokenFile, encoding: .utf8)
        } catch {
            throw ValidationError("--join-token-file: cannot read \(joinTokenFile): \(error.localizedDescription)")
        }
        do { _ = try JoinToken(parsing: text) } catch { throw ValidationError("--join-token-file: \(joinTokenFile): \(error)") }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func run() async throws {
        let logger = logging.logger(label: "orch.worker")
        let managers = try managerAddresses()
        let httpAddress = try HostPort.parse(http, option: "--http")
        var configuration = WorkerConfiguration(name: name, stateDirectory: stateDir)
        configuration.managerHost = managers[0].host
        configuration.managerPort = managers[0].port
        configuration.otherManagers = Array(managers.dropFirst())
        configuration.httpHost = httpAddress.host
        configuration.httpPort = httpAddress.port
        do {
            configuration.publishAddress = try WorkerConfiguration.advertiseAddress(advertiseAddress, httpHost: httpAddress.host)
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        configuration.haproxy = haproxy
        configuration.cpus = cpus
        configuration.memoryBytes = memory.flatMap(ByteCount.parse)
        configuration.drain = drain
        configuration.joinToken = try token()
        configuration.managerSilence = DurationText.parse(managerSilence) ?? .seconds(5)
        configuration.labels = Dictionary(labels.map { label in
            let parts = label.split(separator: "=", maxSplits: 1)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }, uniquingKeysWith: { _, last in last })

        do {
            let runtime = try await DockerRuntime.connect(logger: logger)
            let worker: Worker
            do {
                worker = try Worker(configuration: configuration, runtime: runtime, logger: logger)
            } catch {
                // The runtime's HTTP client must be shut down before it goes (it traps otherwise).
                try? await runtime.shutdown()
                throw error
            }
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: worker)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            defer { Task { try? await runtime.shutdown() } }
            try await group.run()
        } catch let error as WireClientError {
            printError(error.description)
            throw ExitCode(3)
        } catch let error as SecurityError {
            // No token to join with, or a manager whose certificate is not the pinned CA's.
            printError(error.description)
            throw ExitCode(3)
        } catch let error as CancellationError {
            _ = error
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
    }
}

/// A `host:port` option.
struct HostPort: Sendable, Hashable {
    var host: String
    var port: Int

    static func parse(_ text: String, option: String) throws -> HostPort {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("\(option): \"\(text)\" is not host:port (for example 127.0.0.1:5556)")
        }
        let host = String(text[..<colon])
        return HostPort(host: host.isEmpty ? "127.0.0.1" : host, port: port)
    }
}

/// The log level of the commands that run a manager or a worker.
struct LogOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Log level: trace, debug, info, warning, error.", valueName: "level"))
    var logLevel: String = "info"

    func validate() throws {
        if Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level: \"\(logLevel)\" is not one of trace, debug, info, warning, error")
        }
    }

    /// swift-log to stderr at the chosen level.
    func logger(label: String) -> Logger {
        var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        return logger
    }
}
