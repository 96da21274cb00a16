import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import OrchCore
import OrchSecurity
import OrchTestSupport
import OrchWire
import Testing

/// The cluster port of a real `orchctl manager`: mutual TLS, always. A worker joins with
/// the join token and from then on is its certificate; nobody else gets anything but a
/// closed connection.
@Suite("Joining the cluster: mutual TLS on the cluster port (processes, Docker)", .serialized, .timeLimit(.minutes(4)))
struct ClusterJoinTests {
    @Test func aWorkerJoinsWithTheTokenRunsATaskAndComesBackWithItsCertificateAlone() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("joiner")
            let state = try #require(cluster.workerStateDirs["joiner"])
            let node = try cluster.nodeID(of: "joiner")
            for file in ["node.key", "node.crt", "ca.crt"] {
                let mode = try FileManager.default.attributesOfItem(atPath: "\(state)/\(file)")[.posixPermissions] as? Int
                #expect(mode == 0o600, "\(file) is the owner's only")
            }
            let credentials = try NodeCredentials.loadOrCreate(in: state)
            let certificate = try #require(credentials.certificate)
            #expect(certificate.commonName == node, "the certificate names the worker's node id")
            #expect(credentials.ca == (try ClusterCA.loadOrCreate(in: cluster.data).certificate), "it trusts the manager's CA")

            let id = try await cluster.submit(sleeperTask)
            try await cluster.waitForTasks("the task running on the joined worker") { tasks in
                tasks.contains { $0["id"] as? String == id && $0["state"] as? String == "running" && $0["node"] as? String == node }
            }

            // A new join secret: the old token joins nobody any more, and the node that joined
            // with it keeps working. Restarted without any token, its certificate is enough.
            let oldToken = try String(contentsOfFile: cluster.data + "/join.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let rotated = try await LaunchedProcess.run(orchctl: ["token", "rotate-join", "--api", cluster.api])
            #expect(rotated.status == 0, "\(rotated.stderr)")
            try await cluster.startWorker("late", options: ["--join-token", oldToken], joining: false, until: nil)
            let late = try #require(cluster.workers["late"])
            #expect(try await late.waitForExit(within: .seconds(30)) == 3, "the old token is refused: \(late.output)")
            try await cluster.killWorker("joiner", signal: SIGTERM)
            try await cluster.startWorker("joiner", joining: false)
            let again = try #require(cluster.workers["joiner"])
            #expect(!again.output.contains("joining the cluster"), "no second join: \(again.output)")
            #expect(try NodeCredentials.loadOrCreate(in: state).certificate == certificate, "the same certificate")
            try await cluster.waitForTasks("the task still running, the same attempt") { tasks in
                tasks.contains { $0["id"] as? String == id && $0["state"] as? String == "running" && $0["attempt"] as? Int == 1 }
            }
            let issued = cluster.manager.output.components(separatedBy: "issued a certificate to node \(node) joining").count - 1
            #expect(issued == 1, "one certificate issued: \(cluster.manager.output)")
        }
    }

    @Test func aWrongJoinTokenIsRefusedTheWorkerExits3AndTheManagerLogsIt() async throws {
        try await ClusterProcesses.with { cluster in
            let right = try JoinToken(parsing: try String(contentsOfFile: cluster.data + "/join.token", encoding: .utf8))
            // The right CA, a wrong secret: refused by the manager, for good.
            let wrongSecret = JoinToken(caFingerprint: right.caFingerprint, secret: String(right.secret.reversed()))
            try await cluster.startWorker("wrong", options: ["--join-token", wrongSecret.description], joining: false, until: nil)
            let wrong = try #require(cluster.workers["wrong"])
            #expect(try await wrong.waitForExit(within: .seconds(30)) == 3, "output: \(wrong.output)")
            #expect(wrong.output.contains("the join token is not this cluster's current one"), "output: \(wrong.output)")
            try await cluster.manager.waitForOutput("refused node \(try cluster.nodeID(of: "wrong")) from 127.0.0.1 a certificate")
            #expect(!FileManager.default.fileExists(atPath: try #require(cluster.workerStateDirs["wrong"]) + "/node.crt"))

            // A token that pins another CA: the worker refuses the manager before sending anything.
            let otherCA = JoinToken(caFingerprint: try ClusterCA.create().fingerprint, secret: right.secret)
            try await cluster.startWorker("pinned", options: ["--join-token", otherCA.description], joining: false, until: nil)
            let pinned = try #require(cluster.workers["pinned"])
            #expect(try await pinned.waitForExit(within: .seconds(30)) == 3, "output: \(pinned.output)")
            #expect(pinned.output.contains("not from the CA the join token names"), "output: \(pinned.output)")
            #expect(!cluster.manager.output.contains("issued a certificate"), "nothing issued")

            // Without any token and without a certificate: told what to give it.
            try await cluster.startWorker("tokenless", joining: false, until: nil)
            let tokenless = try #require(cluster.workers["tokenless"])
            #expect(try await tokenless.waitForExit(within: .seconds(30)) == 3, "output: \(tokenless.output)")
            #expect(tokenless.output.contains("--join-token"), "output: \(tokenless.output)")
            #expect(try await cluster.nodes().isEmpty, "no node joined")
        }
    }

    @Test func noCertificateAnotherCAsOrPlaintextGetNothingButAClosedConnection() async throws {
        try await ClusterProcesses.with { cluster in
            let token = try JoinToken(parsing: try String(contentsOfFile: cluster.data + "/join.token", encoding: .utf8))
            let realCA = try ClusterCA.loadOrCreate(in: cluster.data).certificate
            let hello = WireMessage.hello(Hello(
                nodeID: NodeID(rawValue: "intruder"), name: "intruder", addresses: [],
                capacity: Capacity(millicores: 64000, memoryBytes: 64 << 30, diskBytes: 0)))

            // TLS without a certificate (it trusts the manager): a hello gets no frame back.
            let joining = try ClusterTLS.joiningContext()
            let anonymous = try await Self.answers(to: hello, port: cluster.wirePort) {
                try ClusterTLS.joiningHandler(context: joining, fingerprint: token.caFingerprint)
            }
            #expect(anonymous == [], "no frame to a client without a certificate: \(anonymous)")

            // A certificate of another CA for the same node id: the handshake fails.
            let other = try ClusterCA.create()
            var forged = NodeCredentials.ephemeral()
            forged.certificate = try other.issueNodeCertificate(csr: try forged.signingRequest(for: NodeID(rawValue: "intruder")), node: NodeID(rawValue: "intruder"))
            forged.ca = realCA
            let forgedContext = try ClusterTLS.memberContext(credentials: forged)
            let foreign = try await Self.answers(to: hello, port: cluster.wirePort) { try NIOSSLClientHandler(context: forgedContext, serverHostname: nil) }
            #expect(foreign == [], "no frame to another CA's certificate: \(foreign)")

            // Plaintext: a frame where a TLS handshake should be; nothing in the protocol answers.
            let bytes = try await Self.plaintextAnswer(to: hello, port: cluster.wirePort)
            #expect(bytes.first != 0x00, "not a frame (a frame's length starts with 0): \(bytes.prefix(16))")
            #expect(bytes.isEmpty || bytes.first == 0x15, "at most a TLS alert: \(bytes.prefix(16))")

            #expect(try await cluster.nodes().isEmpty, "nobody joined")
            #expect(!cluster.manager.output.contains("intruder) joined"), "output: \(cluster.manager.output)")
        }
    }

    @Test func aRemovedNodesCertificateIsRefusedAndTheWorkerExits3() async throws {
        try await ClusterProcesses.with(grace: "1s") { cluster in
            try await cluster.startWorker("removed")
            let node = try cluster.nodeID(of: "removed")
            try await cluster.killWorker("removed")
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline,
                  try await cluster.nodes().first(where: { $0["id"] as? String == node })?["state"] as? String != "down" {
                try await Task.sleep(for: .milliseconds(100))
            }
            let removal = try await http(.DELETE, "\(cluster.api)/nodes/\(node)")
            #expect(removal.status == 204, "\(removal.body)")

            try await cluster.startWorker("removed", joining: false, until: nil)
            let worker = try #require(cluster.workers["removed"])
            #expect(try await worker.waitForExit(within: .seconds(30)) == 3, "output: \(worker.output)")
            #expect(worker.output.contains("was removed from the cluster"), "output: \(worker.output)")
            // Restarted too, the manager still refuses it.
            try await cluster.restartManager()
            try await cluster.startWorker("removed", joining: false, until: nil)
            let afterRestart = try #require(cluster.workers["removed"])
            #expect(try await afterRestart.waitForExit(within: .seconds(30)) == 3, "output: \(afterRestart.output)")
            #expect(try await cluster.nodes().isEmpty)
        }
    }

    // MARK: - Clients that are not workers

    /// The frames answered to `message` on a TLS connection made with `tls`, until it closes
    /// (a failed handshake is a connection closed with nothing).
    static func answers(to message: WireMessage, port: Int, tls: @escaping WireListener.TLSHandlerMaker) async throws -> [WireMessage.Kind] {
        let result = await withDeadline(ContinuousClock.now + .seconds(15)) { () -> [WireMessage.Kind] in
            do {
                let channel = try await WireDialer.connect(host: "127.0.0.1", port: port, connectTimeout: .seconds(2), tls: tls)
                return try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(message)
                    var kinds: [WireMessage.Kind] = []
                    do {
                        for try await answer in inbound { kinds.append(answer.kind) }
                    } catch {}
                    return kinds
                }
            } catch {
                return []
            }
        }
        return try #require(result, "the manager neither answered nor closed within 15 s")
    }

    /// The bytes a plaintext client gets for a frame, until the manager closes.
    static func plaintextAnswer(to message: WireMessage, port: Int) async throws -> [UInt8] {
        let result = await withDeadline(ContinuousClock.now + .seconds(15)) { () -> [UInt8]? in
            try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                }
                .executeThenClose { inbound, outbound in
                    try await outbound.write(Frame.encode(message))
                    var bytes: [UInt8] = []
                    do {
                        for try await chunk in inbound { bytes += chunk.readableBytesView }
                    } catch {}
                    return bytes
                }
        }
        return try #require(result ?? nil, "the manager did not close a plaintext connection within 15 s")
    }
}
