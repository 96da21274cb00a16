import Foundation
import OrchTestSupport
import Testing

/// A worker that goes away while its task runs and comes back after the container exited:
/// the exit it could not report is reported when it returns, with the real exit code.
@Suite("End to end: exits while a worker is away (Docker)", .serialized, .timeLimit(.minutes(3)))
struct WorkerRestartTests {
    static func oneShot(sleep: Int, exit code: Int) -> String {
        #"{"image": "orch-busybox:latest", "command": ["sh", "-c", "sleep \#(sleep); exit \#(code)"], "restartPolicy": "never", "stopGracePeriod": "2s"}"#
    }

    @Test func anExitDuringARestartAfterSIGTERMEndsCompletedWithItsExitCode() async throws {
        try await ClusterProcesses.with(grace: "5s", restartWindow: "60s") { cluster in
            try await cluster.startWorker("t-a")
            let id = try await cluster.submit(Self.oneShot(sleep: 5, exit: 0))
            try await cluster.waitForTasks("running") { $0.first?.state == "running" }
            // SIGTERM: the worker says goodbye "restarting" and leaves its container running.
            try await cluster.killWorker("t-a", signal: SIGTERM)
            try await cluster.waitForContainersExited(of: "t-a")
            #expect(try await cluster.tasks().first?.state == "running", "nobody could have told the manager yet")
            try await cluster.startWorker("t-a")
            let done = try await cluster.waitForTasks("completed", within: .seconds(20)) { $0.first?.state == "completed" }
            #expect(done.first?["id"] as? String == id)
            #expect(done.first?["exitCode"] as? Int == 0)
            #expect(done.first?.attempt == 1)
        }
    }

    @Test func anExitDuringARestartAfterSIGKILLEndsWithTheRealExitCodeNotNodeLost() async throws {
        try await ClusterProcesses.with(grace: "30s") { cluster in
            try await cluster.startWorker("k-a")
            _ = try await cluster.submit(Self.oneShot(sleep: 4, exit: 3))
            try await cluster.waitForTasks("running") { $0.first?.state == "running" }
            try await cluster.killWorker("k-a")
            try await cluster.waitForContainersExited(of: "k-a")
            try await cluster.startWorker("k-a")
            let done = try await cluster.waitForTasks("failed", within: .seconds(20)) { $0.first?.state == "failed" }
            #expect(done.first?["exitCode"] as? Int == 3, "the real exit code: \(done)")
            #expect((done.first?["error"] as? String)?.contains("lost") != true, "not \"node was lost\": \(done)")
        }
    }
}
