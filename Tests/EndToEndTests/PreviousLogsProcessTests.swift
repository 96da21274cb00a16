import Foundation
import OrchTestSupport
import Testing

/// Reading what a crashed or stopped task printed, against a real manager and worker on
/// Docker: `orchctl logs --previous` shows a crash-looping task's last ended attempt after
/// its container is gone (the worker kept a copy), `--tail` cuts it, plain `logs` in the
/// backoff says where to look, a stopped task's output stays readable, and what cannot be
/// served says why (exit 1) and a bad `previous` is a 400.
@Suite("orchctl logs --previous against a real manager and worker (Docker)", .serialized, .timeLimit(.minutes(3)))
struct PreviousLogsProcessTests {
    @Test func aCrashedAttemptsOutputIsReadAfterItsContainerIsGone() async throws {
        try await ClusterProcesses.with { cluster in
            let env = ["ORCH_API": cluster.api]
            try await cluster.startWorker("w1")
            try await cluster.waitForNodes("w1 up") { $0.contains { $0["state"] as? String == "up" } }
            let id = try await cluster.submit(
                #"{"name": "crashy", "image": "orch-busybox:latest", "command": ["sh", "-c", "echo to-stderr >&2; sleep 0.3; echo one; echo two; exit 3"], "restartPolicy": "always"}"#)

            // Attempt 1 ended and attempt 2 replaced it on the same worker: the first
            // container is removed, and its output read from the copy.
            try await cluster.waitForTasks("attempt 2 of crashy", within: .seconds(30)) { tasks in
                tasks.contains { $0["id"] as? String == id && $0.attempt >= 2 }
            }
            let deadline = ContinuousClock.now + .seconds(30)
            func firstContainer() -> [String] {
                (try? runDocker(["ps", "-aq", "--filter", "label=orch.task=\(id)", "--filter", "label=orch.attempt=1"]))?
                    .split(separator: "\n").map(String.init) ?? []
            }
            while !firstContainer().isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
            #expect(firstContainer().isEmpty, "attempt 1's container is removed")
            var previous = try await LaunchedProcess.run(orchctl: ["logs", "crashy", "--previous"], environment: env, within: .seconds(20))
            while !previous.stdout.contains("two"), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                previous = try await LaunchedProcess.run(orchctl: ["logs", "crashy", "--previous"], environment: env, within: .seconds(20))
            }
            #expect(previous.status == 0, "\(previous.stderr)")
            #expect(previous.stdout.contains("to-stderr\n") && previous.stdout.contains("one\ntwo\n"), "both streams: \(previous.stdout)")
            let tail = try await LaunchedProcess.run(orchctl: ["logs", "crashy", "--previous", "--tail", "1"], environment: env, within: .seconds(20))
            #expect(tail.status == 0 && tail.stdout == "two\n", "\(tail.stdout)\(tail.stderr)")

            // In its backoff it has no current output: plain logs says where the output is.
            var waiting: (status: Int32, stdout: String, stderr: String) = (0, "", "")
            while ContinuousClock.now < deadline {
                waiting = try await LaunchedProcess.run(orchctl: ["logs", "crashy"], environment: env, within: .seconds(20))
                if waiting.status != 0 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(waiting.status == 1 && waiting.stderr.contains("--previous shows the output of the last one that ended"), "\(waiting)")

            let bad = try await http(.GET, "\(cluster.api)/tasks/\(id)/logs?previous=maybe")
            #expect(bad.status == 400 && bad.body.contains("invalid_query") && bad.body.contains("previous must be true or false"), "\(bad.body)")
            let both = try await LaunchedProcess.run(orchctl: ["logs", "crashy", "--previous", "--follow"], environment: env, within: .seconds(20))
            #expect(both.status == 64, "a usage error: \(both.stderr)")
        }
    }

    @Test func aStoppedTasksOutputStaysReadableAndANeverEndedOneSaysSo() async throws {
        try await ClusterProcesses.with { cluster in
            let env = ["ORCH_API": cluster.api]
            try await cluster.startWorker("w1")
            try await cluster.waitForNodes("w1 up") { $0.contains { $0["state"] as? String == "up" } }
            let id = try await cluster.submit(
                #"{"name": "talker", "image": "orch-busybox:latest", "command": ["sh", "-c", "echo said-before-the-stop; exec sleep 300"], "stopGracePeriod": "1s"}"#)
            try await cluster.waitForTasks("talker running") { tasks in tasks.contains { $0["id"] as? String == id && $0.state == "running" } }

            let never = try await LaunchedProcess.run(orchctl: ["logs", "talker", "--previous"], environment: env, within: .seconds(20))
            #expect(never.status == 1 && never.stderr.contains("has no attempt that ended yet"), "\(never)")

            let stop = try await LaunchedProcess.run(orchctl: ["stop", "talker"], environment: env, within: .seconds(30))
            #expect(stop.status == 0, "\(stop.stderr)")
            try await cluster.waitForTasks("talker completed") { tasks in tasks.contains { $0["id"] as? String == id && $0.state == "completed" } }
            let deadline = ContinuousClock.now + .seconds(15)
            while !(try dockerPS(label: "orch.task=\(id)").isEmpty), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
            #expect(try dockerPS(label: "orch.task=\(id)").isEmpty, "the stopped task's container is removed")
            var logs = try await LaunchedProcess.run(orchctl: ["logs", "talker"], environment: env, within: .seconds(20))
            while !logs.stdout.contains("said-before-the-stop"), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                logs = try await LaunchedProcess.run(orchctl: ["logs", "talker"], environment: env, within: .seconds(20))
            }
            #expect(logs.status == 0 && logs.stdout == "said-before-the-stop\n", "\(logs)")
            let previous = try await LaunchedProcess.run(orchctl: ["logs", "talker", "--previous"], environment: env, within: .seconds(20))
            #expect(previous.status == 0 && previous.stdout == "said-before-the-stop\n", "the ended attempt is the last one that ended: \(previous)")
        }
    }
}
