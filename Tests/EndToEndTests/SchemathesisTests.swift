import Foundation
import NIOHTTP1
import OrchTestSupport
import Testing

/// The REST API fuzzed by schemathesis (tools/schemathesis.sh) against Protocol/openapi.yaml:
/// a manager with a worker and tasks in every kind of state, so that generated requests
/// reach real tasks, logs and nodes, not only 404s. Any 5xx or any response the spec does
/// not describe fails the run.
@Suite("REST API fuzzed by schemathesis against Protocol/openapi.yaml (Docker)", .serialized, .timeLimit(.minutes(8)))
struct SchemathesisTests {
    /// The Python that tools/test.sh prepared, with schemathesis; missing means the run was
    /// not set up: fail, never skip.
    /// The statuses tools/schemathesis.sh counted for `operation` (`GET /tasks/{taskID}`).
    func statuses(of operation: String, in output: String) -> Set<Int> {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("  \(operation): ") }) else { return [] }
        return Set(line.dropFirst(operation.count + 4).split(separator: ",").compactMap { Int($0.split(separator: " ").first ?? "") })
    }

    @Test func generatedRequestsGetNoServerErrorAndMatchTheSpec() async throws {
        let interpreter = try python()
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("fuzz")
            let task = #"{"image": "orch-busybox:latest", "resources": {"cpus": 0.1, "memory": "16MiB"}, "stopGracePeriod": "1s""#
            _ = try await cluster.submit(task + #", "id": "fuzz-oneshot", "command": ["sh", "-c", "echo fuzzed output; exit 0"]}"#)
            _ = try await cluster.submit(task + #", "id": "fuzz-failed", "command": ["sh", "-c", "echo failing; exit 3"]}"#)
            _ = try await cluster.submit(task + #", "id": "fuzz-running", "command": ["sleep", "600"]}"#)
            _ = try await cluster.submit(task + #", "id": "fuzz-pending", "constraints": {"node": "nowhere"}}"#)
            let expected = ["fuzz-oneshot": "completed", "fuzz-failed": "failed", "fuzz-running": "running", "fuzz-pending": "pending"]
            try await cluster.waitForTasks("the tasks to be completed, failed, running and pending", within: .seconds(60)) { list in
                expected.allSatisfy { id, state in list.contains { $0["id"] as? String == id && $0.state == state } }
            }

            let started = ContinuousClock.now
            let run = try LaunchedProcess(
                executable: "/bin/bash", ["tools/schemathesis.sh", cluster.api],
                environment: ["ORCH_PYTHON": interpreter, "ORCH_SCHEMATHESIS_SECONDS": "240", "ORCH_SCHEMATHESIS_EXAMPLES": "150"])
            // The script stops schemathesis after 240 s itself; this deadline is for the script.
            let status = try await run.waitForExit(within: .seconds(300))
            let output = run.output
            #expect(status == 0, "schemathesis found problems (or did not run):\n\(output)")
            #expect(output.contains("statuses per operation"), "the run's statuses were counted:\n\(output)")
            print("schemathesis ran for \(ContinuousClock.now - started):\n\(output.split(separator: "\n").suffix(40).joined(separator: "\n"))")

            // Real ids were reached, not only 404s: the dictionaries of listed ids work.
            let reached: [(String, Int)] = [
                ("GET /tasks/{taskID}", 200), ("DELETE /tasks/{taskID}", 202), ("GET /tasks/{taskID}/logs", 200),
                ("GET /tasks/{taskID}/logs", 409), ("DELETE /nodes/{nodeID}", 409), ("POST /tasks", 201), ("POST /tasks", 400),
            ]
            for (operation, code) in reached {
                #expect(statuses(of: operation, in: output).contains(code), "\(operation) never answered \(code):\n\(output)")
            }
            for operation in ["GET /healthz", "GET /metrics", "GET /tasks", "GET /nodes"] {
                #expect(statuses(of: operation, in: output).contains(200), "\(operation) was exercised")
            }
            #expect(try await http(.GET, "\(cluster.api)/healthz").status == 200, "the manager is still up")
        }
    }
}
