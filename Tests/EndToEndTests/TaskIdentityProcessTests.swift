import Foundation
import OrchTestSupport
import Testing

/// A task's name and id from the command line, against a real manager: the same file again
/// is the same task, another spec under a live name is refused with the way out, names and
/// short ids work wherever an id does, ids are escaped and an empty one is refused, and
/// `orchctl rm` removes an ended task and refuses a live one.
@Suite("orchctl: names, ids and removal against a real manager", .serialized, .timeLimit(.minutes(3)))
struct TaskIdentityProcessTests {
    static func file(_ body: [String: Any]) throws -> String {
        let path = temporaryDirectory("identity") + "/task.json"
        try JSONSerialization.data(withJSONObject: body).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func namesAreIdentitiesAndEndedTasksAreRemoved() async throws {
        try await ClusterProcesses.with { cluster in
            let env = ["ORCH_API": cluster.api]
            func orchctl(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
                try await LaunchedProcess.run(orchctl: arguments, environment: env, within: .seconds(30))
            }
            // No worker: the task waits, pending, for a node.
            let web = try Self.file(["name": "web", "image": "orch-busybox:latest", "command": ["sleep", "300"]])
            let first = try await orchctl(["run", "-f", web])
            #expect(first.status == 0, "\(first.stderr)")
            let id = first.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let again = try await orchctl(["run", "-f", web])
            #expect(again.status == 0 && again.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == id, "the same file again is the same task: \(again)")
            #expect(try await cluster.tasks().filter { $0["name"] as? String == "web" }.count == 1)

            let other = try Self.file(["name": "web", "image": "orch-busybox:latest", "command": ["sleep", "301"]])
            let refused = try await orchctl(["run", "-f", other])
            #expect(refused.status != 0 && refused.stderr.contains("orchctl stop web") && refused.stderr.contains("service"), "\(refused.stderr)")
            let rest = try await http(.POST, "\(cluster.api)/tasks", body: try String(contentsOfFile: other, encoding: .utf8))
            #expect(rest.status == 409 && rest.body.contains("name_taken"), "\(rest)")
            #expect(try await cluster.tasks().count == 1, "nothing was added")

            // The name, the short id of the table, and a prefix all name it.
            let table = try await orchctl(["status"])
            let short = String(id.filter { $0 != "-" }.prefix(12))
            #expect(table.stdout.split(separator: "\n").contains { $0.hasPrefix(short + " ") && $0.contains("web") }, "\(table.stdout)")
            for reference in ["web", short, String(id.prefix(8))] {
                let one = try await orchctl(["status", reference])
                #expect(one.status == 0 && one.stdout.contains("id         \(id)"), "status \(reference): \(one)")
            }

            // Escaped on the way, refused when empty: one clear line, no route errors.
            let slash = try await orchctl(["status", "a/b"])
            #expect(slash.status != 0 && slash.stderr.contains("task id") && !slash.stderr.contains("no route"), "\(slash.stderr)")
            for command in [["status", ""], ["logs", ""], ["stop", ""], ["rm", ""]] {
                let empty = try await orchctl(command)
                #expect(empty.status != 0 && empty.stderr.contains("must not be empty") && !empty.stderr.contains("DecodingError"), "\(command): \(empty.stderr)")
            }

            // rm: refused while it lives, then it is gone with its history.
            let live = try await orchctl(["rm", "web"])
            #expect(live.status != 0 && live.stderr.contains("stop it first"), "\(live.stderr)")
            let badFlag = try await http(.DELETE, "\(cluster.api)/tasks/\(id)?purge=maybe")
            #expect(badFlag.status == 400 && badFlag.body.contains("invalid_query"))
            let stop = try await orchctl(["stop", "web"])
            #expect(stop.status == 0, "\(stop.stderr)")
            let removed = try await orchctl(["rm", "web"])
            #expect(removed.status == 0 && removed.stdout.contains("removed web"), "\(removed)")
            #expect(try await http(.GET, "\(cluster.api)/tasks/\(id)").status == 404)
            #expect(try await cluster.tasks().isEmpty)
            // And the name is free again.
            let next = try await orchctl(["run", "-f", other])
            #expect(next.status == 0 && next.stdout.trimmingCharacters(in: .whitespacesAndNewlines) != id, "\(next)")
        }
    }

    @Test func endedTasksBeyondTheRetentionAreRemovedByTheManager() async throws {
        try await ClusterProcesses.with(managerOptions: ["--retention", "1s"]) { cluster in
            let env = ["ORCH_API": cluster.api]
            let file = try Self.file(["name": "once", "image": "orch-busybox:latest", "command": ["true"]])
            let run = try await LaunchedProcess.run(orchctl: ["run", "-f", file], environment: env)
            #expect(run.status == 0, "\(run.stderr)")
            let stop = try await LaunchedProcess.run(orchctl: ["stop", "once"], environment: env)
            #expect(stop.status == 0, "\(stop.stderr)")
            // Looked at every second with a retention of 1 s.
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline, try await !cluster.tasks().isEmpty {
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(try await cluster.tasks().isEmpty, "the ended task was collected")
        }
    }

    /// More than a page of tasks: the table follows `Link` to the last one, filters keep
    /// what they name, and a line under it counts the tasks by state.
    @Test func theTableShowsEveryPageFiltersAndCountsByState() async throws {
        try await ClusterProcesses.with { cluster in
            let env = ["ORCH_API": cluster.api]
            // No worker: they wait, pending; one is stopped, and ends completed at once.
            for index in 0..<1005 {
                _ = try await cluster.submit(#"{"name": "t\#(index)", "image": "orch-busybox:latest", "command": ["sleep", "1"]}"#)
            }
            let stop = try await LaunchedProcess.run(orchctl: ["stop", "t7"], environment: env)
            #expect(stop.status == 0, "\(stop.stderr)")

            let table = try await LaunchedProcess.run(orchctl: ["status"], environment: env, within: .seconds(60))
            #expect(table.status == 0, "\(table.stderr)")
            let lines = table.stdout.split(separator: "\n")
            #expect(lines.count == 1 + 1005 + 1, "a header, every task of the three pages, the summary")
            #expect(lines.last == "1005 tasks: 1004 pending, 1 completed", "\(lines.last ?? "")")
            #expect(lines.contains { $0.contains(" t1004 ") }, "the last page is there")
            #expect(lines.contains { $0.contains(" t0 ") && $0.contains("waiting for a node") }, "the reason a pending task waits")

            let completed = try await LaunchedProcess.run(orchctl: ["status", "--state", "completed"], environment: env)
            let kept = completed.stdout.split(separator: "\n")
            #expect(kept.count == 3 && kept[1].contains(" t7 ") && kept.last == "1 task: 1 completed", "\(completed.stdout)")
            let named = try await LaunchedProcess.run(orchctl: ["status", "--name", "t42", "--json"], environment: env)
            let objects = try #require(try JSONSerialization.jsonObject(with: Data(named.stdout.utf8)) as? [[String: Any]])
            #expect(objects.count == 1 && objects[0]["name"] as? String == "t42")
            let bad = try await LaunchedProcess.run(orchctl: ["status", "--state", "sleeping"], environment: env)
            #expect(bad.status != 0 && bad.stderr.contains("pending"), "\(bad.stderr)")
        }
    }
}
