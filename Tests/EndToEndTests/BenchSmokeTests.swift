import Foundation
import OrchTestSupport
import Testing

/// The orch-bench built for the tests, beside orchctl.
let benchPath = URL(fileURLWithPath: orchctlPath).deletingLastPathComponent().appendingPathComponent("orch-bench").path

/// Each benchmark at tiny sizes: it runs and prints its table of numbers.
@Suite("Benchmarks, smoke runs (Docker)", .serialized, .timeLimit(.minutes(5)))
struct BenchSmokeTests {
    func smoke(_ name: String, header: String, extra: [String] = []) async throws -> String {
        let bench = try LaunchedProcess(executable: benchPath, [name, "--smoke"] + extra)
        let status = try await bench.waitForExit(within: .seconds(240))
        #expect(status == 0, "orch-bench \(name) --smoke: \(bench.output.suffix(2000))")
        let lines = bench.stdout.split(separator: "\n")
        let headerIndex = try #require(lines.firstIndex { $0.hasPrefix(header) }, "the table's header: \(bench.stdout)")
        let row = lines.dropFirst(headerIndex + 2).first ?? ""
        #expect(row.split(separator: " ").contains { Double($0.trimmingCharacters(in: CharacterSet(charactersIn: "%"))) != nil },
                "a row of numbers under the header: \(bench.stdout)")
        return bench.stdout
    }

    @Test func docker() async throws {
        let out = try await smoke("docker", header: "N ")
        #expect(out.contains("b/a"))
    }

    @Test func scheduling() async throws { _ = try await smoke("scheduling", header: "workers") }

    @Test func heartbeats() async throws {
        let out = try await smoke("heartbeats", header: "workers")
        #expect(out.contains("µs") || out.contains("ms"), "the apply latency is measured: \(out)")
    }

    @Test func failover() async throws { _ = try await smoke("failover", header: "death") }

    @Test func rest() async throws { _ = try await smoke("rest", header: "tasks") }

    @Test func recovery() async throws { _ = try await smoke("recovery", header: "tasks") }

    @Test func store() async throws {
        let out = try await smoke("store", header: "batch")
        #expect(out.contains("PostgreSQL") && out.contains("SQLite (FULL, --fsync)") && out.contains("x NORMAL"), "\(out)")
    }

    @Test func leader() async throws {
        let out = try await smoke("leader", header: "leader stopped by")
        #expect(out.contains("SIGKILL") && out.contains("SIGTERM") && out.contains("none restarted"), "\(out)")
    }

    @Test func rolling() async throws {
        let out = try await smoke("rolling", header: "replicas")
        #expect(out.contains("ours/Swarm"))
    }

    @Test func mesh() async throws {
        let out = try await smoke("mesh", header: "target")
        #expect(out.contains("mesh, http mode") && out.contains("every load balancer"), "both tables: \(out)")
    }
}
