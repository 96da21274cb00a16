import ArgumentParser
import Foundation
import NIOSSL
import OrchCore
import OrchSecurity
import OrchTestSupport
import OrchWire

/// A process of simulated workers: each speaks the real protocol over its own TCP
/// connection and "runs" what it is assigned at once. Prints `ready N` once all are
/// welcomed, then runs until killed.
struct SimWorkersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim-workers",
        abstract: "Runs simulated workers against a manager (used by the other benchmarks).",
        discussion: """
            Examples:
              orch-bench sim-workers --manager 127.0.0.1:5556 --count 1000 --prefix a
            """)

    @Option(help: ArgumentHelp("The manager's cluster address.", valueName: "host:port"))
    var manager: String

    @Option(help: "How many workers.")
    var count: Int

    @Option(help: ArgumentHelp("The manager's join token file (its join.token).", valueName: "path"))
    var joinTokenFile: String

    @Option(help: "A prefix for their names and node ids (unique per process).")
    var prefix: String = "sim"

    @Option(help: "Millicores each offers.")
    var millicores: Int = 64_000

    @Option(help: "GiB of memory each offers.")
    var memoryGib: Int = 64

    func run() async throws {
        guard let colon = manager.lastIndex(of: ":"), let port = Int(manager[manager.index(after: colon)...]) else {
            throw ValidationError("--manager must be host:port")
        }
        let host = String(manager[..<colon])
        let token = try String(contentsOfFile: joinTokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let workers = (0..<count).map { index in
            SimulatedWorker(
                name: "\(prefix)-\(index)", managerPort: port, managerHost: host, node: NodeID(rawValue: "\(prefix)-\(index)"),
                joinToken: token, millicores: UInt32(millicores), memoryBytes: UInt64(memoryGib) << 30)
        }
        let runs = workers.map { $0.start() }
        // Connected: every worker has been welcomed.
        let deadline = ContinuousClock.now + .seconds(300)
        var connected = 0
        while ContinuousClock.now < deadline {
            connected = 0
            for worker in workers where await worker.client.isConnected { connected += 1 }
            if connected == count { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        print("ready \(connected)")
        fflush(nil)
        for run in runs { _ = await run.result }
    }
}

/// Starts `count` simulated workers in `processes` processes of their own; returns them
/// once every one is welcomed.
func startSimulatedWorkers(count: Int, processes: Int, wirePort: Int, joinTokenFile: String, prefix: String) async throws -> [LaunchedProcess] {
    let processes = max(1, min(processes, count))
    var launched: [LaunchedProcess] = []
    for index in 0..<processes {
        let share = count / processes + (index < count % processes ? 1 : 0)
        launched.append(try LaunchedProcess(executable: CommandLine.arguments[0], [
            "sim-workers", "--manager", "127.0.0.1:\(wirePort)", "--count", "\(share)", "--prefix", "\(prefix)\(index)",
            "--join-token-file", joinTokenFile,
        ]))
    }
    for process in launched { try await process.waitForOutput("ready", within: .seconds(300)) }
    return launched
}

/// A listener of the cluster protocol that only issues certificates, welcomes and reads: the
/// cost of the connections themselves (TLS, pipeline, buffers, the serving task), without
/// any node state.
/// The heartbeat benchmark subtracts it from the manager's memory per worker.
struct BareListenerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bare-listener",
        abstract: "A cluster-protocol listener that keeps no state (a baseline for the heartbeat benchmark).",
        discussion: """
            Examples:
              orch-bench bare-listener --port 5556
            """)

    @Option(help: "The port on 127.0.0.1.")
    var port: Int

    @Option(help: ArgumentHelp("Where to write the join token of its own CA.", valueName: "path"))
    var joinTokenFile: String

    func run() async throws {
        let ca = try ClusterCA.create()
        let token = JoinToken.make(caFingerprint: try ca.fingerprint)
        try LocalTokens.writePrivately(token.description + "\n", to: joinTokenFile)
        let context = try ClusterTLS.serverContext(ca: ca, hosts: ["127.0.0.1"])
        let listener = try await WireListener.bind(host: "127.0.0.1", port: port, tls: { NIOSSLServerHandler(context: context) })
        print("listening")
        fflush(nil)
        try await listener.run { connection in
            let sender = WireSender(connection)
            try? await connection.executeThenClose { inbound, _ in
                var messages = inbound.makeAsyncIterator()
                let first = try await messages.next()
                if case .joinRequest(let request)? = first, request.secret == token.secret {
                    let certificate = try ca.issueNodeCertificate(csr: request.csr, node: request.nodeID)
                    try await sender.write(.joinResult(JoinResult(
                        version: ProtocolVersion.newest, nodeID: request.nodeID, certificate: try derBytes(certificate),
                        caCertificate: try ca.certificateDER)))
                    return
                }
                guard case .hello? = first else { return }
                try await sender.write(.welcome(Welcome(version: ProtocolVersion.newest, heartbeatInterval: .seconds(1))))
                while try await messages.next() != nil {}
            }
        }
    }
}
