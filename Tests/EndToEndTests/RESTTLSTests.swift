import Foundation
import NIOCore
import NIOPosix
import OrchCore
import OrchSecurity
import OrchTestSupport
import OrchWire
import Testing

/// A manager whose REST API and cluster port bind off loopback: the API serves TLS (from the
/// cluster's CA, or a certificate given), the cluster port stays mutual TLS, and orchctl
/// trusts the cluster's CA by itself on the manager's host.
@Suite("The REST API over TLS off loopback (processes)", .serialized, .timeLimit(.minutes(3)))
struct RESTTLSTests {
    static func manager(_ extra: [String], http: String) throws -> (LaunchedProcess, data: String, port: Int, wire: Int) {
        let port = try freePort(), wire = try freePort()
        let data = temporaryDirectory("tls-manager")
        let process = try LaunchedProcess(orchctl: [
            "manager", "--http", "\(http):\(port)", "--wire", "0.0.0.0:\(wire)", "--data", data, "--dns", "off",
        ] + extra)
        return (process, data, port, wire)
    }

    @Test func offLoopbackTheAPIServesTLSFromTheClustersCAAndOrchctlTrustsIt() async throws {
        let (manager, data, port, wire) = try Self.manager([], http: "0.0.0.0")
        defer { manager.signal(SIGKILL) }
        try await manager.waitForOutput("listening on 0.0.0.0:\(port) (TLS")

        // On this host orchctl finds the token and the CA the manager left; nothing to give.
        let https = "https://127.0.0.1:\(port)"
        let nodes = try await LaunchedProcess.run(orchctl: ["nodes", "--api", https])
        #expect(nodes.status == 0, "\(nodes.stderr)")
        // The CA given explicitly, the host name checked: 127.0.0.1 is in the certificate.
        let checked = try await LaunchedProcess.run(orchctl: ["status", "--api", https, "--ca-file", data + "/ca.crt"])
        #expect(checked.status == 0, "\(checked.stderr)")

        // Plain HTTP gets nothing; another CA is not trusted.
        let plain = try await LaunchedProcess.run(orchctl: ["nodes", "--api", "http://127.0.0.1:\(port)"])
        #expect(plain.status != 0)
        #expect(plain.stderr.contains("https://"), "says what to use: \(plain.stderr)")
        let otherCA = temporaryDirectory("other-ca")
        _ = try ClusterCA.loadOrCreate(in: otherCA)
        let untrusted = try await LaunchedProcess.run(orchctl: ["nodes", "--api", https, "--ca-file", otherCA + "/ca.crt"])
        #expect(untrusted.status != 0)
        #expect(untrusted.stderr.contains("not trusted"), "\(untrusted.stderr)")

        // The cluster port on 0.0.0.0: mutual TLS still, a plaintext frame gets no frame back.
        let bytes = try await ClusterJoinTests.plaintextAnswer(
            to: .heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics())), port: wire)
        #expect(bytes.first != 0x00, "not a frame: \(bytes.prefix(16))")
    }

    @Test func aGivenCertificateAndKeyAreServedInstead() async throws {
        // A certificate of some other authority, for 127.0.0.1, as an operator would bring.
        let authority = try ClusterCA.create()
        let (certificate, key) = try authority.issueServerCertificate(hosts: ["127.0.0.1"])
        let folder = temporaryDirectory("given-cert")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try (try certificate.serializeAsPEM().pemString + "\n").write(toFile: folder + "/api.crt", atomically: true, encoding: .utf8)
        try (try key.serializeAsPEM().pemString + "\n").write(toFile: folder + "/api.key", atomically: true, encoding: .utf8)
        try (try authority.certificate.serializeAsPEM().pemString + "\n").write(toFile: folder + "/authority.crt", atomically: true, encoding: .utf8)

        let (manager, data, port, _) = try Self.manager(
            ["--http-cert", folder + "/api.crt", "--http-key", folder + "/api.key"], http: "127.0.0.1")
        defer { manager.signal(SIGKILL) }
        try await manager.waitForOutput("listening on 127.0.0.1:\(port) (TLS")
        let https = "https://127.0.0.1:\(port)"
        let trusted = try await LaunchedProcess.run(orchctl: ["nodes", "--api", https, "--ca-file", folder + "/authority.crt"])
        #expect(trusted.status == 0, "\(trusted.stderr)")
        // The cluster's CA did not sign it: trusting that one fails.
        let cluster = try await LaunchedProcess.run(orchctl: ["nodes", "--api", https, "--ca-file", data + "/ca.crt"])
        #expect(cluster.status != 0, "\(cluster.stdout)")
    }
}
