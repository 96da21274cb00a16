import Foundation
import OrchTestSupport
import Testing

/// The manager's DNS for service.orch, asked by clients that are not ours: Debian's dig and
/// dnspython, against a manager and two workers running a service on Docker.
@Suite("End to end: DNS for services (Docker)", .serialized, .timeLimit(.minutes(4)))
struct DNSProcessTests {
    /// Runs `executable` with `arguments`, killed after 10 s; its standard output.
    static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let killer = DispatchWorkItem { process.terminate() }
        DispatchQueue.global().asyncAfter(deadline: .now() + 10, execute: killer)
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        killer.cancel()
        return String(decoding: data, as: UTF8.self)
    }

    static func dig(_ cluster: ClusterProcesses, _ name: String, _ type: String, short: Bool = true) throws -> [String] {
        let dig = try #require(["/usr/bin/dig", "/bin/dig"].first { FileManager.default.isExecutableFile(atPath: $0) },
                               "tools/setup.sh installs dnsutils (dig)")
        let output = try run(dig, ["@127.0.0.1", "-p", String(cluster.dnsPort), name, type, "+tries=1", "+time=2"] + (short ? ["+short"] : []))
        return output.split(separator: "\n").map(String.init).sorted()
    }

    /// dnspython's answer: the rcode's name, then one line per record of the answer section.
    static func dnspython(_ cluster: ClusterProcesses, _ name: String, _ type: String) throws -> [String] {
        let script = """
            import dns.message, dns.query, dns.rcode, sys
            q = dns.message.make_query(sys.argv[1], sys.argv[2])
            r = dns.query.udp(q, "127.0.0.1", port=int(sys.argv[3]), timeout=3)
            print(dns.rcode.to_text(r.rcode()))
            for rrset in r.answer:
                for item in rrset:
                    print(rrset.ttl, item.to_text())
            """
        return try run(try python(), ["-c", script, name, type, String(cluster.dnsPort)]).split(separator: "\n").map(String.init)
    }

    /// The ready endpoints as `address port`, from the catalog.
    static func ready(_ cluster: ClusterProcesses) async throws -> [String] {
        try await ServiceProcessTests.endpoints(cluster).endpoints.filter { $0["ready"] as? Bool == true }.compactMap { endpoint in
            guard let address = endpoint["address"] as? String,
                  let port = (endpoint["ports"] as? [[String: Any]])?.first?["hostPort"] as? Int else { return nil }
            return "\(address) \(port)"
        }.sorted()
    }

    @Test func digAndDnspythonGetExactlyTheReadyEndpointsAndAKilledReplicaGoesWithinTwoSeconds() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("dns-a")
            try await cluster.startWorker("dns-b")
            let created = try await LaunchedProcess.run(
                orchctl: ["deploy", "-f", try ServiceProcessTests.serviceFile()], environment: ["ORCH_API": cluster.api], within: .seconds(90))
            #expect(created.status == 0, "\(created.stderr)")
            let ready = try await Self.ready(cluster)
            #expect(ready.count == 3)

            // A: the ready endpoints' addresses, once each; SRV: each one's port.
            #expect(try Self.dig(cluster, "web.service.orch", "A") == Array(Set(ready.map { String($0.split(separator: " ")[0]) })).sorted())
            let srv = try Self.dig(cluster, "web.service.orch", "SRV")
            #expect(srv.map { $0.split(separator: " ")[2] }.sorted() == ready.map { $0.split(separator: " ")[1] }.sorted(), "\(srv)")
            #expect(srv.allSatisfy { $0.hasSuffix(".addr.service.orch.") }, "\(srv)")
            let target = try #require(srv.first?.split(separator: " ").last.map(String.init))
            #expect(try Self.dig(cluster, target, "A") == ["127.0.0.1"], "an SRV target resolves")
            let python = try Self.dnspython(cluster, "web.service.orch", "SRV")
            #expect(python.first == "NOERROR" && python.count == 4, "\(python)")
            #expect(python.dropFirst().allSatisfy { $0.hasPrefix("0 ") }, "TTL 0: \(python)")
            #expect(Set(python.dropFirst().map { String($0.split(separator: " ")[3]) }) == Set(ready.map { String($0.split(separator: " ")[1]) }))

            // NXDOMAIN for an unknown service, REFUSED outside the zone (full answers).
            #expect(try Self.dnspython(cluster, "nope.service.orch", "A") == ["NXDOMAIN"])
            #expect(try Self.dnspython(cluster, "example.com", "A") == ["REFUSED"])
            #expect(try Self.dig(cluster, "nope.service.orch", "A", short: false).contains { $0.contains("status: NXDOMAIN") })

            // A replica's container killed: gone from the SRV answers within 2 s.
            let victim = try #require(try await ServiceProcessTests.endpoints(cluster).endpoints.first?["task"] as? String)
            let victimPort = try #require(try await ServiceProcessTests.endpoints(cluster).endpoints.first.flatMap {
                ($0["ports"] as? [[String: Any]])?.first?["hostPort"] as? Int })
            let clock = ContinuousClock()
            _ = try runDocker(["kill", try #require(try dockerPS(label: "orch.task=\(victim)", runningOnly: true).first)])
            let killedAt = clock.now
            try await waitUntil("the killed replica to leave the SRV answers", within: .seconds(2)) {
                !(try Self.dig(cluster, "web.service.orch", "SRV")).contains { $0.split(separator: " ")[2] == String(victimPort) }
            }
            print("dns: a killed replica left the SRV answers \(clock.now - killedAt) after the kill")
        }
    }
}
