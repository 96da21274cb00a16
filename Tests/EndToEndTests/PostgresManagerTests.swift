import Foundation
import OrchTestSupport
import Testing

/// A manager whose state is in PostgreSQL (`--store postgres://...`), as real processes on a
/// server of the test's own: what it accepts is in the database, not in a file of its data
/// directory; killed and started again, it resumes every task from the database and the
/// worker's container goes on; a store it cannot open is one clear line and exit 1.
@Suite("A manager on PostgreSQL (processes, Docker)", .serialized, .timeLimit(.minutes(3)))
struct PostgresManagerTests {
    @Test func aManagerKeepsItsStateInPostgresAndResumesFromIt() async throws {
        try await PostgresServer.with { server in
            try await ClusterProcesses.with(managerOptions: ["--store", server.url()]) { cluster in
                try await cluster.startWorker("pg")
                let id = try await cluster.submit(#"{"name": "kept", "image": "orch-busybox:latest", "command": ["sleep", "300"]}"#)
                try await cluster.waitForTasks("kept running") { $0.contains { $0["id"] as? String == id && $0.state == "running" } }
                let container = try #require(try await cluster.tasks().first { $0["id"] as? String == id }?["container"] as? String)
                #expect(!FileManager.default.fileExists(atPath: cluster.data + "/manager.sqlite"), "no SQLite file: the state is in PostgreSQL")

                try await cluster.restartManager()
                try await cluster.waitForTasks("kept running after the restart") { tasks in
                    tasks.contains { $0["id"] as? String == id && $0.state == "running" && $0["container"] as? String == container }
                }
                let events = try await http(.GET, "\(cluster.api)/tasks/\(id)")
                #expect(events.body.contains("accepted") && events.body.contains("started as"), "its history is in the database: \(events.body)")
                #expect(try dockerPS(label: "orch.task=\(id)", runningOnly: true).count == 1, "the same container, not restarted")
            }
        }
    }

    /// The database goes away under a running manager: writes are refused with 503
    /// `store_unavailable`, then everything with 503 `no_leader` once it has not renewed
    /// its lease for 4 s; once the database is back it takes its lease again and writes
    /// again by itself; nothing answered 2xx is lost (a refused write may still be made: the
    /// manager retries the batch that held it, as it does on SQLite).
    @Test func aDatabaseThatGoesAwayIsRefusedWritesAndComesBackByItself() async throws {
        // Durable as PostgreSQL is by default: the test stops it as a crash would.
        try await PostgresServer.with(durable: true) { server in
            try await ClusterProcesses.with(managerOptions: ["--store", server.url()]) { cluster in
                let before = try await http(.POST, "\(cluster.api)/tasks", body: #"{"name": "before", "image": "orch-busybox:latest", "command": ["sleep", "300"]}"#)
                #expect(before.status == 201, "\(before.body)")
                try server.pause()
                var refused: (status: Int, body: String) = (0, "")
                let deadline = ContinuousClock.now + .seconds(20)
                while ContinuousClock.now < deadline {
                    let answer = try await http(.POST, "\(cluster.api)/tasks", body: #"{"name": "during", "image": "orch-busybox:latest", "command": ["sleep", "300"]}"#)
                    refused = (answer.status, answer.body)
                    if answer.status == 503 { break }
                    try await Task.sleep(for: .milliseconds(200))
                }
                #expect(refused.status == 503 && refused.body.contains("store_unavailable"), "\(refused)")
                // A manager on PostgreSQL leads by a lease in it: one that cannot renew it for
                // 4 s stops acting, and answers 503 no_leader until it holds it again.
                let stepDown = ContinuousClock.now + .seconds(10)
                var read = (status: 0, body: "")
                while ContinuousClock.now < stepDown {
                    read = try await http(.GET, "\(cluster.api)/tasks")
                    if read.status == 503 { break }
                    try await Task.sleep(for: .milliseconds(200))
                }
                #expect(read.status == 503 && read.body.contains("no_leader"), "it stopped leading without its database: \(read)")
                #expect(cluster.manager.output.contains("stopped leading: no renewal of the lease"), "\(cluster.manager.output.suffix(2000))")

                try server.startAgain()
                var accepted = 0
                while ContinuousClock.now < deadline + .seconds(30) {
                    accepted = try await http(.POST, "\(cluster.api)/tasks", body: #"{"name": "after", "image": "orch-busybox:latest", "command": ["sleep", "300"]}"#).status
                    if accepted == 201 || accepted == 200 { break }
                    try await Task.sleep(for: .milliseconds(300))
                }
                #expect(accepted == 201 || accepted == 200, "accepted again once the database is back: \(accepted)")
                print("fault: the database stopped under a manager: 503 while away, accepting again after it came back")

                try await cluster.restartManager()
                let names = try await cluster.tasks().compactMap { $0["name"] as? String }
                #expect(names.contains("before") && names.contains("after"), "what was answered 2xx is in the database: \(names)")
            }
        }
    }

    @Test func aStoreThatCannotBeOpenedIsOneClearLine() async throws {
        let port = try freePort()
        let data = temporaryDirectory("pg-refused")
        let started = ContinuousClock.now
        let refused = try await LaunchedProcess.run(orchctl: [
            "manager", "--http", "127.0.0.1:0", "--wire", "127.0.0.1:0", "--dns", "off", "--data", data,
            "--store", "postgres://orch@127.0.0.1:\(port)/orch",
        ], within: .seconds(30))
        #expect(refused.status == 1, "\(refused.stderr)")
        #expect(refused.stderr.contains("cannot open the store at postgres://orch@127.0.0.1:\(port)/orch: connection refused"), "\(refused.stderr)")
        #expect(ContinuousClock.now - started < .seconds(15))
        let wrong = try await LaunchedProcess.run(orchctl: ["manager", "--data", data, "--store", "mysql://orch@127.0.0.1/orch"], within: .seconds(30))
        #expect(wrong.status == 64 && wrong.stderr.contains("a store is sqlite:PATH or postgres://"), "\(wrong.stderr)")
        let both = try await LaunchedProcess.run(orchctl: ["manager", "--data", data, "--fsync", "--store", "postgres://orch@127.0.0.1/orch"], within: .seconds(30))
        #expect(both.status == 64 && both.stderr.contains("--fsync is SQLite's"), "\(both.stderr)")
    }
}
