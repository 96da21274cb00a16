import Foundation
import OrchTestSupport
import Testing

/// The Docker engine SIGKILLed under a running worker and started again. Without live
/// restore the engine stops every container it ran when it comes back. The worker says the
/// engine is gone (its heartbeats, the node in GET /nodes, its own GET /stats), nothing is
/// placed on it meanwhile, and once the engine answers it reports every exit it missed:
/// each task ends as its policy says, and no task is reported running without a container.
@Suite("End to end: the Docker engine restarted under a worker (Docker)", .serialized, .timeLimit(.minutes(4)))
struct DockerRestartTests {
    static func sleeper(_ policy: String) -> String {
        #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "restartPolicy": {"mode": "\#(policy)"}, "stopGracePeriod": "1s"}"#
    }

    @Test func aRestartedEngineIsReportedAndEachTaskEndsAsItsPolicySays() async throws {
        try await ClusterProcesses.with(grace: "5s") { cluster in
            try await cluster.startWorker("engine-a")
            let always = try await cluster.submit(Self.sleeper("always"))
            let onFailure = try await cluster.submit(Self.sleeper("on-failure"))
            let never = try await cluster.submit(Self.sleeper("never"))
            try await cluster.waitForTasks("three running") { $0.count == 3 && $0.allSatisfy { $0.state == "running" } }
            let node = try cluster.nodeID(of: "engine-a")

            // Whatever happens below, the engine is running again for the tests after this one.
            do {
                try killDocker()
                let killed = ContinuousClock.now

                // The worker says so: on the node (through its heartbeats) and on its own API.
                let down = try await waitForNode(in: cluster, within: .seconds(20)) { $0["engineError"] != nil }
                let seenAfter = ContinuousClock.now - killed
                #expect(down["state"] as? String == "up", "the node itself stays up: \(down)")
                let address = try #require((down["addresses"] as? [String])?.first)
                let stats = try await http(.GET, "http://\(address)/stats")
                let statsBody = try #require(try JSONSerialization.jsonObject(with: Data(stats.body.utf8)) as? [String: Any])
                #expect(statsBody["engineError"] is String, "the worker's GET /stats says the engine is gone: \(stats.body)")
                let table = try await LaunchedProcess.run(orchctl: ["nodes", "--api", cluster.api])
                #expect(table.stdout.contains("up (engine down)") && table.stdout.contains("does not answer"), "orchctl nodes: \(table.stdout)")

                // Nothing is placed there meanwhile: a new task waits and says why.
                let waiting = try await cluster.submit(Self.sleeper("never"))
                let tasks = try await cluster.waitForTasks("the new task to say why it waits", within: .seconds(10)) { list in
                    (list.first { $0["id"] as? String == waiting }?["error"] as? String)?.contains("container engine") == true
                }
                let pending = try #require(tasks.first { $0["id"] as? String == waiting })
                #expect(pending.state == "pending", "placed while the engine was down: \(pending)")
                // The tasks are not declared over while the engine is merely silent.
                #expect(try await cluster.tasks().filter { [always, onFailure, never].contains($0["id"] as? String ?? "") }
                    .allSatisfy { $0.state == "running" })

                try await startDocker()
                let restarted = ContinuousClock.now

                // Back: every task as its policy says, and what is reported running is what
                // Docker runs, one to one.
                var mismatch = "not checked yet"
                let deadline = ContinuousClock.now + .seconds(60)
                var final: [[String: Any]] = []
                while ContinuousClock.now < deadline {
                    final = try await cluster.tasks()
                    let byID = Dictionary(final.map { ($0["id"] as? String ?? "", $0) }, uniquingKeysWith: { a, _ in a })
                    let engineBack = try await cluster.nodes().first?["engineError"] == nil
                    let reported = Set(final.filter { $0.state == "running" }.compactMap { $0["container"] as? String })
                    let running = Set(try dockerPS(label: "orch.node=\(node)", runningOnly: true, fullIDs: true))
                    let restartedAsAsked = [always, onFailure].allSatisfy { byID[$0]?.state == "running" && (byID[$0]?.attempt ?? 0) >= 2 }
                    if engineBack, restartedAsAsked, byID[never]?.state == "failed", byID[waiting]?.state == "running",
                       reported == running, reported.count == 3 {
                        mismatch = ""
                        break
                    }
                    mismatch = "engine back \(engineBack); "
                        + final.map { "\($0["id"] as? String ?? "?"): \($0.state) #\($0.attempt)" }.joined(separator: ", ")
                        + "; reported but not running \(reported.subtracting(running).count), running but not reported \(running.subtracting(reported).count)"
                    try await Task.sleep(for: .milliseconds(250))
                }
                #expect(mismatch.isEmpty, "a minute after the engine came back: \(mismatch)")
                let ended = try #require(final.first { $0["id"] as? String == never })
                #expect((ended["error"] as? String)?.contains("engine") == true, "the failed task says what happened: \(ended)")
                print("fault: Docker SIGKILLed under a worker: engine loss on the node \(seenAfter) after the kill; "
                      + "tasks as their policies say and Docker agreeing \(ContinuousClock.now - restarted) after the engine answered")
            } catch {
                try? await startDocker()
                throw error
            }
        }
    }

    func waitForNode(
        in cluster: ClusterProcesses, within timeout: Duration, _ condition: ([String: Any]) -> Bool
    ) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        var last: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            if let node = try? await cluster.nodes().first {
                last = node
                if condition(node) { return node }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestTimeout(what: "the node to say its engine is gone; last seen: \(last)")
    }

    /// SIGKILLs dockerd (and so the containerd it started) and waits until it no longer answers.
    func killDocker() throws {
        let pkill = Process()
        pkill.executableURL = URL(fileURLWithPath: "/usr/bin/pkill")
        pkill.arguments = ["-KILL", "-x", "dockerd"]
        try pkill.run()
        pkill.waitUntilExit()
        try #require(pkill.terminationStatus == 0, "a dockerd to kill")
    }

    /// Starts the engine again the way the test script does (tools/setup.sh), with no signal
    /// blocked (its containers must take their SIGTERMs), and waits for it to answer.
    func startDocker() async throws {
        let setup = try LaunchedProcess.withSignalsUnblocked("/bin/bash", [repositoryRoot.appendingPathComponent("tools/setup.sh").path])
        let status = try await setup.waitForExit(within: .seconds(90))
        try #require(status == 0, "tools/setup.sh started Docker again: \(setup.output)")
    }
}
