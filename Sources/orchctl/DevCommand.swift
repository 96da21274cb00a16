import ArgumentParser
import Foundation
import Logging
import OrchCore
import OrchManager
import OrchRuntime
import OrchWorker
import ServiceLifecycle

struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Runs a manager and one local worker in one process: a cluster to try things on.",
        discussion: """
            State goes to a temporary directory, removed when the cluster stops, unless --data
            is given (then the manager keeps it in DIR/manager and the worker its identity in
            DIR/worker). Ctrl-C stops both; the containers are left running and adopted next
            time with the same --data. It says how to point orchctl at it (ORCH_API) when it
            starts.

            Examples:
              orchctl dev
              orchctl dev --data ~/.orch/dev --http 127.0.0.1:8080
            """.reflowed)

    @Option(help: ArgumentHelp("Where the REST API listens.", valueName: "host:port"))
    var http: String = "127.0.0.1:5555"

    @Option(help: ArgumentHelp("Where the worker connects (the cluster protocol).", valueName: "host:port"))
    var wire: String = "127.0.0.1:5556"

    @Option(help: ArgumentHelp("Where the worker's own API listens.", valueName: "host:port"))
    var workerHttp: String = "127.0.0.1:5557"

    @Option(help: ArgumentHelp("Keep the state here instead of a temporary directory.", valueName: "dir"))
    var data: String?

    @OptionGroup var logging: LogOptions

    func validate() throws {
        _ = try HostPort.parse(http, option: "--http")
        _ = try HostPort.parse(wire, option: "--wire")
        _ = try HostPort.parse(workerHttp, option: "--worker-http")
    }

    func run() async throws {
        let logger = logging.logger(label: "orch.dev")
        let root = data ?? NSTemporaryDirectory() + "orch-dev-\(UUID().uuidString.prefix(8))"
        let httpAddress = try HostPort.parse(http, option: "--http")
        let wireAddress = try HostPort.parse(wire, option: "--wire")
        let workerAddress = try HostPort.parse(workerHttp, option: "--worker-http")

        var managerConfiguration = ManagerConfiguration(dataDirectory: "\(root)/manager")
        managerConfiguration.httpHost = httpAddress.host
        managerConfiguration.httpPort = httpAddress.port
        managerConfiguration.wireHost = wireAddress.host
        managerConfiguration.wirePort = wireAddress.port

        var workerConfiguration = WorkerConfiguration(name: "local", stateDirectory: "\(root)/worker")
        workerConfiguration.managerHost = wireAddress.host == "0.0.0.0" ? "127.0.0.1" : wireAddress.host
        workerConfiguration.managerPort = wireAddress.port
        workerConfiguration.httpHost = workerAddress.host
        workerConfiguration.httpPort = workerAddress.port

        do {
            let manager = try await Manager(configuration: managerConfiguration, logger: logger)
            // The worker joins with the token the manager keeps (a later start needs none).
            workerConfiguration.joinToken = try String(contentsOfFile: manager.joinTokenPath, encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let runtime = try await DockerRuntime.connect(logger: logger)
            let worker: Worker
            do {
                worker = try Worker(configuration: workerConfiguration, runtime: runtime, logger: logger)
            } catch {
                try? await runtime.shutdown()   // its HTTP client traps if dropped running
                throw error
            }
            logger.info("dev cluster: REST on \(http), state in \(root)")
            let pointer = http == "127.0.0.1:5555" ? "orchctl finds it by itself" : "point orchctl at it with export ORCH_API=\(http) (or --api \(http))"
            FileHandle.standardError.write(Data("orchctl dev: a manager and a worker are up, REST on \(http); \(pointer). State in \(root)\(data == nil ? " (temporary: removed when it stops)" : ""). Ctrl-C stops it.\n".utf8))
            // Started in order (the manager listens before the worker dials), stopped in reverse.
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: manager), .init(service: worker)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
            try? await runtime.shutdown()
        } catch {
            removeTemporaryState(root)
            printError("\(error)")
            throw ExitCode(1)
        }
        removeTemporaryState(root)
    }

    /// The temporary state goes with the cluster; a --data directory stays.
    func removeTemporaryState(_ root: String) {
        guard data == nil else { return }
        try? FileManager.default.removeItem(atPath: root)
    }
}
