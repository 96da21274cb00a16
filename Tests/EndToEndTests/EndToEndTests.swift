import Foundation
import OrchTestSupport
import Testing

/// A long-running task that restarts on failure (node loss counts as one).
let sleeperTask = #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "restartPolicy": {"mode": "on-failure"}, "stopGracePeriod": "2s"}"#

@Suite("End to end: manager and workers as processes (Docker)", .serialized, .timeLimit(.minutes(5)))
struct EndToEndTests {
    @Test func tenTasksRunAcrossTwoWorkersAndStopOnDelete() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("e2e-a")
            try await cluster.startWorker("e2e-b")
            var ids: [String] = []
            for _ in 0..<10 { ids.append(try await cluster.submit(sleeperTask)) }
            let running = try await cluster.waitForTasks("ten tasks running") { $0.count == 10 && $0.allSatisfy { $0.state == "running" } }
            let perNode = Dictionary(grouping: running, by: \.node).mapValues(\.count)
            #expect(perNode.count == 2, "placed across both workers: \(perNode)")
            let a = try cluster.nodeID(of: "e2e-a"), b = try cluster.nodeID(of: "e2e-b")
            #expect(try dockerPS(label: "orch.node=\(a)", runningOnly: true).count + dockerPS(label: "orch.node=\(b)", runningOnly: true).count == 10)
            let nodes = try await cluster.nodes()
            #expect(nodes.count == 2 && nodes.allSatisfy { $0["state"] as? String == "up" })

            for id in ids {
                let answer = try await http(.DELETE, "\(cluster.api)/tasks/\(id)")
                #expect(answer.status == 202)
            }
            try await cluster.waitForTasks("all completed") { $0.allSatisfy { $0.state == "completed" } }
            try await Task.sleep(for: .seconds(2))
            let after = try await cluster.tasks()
            #expect(after.allSatisfy { $0.state == "completed" && $0.attempt == 1 }, "stopped tasks are not restarted")
            #expect(try dockerPS(label: "orch.node=\(a)").count + dockerPS(label: "orch.node=\(b)").count == 0, "their containers are removed")
        }
    }

    @Test func aKilledWorkersTasksRunOnTheOtherAndItsStaleContainersStopWhenItReturns() async throws {
        try await ClusterProcesses.with(grace: "2s") { cluster in
            try await cluster.startWorker("k-a")
            let a = try cluster.nodeID(of: "k-a")
            var ids: [String] = []
            for _ in 0..<3 { ids.append(try await cluster.submit(sleeperTask)) }
            try await cluster.waitForTasks("three running on a") { $0.count == 3 && $0.allSatisfy { $0.state == "running" && $0.node == a } }
            try await cluster.startWorker("k-b")
            let b = try cluster.nodeID(of: "k-b")

            try await cluster.killWorker("k-a")
            let killed = ContinuousClock.now
            var downAfter: Duration?
            while downAfter == nil, ContinuousClock.now - killed < .seconds(20) {
                if try await cluster.nodes().contains(where: { $0["name"] as? String == "k-a" && $0["state"] as? String == "down" }) { downAfter = .now - killed }
                try await Task.sleep(for: .milliseconds(50))
            }
            let down = try #require(downAfter, "the killed worker's node is marked down")
            #expect(down < .seconds(3), "down within the grace period (2 s) and a poll: \(down)")
            let moved = try await cluster.waitForTasks("running on b", within: .seconds(60)) {
                $0.count == 3 && $0.allSatisfy { $0.state == "running" && $0.node == b }
            }
            #expect(moved.allSatisfy { $0.attempt == 2 })
            // Nothing is reported running that is not: the containers named are the ones Docker runs.
            let reported = Set(moved.compactMap { $0["container"] as? String })
            #expect(reported == Set(try dockerPS(label: "orch.node=\(b)", runningOnly: true, fullIDs: true)))
            #expect(try dockerPS(label: "orch.node=\(a)", runningOnly: true).count == 3, "a's containers outlived it")

            // a comes back: its attempts are stale, and are stopped and removed.
            try await cluster.startWorker("k-a")
            let deadline = ContinuousClock.now + .seconds(30)
            while try !dockerPS(label: "orch.node=\(a)").isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(200)) }
            #expect(try dockerPS(label: "orch.node=\(a)").isEmpty, "no task has two current attempts")
            let still = try await cluster.tasks()
            #expect(still.allSatisfy { $0.state == "running" && $0.node == b && $0.attempt == 2 })
        }
    }

    @Test func aKilledManagerRestartedListsEveryTaskAndNodeAndReconciles() async throws {
        try await ClusterProcesses.with(grace: "5s") { cluster in
            try await cluster.startWorker("m-a")
            try await cluster.startWorker("m-b")
            var ids: [String] = []
            for _ in 0..<4 { ids.append(try await cluster.submit(sleeperTask)) }
            let before = try await cluster.waitForTasks("four running") { $0.count == 4 && $0.allSatisfy { $0.state == "running" } }
            let placement = Dictionary(uniqueKeysWithValues: before.map { ($0["id"] as! String, $0.node) })

            try await cluster.restartManager(grace: "5s")
            let listed = try await cluster.tasks()
            #expect(Set(listed.compactMap { $0["id"] as? String }) == Set(ids), "every task is listed again")
            let nodes = try await cluster.nodes()
            #expect(Set(nodes.compactMap { $0["name"] as? String }) == ["m-a", "m-b"], "and every node")

            // The workers reconnect by themselves; nothing is placed twice.
            let deadline = ContinuousClock.now + .seconds(30)
            var upNodes = 0
            while upNodes < 2, ContinuousClock.now < deadline {
                upNodes = (try? await cluster.nodes().filter { $0["state"] as? String == "up" }.count) ?? 0
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(upNodes == 2, "both workers reconnected")
            try await Task.sleep(for: .seconds(6))   // past the grace period: nothing was lost meanwhile
            let after = try await cluster.tasks()
            for task in after {
                let id = task["id"] as! String
                #expect(task.state == "running" && task.attempt == 1 && task.node == placement[id], "\(id) reconciled in place")
            }
            let a = try cluster.nodeID(of: "m-a"), b = try cluster.nodeID(of: "m-b")
            #expect(try dockerPS(label: "orch.node=\(a)", runningOnly: true).count + dockerPS(label: "orch.node=\(b)", runningOnly: true).count == 4)
        }
    }
}
