import ArgumentParser
import Foundation
import Logging
import OrchCore
import OrchManager
import ServiceLifecycle

extension SchedulerKind: ExpressibleByArgument {}

struct ManagerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manager",
        abstract: "Runs a manager: keeps tasks in SQLite or PostgreSQL, places them on workers, serves the REST API.",
        discussion: """
            Workers dial the cluster address (--wire); people and programs use the REST API (--http).
            State lives in --data (a SQLite file), or with --store in a PostgreSQL database; a manager
            started again on the same state resumes every task and node and reconciles with the
            workers as they reconnect.

            Security: the cluster port is mutual TLS, always; workers join with the join token in
            --data/join.token. The REST API needs a token (the admin's is in --data/admin.token and
            left for this user's orchctl); bound off loopback it serves TLS, with --http-cert and
            --http-key or else a certificate from the cluster's CA (orchctl: --ca-file DATA/ca.crt).

            Several managers: start each with the same --store postgres://... (and its own --data,
            --name, --http and --wire). One leads by a lease in the database; the others follow:
            they redirect REST requests to the leader (orchctl follows) and send workers to it.
            Workers take every manager's address: --manager A,B,C. The CA, the join token and the
            API tokens are shared through the database; `orchctl managers` lists who leads.

            Examples:
              orchctl manager          (REST on 127.0.0.1:5555, workers on 127.0.0.1:5556)
              orchctl manager --data /var/lib/orch --scheduler spread
              orchctl manager --store postgres://orch@127.0.0.1:5432/orch
              orchctl manager --store postgres://orch@db/orch --name m2 \\
                --data ~/.orch/m2 --http 127.0.0.1:5565 --wire 127.0.0.1:5566
              orchctl manager --http 127.0.0.1:0 --wire 127.0.0.1:0 --heartbeat-grace 3s
              orchctl manager --http 0.0.0.0:5555 --wire 0.0.0.0:5556 \\
                --http-name manager.example.org
            """.reflowed)

    @Option(help: ArgumentHelp("Where the REST API listens (port 0: any free port).", valueName: "host:port"))
    var http: String = "127.0.0.1:5555"

    @Option(help: ArgumentHelp("Where workers connect (the cluster protocol).", valueName: "host:port"))
    var wire: String = "127.0.0.1:5556"

    @Option(help: ArgumentHelp("Where DNS for NAME.service.orch is answered over UDP (port 0: any free port; off: not at all).", valueName: "host:port"))
    var dns: String = "127.0.0.1:8600"

    @Option(help: ArgumentHelp("The state directory (default: ~/.orch/manager): the cluster's CA, the join token, the admin token, and the SQLite store unless --store.", valueName: "dir"))
    var data: String?

    @Option(help: ArgumentHelp("Where the state is kept: sqlite:PATH (default: DIR/manager.sqlite) or postgres://USER[:PASSWORD]@HOST:PORT/DATABASE, which several managers can share (env ORCH_STORE).", valueName: "store"))
    var store: String?

    @Option(help: "How tasks are placed: epvm, roundrobin, spread or binpack.")
    var scheduler: SchedulerKind = .epvm

    @Option(help: ArgumentHelp("How often workers heartbeat, e.g. 1s or 500ms.", valueName: "duration"))
    var heartbeatInterval: String = "1s"

    @Option(help: ArgumentHelp("A worker silent this long is down and its tasks move, e.g. 5s.", valueName: "duration"))
    var heartbeatGrace: String = "5s"

    @Option(help: ArgumentHelp("How long the tasks of a restarting worker are kept for it.", valueName: "duration"))
    var restartWindow: String = "30s"

    @Option(help: ArgumentHelp("How long an ended task is kept, with its history, before it is removed (not a service's).", valueName: "duration"))
    var retention: String = "24h"

    @Option(name: .customLong("retain-ended"), help: ArgumentHelp("At most this many ended tasks are kept; the oldest are removed first.", valueName: "count"))
    var retainEnded: Int = 100_000

    @Option(help: ArgumentHelp("The REST API's TLS certificate (PEM; with --http-key). Default off loopback: one from the cluster's CA.", valueName: "path"))
    var httpCert: String?

    @Option(help: ArgumentHelp("The private key of --http-cert (PEM).", valueName: "path"))
    var httpKey: String?

    @Option(name: .customLong("http-name"), help: ArgumentHelp("A DNS name or IP address clients reach the REST API by, for its certificate from the cluster's CA (repeatable).", valueName: "name"))
    var httpNames: [String] = []

    @Option(help: ArgumentHelp("This manager's name among several on one store (default: the host's name and a few random characters, kept in --data).", valueName: "name"))
    var name: String?

    @Option(name: .customLong("advertise-http"), help: ArgumentHelp("The URL clients reach this REST API by, as other managers redirect to it (default: from --http).", valueName: "url"))
    var advertiseHTTP: String?

    @Option(name: .customLong("advertise-wire"), help: ArgumentHelp("The address workers reach this cluster port by, as other managers name it (default: from --wire).", valueName: "host:port"))
    var advertiseWire: String?

    @Flag(help: "Make every write survive a power loss, not only a crash (slower).")
    var fsync = false

    @OptionGroup var logging: LogOptions

    func validate() throws {
        _ = try HostPort.parse(http, option: "--http")
        _ = try HostPort.parse(wire, option: "--wire")
        if dns != "off" { _ = try HostPort.parse(dns, option: "--dns") }
        for (option, text) in [("--heartbeat-interval", heartbeatInterval), ("--heartbeat-grace", heartbeatGrace), ("--restart-window", restartWindow), ("--retention", retention)] {
            guard let duration = DurationText.parse(text), duration > .zero else {
                throw ValidationError("\(option): \"\(text)\" is not a duration such as 500ms, 5s or 1m")
            }
        }
        guard retainEnded >= 0 else { throw ValidationError("--retain-ended must be 0 or more") }
        if let name, name.isEmpty || name.contains(where: \.isWhitespace) { throw ValidationError("--name: \"\(name)\" must be a word without spaces") }
        if let advertiseHTTP, !(advertiseHTTP.hasPrefix("http://") || advertiseHTTP.hasPrefix("https://")) {
            throw ValidationError("--advertise-http: \"\(advertiseHTTP)\" is not an http:// or https:// URL")
        }
        if let advertiseWire { _ = try HostPort.parse(advertiseWire, option: "--advertise-wire") }
        if let text = storeText {
            do { _ = try StoreLocation(text) } catch { throw ValidationError(error.description) }
            if fsync, case .postgres = try? StoreLocation(text) {
                throw ValidationError("--fsync is SQLite's: PostgreSQL's durability is its own settings (synchronous_commit)")
            }
        }
    }

    /// --store, else ORCH_STORE.
    var storeText: String? { store ?? ProcessInfo.processInfo.environment["ORCH_STORE"].flatMap { $0.isEmpty ? nil : $0 } }

    func run() async throws {
        let logger = logging.logger(label: "orch.manager")
        var configuration = ManagerConfiguration(dataDirectory: data)
        let httpAddress = try HostPort.parse(http, option: "--http")
        let wireAddress = try HostPort.parse(wire, option: "--wire")
        configuration.httpHost = httpAddress.host
        configuration.httpPort = httpAddress.port
        configuration.wireHost = wireAddress.host
        configuration.wirePort = wireAddress.port
        if dns != "off" {
            let dnsAddress = try HostPort.parse(dns, option: "--dns")
            configuration.dnsHost = dnsAddress.host
            configuration.dnsPort = dnsAddress.port
        }
        configuration.scheduler = scheduler
        configuration.heartbeatInterval = DurationText.parse(heartbeatInterval) ?? .seconds(1)
        configuration.heartbeatGrace = DurationText.parse(heartbeatGrace) ?? .seconds(5)
        configuration.restartWindow = DurationText.parse(restartWindow) ?? .seconds(30)
        configuration.retention = DurationText.parse(retention) ?? .seconds(24 * 3600)
        configuration.retainedEndedTasks = retainEnded
        configuration.fsync = fsync
        configuration.store = try storeText.map { text throws(StoreLocationError) in try StoreLocation(text) }
        configuration.httpCertificatePath = httpCert
        configuration.httpKeyPath = httpKey
        configuration.httpNames = httpNames
        configuration.name = name
        configuration.advertiseAPI = advertiseHTTP.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        configuration.advertiseWire = advertiseWire
        do {
            let manager = try await Manager(configuration: configuration, logger: logger)
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: manager)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
    }
}
