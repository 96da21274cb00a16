import AsyncHTTPClient
import Foundation
import NIOCore
import OrchCore
import OrchTestSupport
import Testing

/// Watching the cluster from the command line, against a real manager and worker on Docker:
/// `orchctl events --follow` prints each change as it happens (the node joining, the task
/// accepted, placed on the node by name, started, exited, requeued), `status --watch` shows
/// the table again at each change, a crash-looping task shows its backoff in the table and
/// its view, and the stream resumes after `Last-Event-ID` without a loss or a repeat.
@Suite("orchctl events and status --watch against a real manager and worker (Docker)", .serialized, .timeLimit(.minutes(3)))
struct EventsProcessTests {
    @Test func changesAreFollowedWatchedAndACrashLoopShowsItsBackoff() async throws {
        try await ClusterProcesses.with { cluster in
            let env = ["ORCH_API": cluster.api]
            // From the first event: none is missed while it connects.
            let follower = try LaunchedProcess(orchctl: ["events", "--follow", "--since", "0"], environment: env)
            let watcher = try LaunchedProcess(orchctl: ["status", "--watch"], environment: env)
            try await watcher.waitForOutput("0 tasks", within: .seconds(10))

            try await cluster.startWorker("w1")
            try await follower.waitForOutput("node w1  up  joined from", within: .seconds(20))

            let path = temporaryDirectory("events") + "/crashy.json"
            try Data(#"{"name": "crashy", "image": "orch-busybox:latest", "command": ["sh", "-c", "echo boom; exit 3"], "restartPolicy": "on-failure"}"#.utf8)
                .write(to: URL(fileURLWithPath: path))
            let run = try await LaunchedProcess.run(orchctl: ["run", "-f", path], environment: env, within: .seconds(30))
            #expect(run.status == 0, "\(run.stderr)")
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let short = String(id.filter { $0 != "-" }.prefix(12))

            for line in ["task crashy \(short)  pending  accepted", "task crashy \(short)  scheduled  placed on w1 (",
                         "running  started as", "failed  exited with code 3", "pending  requeued: restarting after"] {
                try await follower.waitForOutput(line, within: .seconds(30))
            }
            // The watched table came again with the change that caused it.
            try await watcher.waitForOutput("-- ", within: .seconds(10))
            try await watcher.waitForOutput("crashy", within: .seconds(10))
            #expect(watcher.process.isRunning, "the watch goes on: \(watcher.output)")

            // In its backoff, the table and the task's view say so, with the exit that caused it.
            let deadline = ContinuousClock.now + .seconds(40)
            var table = ""
            while ContinuousClock.now < deadline {
                table = try await LaunchedProcess.run(orchctl: ["status"], environment: env).stdout
                if table.contains("backoff, next try in") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(table.contains("backoff, next try in") && table.contains("(exited with code 3)"), "\(table)")
            var view = ""
            while ContinuousClock.now < deadline {
                view = try await LaunchedProcess.run(orchctl: ["status", "crashy"], environment: env).stdout
                if view.contains("crash-looping") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(view.contains("backoff    crash-looping: placed again at") && view.contains("restart"), "\(view)")

            // The page, and the stream resumed after an id: the events after it, in order, once each.
            let page = try JSONSerialization.jsonObject(with: Data(try await http(.GET, "\(cluster.api)/events?task=crashy&since=0").body.utf8)) as? [String: Any]
            let events = try #require(page?["events"] as? [[String: Any]])
            #expect(events.count >= 5 && events.allSatisfy { $0["task"] as? String == id }, "\(events)")
            let ids = events.compactMap { ($0["id"] as? NSNumber)?.uint64Value }
            let resumeAfter = ids[1]
            let streamed = try await Self.stream("\(cluster.api)/events?follow=true&task=crashy", lastEventID: resumeAfter, count: 3)
            #expect(streamed.map(\.id) == ids[2..<5].map { String($0) }, "resumed after \(resumeAfter): \(streamed.map(\.id)) of \(ids)")
            #expect(streamed.allSatisfy { $0.event == "task" })

            // Bad input changes nothing and says what is wrong.
            let bad = try await http(.GET, "\(cluster.api)/events?since=soon")
            #expect(bad.status == 400 && bad.body.contains("invalid_query"), "\(bad)")
            let unknown = try await LaunchedProcess.run(orchctl: ["events", "nosuch"], environment: env)
            #expect(unknown.status != 0 && unknown.stderr.contains("nosuch"), "\(unknown)")
            #expect(follower.process.isRunning && !follower.stderr.contains("orchctl:"), "\(follower.stderr)")
        }
    }

    /// A failing health check says what failed (the HTTP status the worker got), in the
    /// task's events, its history and its reason.
    @Test func aHealthCheckFailureSaysWhatFailed() async throws {
        try await ClusterProcesses.with { cluster in
            let env = ["ORCH_API": cluster.api]
            try await cluster.startWorker("w1")
            let path = temporaryDirectory("events") + "/sick.json"
            try Data(#"""
                {"name": "sick", "image": "orch-busybox:latest", "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                 "ports": [{"containerPort": 8080}], "restartPolicy": "never",
                 "healthCheck": {"path": "/nope", "port": 8080, "interval": "500ms", "timeout": "500ms", "failureThreshold": 2}}
                """#.utf8).write(to: URL(fileURLWithPath: path))
            // --wait waits for the verdict: a check that fails is exit 1 with the reason.
            let run = try await LaunchedProcess.run(orchctl: ["run", "-f", path, "--wait", "--timeout", "40s"], environment: env, within: .seconds(60))
            let expected = "health check failed: GET /nope answered 404 Not Found (2 times in a row)"
            #expect(run.status == 1 && run.stderr.contains("health check"), "\(run.stderr)")
            #expect(run.stderr.contains("running on w1, starting"), "the wait showed it running, its check not passed yet: \(run.stderr)")
            let follower = try LaunchedProcess(orchctl: ["events", "sick", "--follow", "--since", "0"], environment: env)
            try await follower.waitForOutput(expected, within: .seconds(40))
            let view = try await LaunchedProcess.run(orchctl: ["status", "sick"], environment: env)
            #expect(view.stdout.contains("reason     \(expected)"), "\(view.stdout)")

            // A check that passes: --wait returns once it is healthy (and stays so), not before.
            let healthy = try await LaunchedProcess.run(orchctl: ["run", "-f", "data/task1.json", "--wait", "--settle", "1s"], environment: env, within: .seconds(60))
            #expect(healthy.status == 0, "\(healthy.stderr)")
            let lines = healthy.stderr.split(separator: "\n").map(String.init)
            #expect(lines.dropLast().last?.hasSuffix("running on w1, healthy") == true && lines.last?.hasPrefix("running as") == true, "\(healthy.stderr)")
        }
    }

    /// The first `count` server-sent events of `url`, sent with `Last-Event-ID`, within 20 s.
    static func stream(_ url: String, lastEventID: UInt64, count: Int) async throws -> [ServerSentEventReader.Event] {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Last-Event-ID", value: String(lastEventID))
        if let authorization = TestToken.local.authorization(for: url) { request.headers.add(name: "Authorization", value: authorization) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(20))
        #expect(response.status == .ok && response.headers.first(name: "Content-Type") == "text/event-stream")
        let events = try await withThrowingTaskGroup(of: [ServerSentEventReader.Event].self) { group in
            group.addTask {
                try await Task.sleep(for: .seconds(20))
                throw TestTimeout(what: "\(count) events from \(url)")
            }
            group.addTask {
                var reader = ServerSentEventReader()
                var events: [ServerSentEventReader.Event] = []
                for try await chunk in response.body {
                    events += reader.feed(chunk.readableBytesView).filter { $0.event != "message" }
                    if events.count >= count { break }
                }
                return events
            }
            defer { group.cancelAll() }
            return try await group.next() ?? []
        }
        return Array(events.prefix(count))
    }
}
