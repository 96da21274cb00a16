import Foundation
import OrchTestSupport
import Testing

/// Every route and error code of the REST gateway against a running manager process, each
/// response validated against Protocol/openapi.yaml by tools/check_openapi.py (openapi-core).
@Suite("REST API against Protocol/openapi.yaml (Docker)", .serialized, .timeLimit(.minutes(5)))
struct RESTContractTests {
    /// The Python that tools/test.sh prepared; missing means the run was not set up: fail.
    func check(_ api: String, extra: [String] = []) async throws -> LaunchedProcess {
        let checker = try LaunchedProcess(
            executable: try python(), ["tools/check_openapi.py", "--api", api, "--spec", "Protocol/openapi.yaml"] + extra)
        _ = try await checker.waitForExit(within: .seconds(240))
        return checker
    }

    @Test func everyRouteMatchesTheSpecWithoutWorkers() async throws {
        try await ClusterProcesses.with { cluster in
            let checker = try await check(cluster.api)
            #expect(checker.process.terminationStatus == 0, "\(checker.output)")
            #expect(checker.stdout.contains("ok "), "the checker printed its checks")
            #expect(!checker.stdout.contains("FAIL"))
        }
    }

    @Test func everyRouteMatchesTheSpecWithAWorkerRunningTasks() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("rest")
            let checker = try await check(cluster.api)
            #expect(checker.process.terminationStatus == 0, "\(checker.output)")
            #expect(checker.stdout.contains("node_is_up"), "an up node was there to refuse its removal")
            #expect(!checker.stdout.contains("FAIL"))
        }
    }

    @Test func theCheckerFailsWhenTheAPIDoesNotAnswer() async throws {
        let checker = try await check("http://127.0.0.1:\(try freePort())")
        #expect(checker.process.terminationStatus == 1, "no answer is a failure, never a skip: \(checker.output)")
    }
}
