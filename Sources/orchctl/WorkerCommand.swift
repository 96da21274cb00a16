import ArgumentParser
import Foundation
import Logging
import OrchCore
import OrchRuntime
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

            Examples:
              orchctl worker                                   manager at 127.0.0.1:5556, API on 127.0.0.1:5557
              orchctl worker --manager 10.0.0.5:5556 --name w1
              orchctl worker --name w2 --http 127.0.0.1:0 --cpus 1 --memory 2GiB
            """)

    @Option(help: ArgumentHelp("The manager's cluster address (env ORCH_MANAGER).", valueName: "host:port"))
    var manager: String = ProcessInfo.processInfo.environment["ORCH_MANAGER"] ?? "127.0.0.1:5556"

    @Option(help: ArgumentHelp("Where the worker's HTTP API listens (port 0: any free port).", valueName: "host:port"))
    var http: String = "127.0.0.1:5557"

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

    @Flag(help: "On exit, ask the manager to move this worker's tasks at once.")
    var drain = false

    @OptionGroup var logging: LogOptions

    func validate() throws {
        _ = try HostPort.parse(manager, option: "--manager")
        _ = try HostPort.parse(http, option: "--http")
        if let memory, ByteCount.parse(memory) == nil { throw ValidationError("--memory: \"\(memory)\" is not a size such as 512MiB or 2GiB") }
        if let cpus, !(cpus > 0) { throw ValidationError("--cpus must be more than 0") }
        if !((DurationText.parse(managerSilence)).map({ $0 > .zero }) ?? false) {
            throw ValidationError("--manager-silence: \"\(managerSilence)\" is not a duration such as 5s or 1500ms")
        }
        for label in labels where !label.contains("=") { throw ValidationError("--label: \"\(label)\" is not key=value") }
    }

    func run() async throws {
        let logger = logging.logger(label: "orch.worker")
        let managerAddress = try HostPort.parse(manager, option: "--manager")
        let httpAddress = try HostPort.parse(http, option: "--http")
        var configuration = WorkerConfiguration(name: name, stateDirectory: stateDir)
        configuration.managerHost = managerAddress.host
        configuration.managerPort = managerAddress.port
        configuration.httpHost = httpAddress.host
        configuration.httpPort = httpAddress.port
        configuration.cpus = cpus
        configuration.memoryBytes = memory.flatMap(ByteCount.parse)
        configuration.drain = drain
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
