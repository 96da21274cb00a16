import Foundation
import OrchTestSupport
import Synchronization
import Testing

/// The manager SIGKILLed while eight clients submit: what it answered 2xx survives, the
/// workers come back by themselves, and what it reports running is what Docker runs.
@Suite("End to end: the manager killed under submissions (Docker)", .serialized, .timeLimit(.minutes(5)))
struct ManagerCrashTests {
    /// Small enough that every submission fits on two workers of one CPU each.
    static let smallTask = #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.02, "memory": "8MiB"}, "restartPolicy": {"mode": "on-failure"}, "stopGracePeriod": "1s"}"#

    @Test(arguments: [false, true])
    func everySubmissionAnswered2xxSurvivesAKilledManager(fsync: Bool) async throws {
        try await ClusterProcesses.with(grace: "5s", managerOptions: fsync ? ["--fsync"] : []) { cluster in
            try await cluster.startWorker(fsync ? "f-a" : "c-a")
            try await cluster.startWorker(fsync ? "f-b" : "c-b")

            // Eight clients submit one task after another until the manager dies under them.
            let acknowledged = Acknowledged()
            let killAt = 24
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        for _ in 0..<20 {
                            guard let answer = try? await http(.POST, "\(cluster.api)/tasks", body: Self.smallTask) else { return }
                            guard (200..<300).contains(answer.status) else { return }
                            let object = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
                            let id = try #require(object?["id"] as? String)
                            acknowledged.ids.withLock { $0.append(id) }
                        }
                    }
                }
                group.addTask {
                    let deadline = ContinuousClock.now + .seconds(60)
                    while acknowledged.ids.withLock({ $0.count }) < killAt, ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(5))
                    }
                    try await cluster.killManager()
                }
                try await group.waitForAll()
            }
            let answered = Set(acknowledged.ids.withLock { $0 })
            #expect(answered.count >= killAt, "the clients got answers before the kill")

            try await cluster.startManagerAgain(grace: "5s")
            let recoveryStarted = ContinuousClock.now
            let listed = Set(try await cluster.tasks().compactMap { $0["id"] as? String })
            #expect(answered.isSubset(of: listed), "lost after the restart: \(answered.subtracting(listed).sorted())")

            // The workers reconnect by themselves, and within a minute the tasks reported
            // running and the containers Docker runs agree one to one.
            let nodes = [try cluster.nodeID(of: fsync ? "f-a" : "c-a"), try cluster.nodeID(of: fsync ? "f-b" : "c-b")]
            var mismatch = "not checked yet"
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                let tasks = try await cluster.tasks()
                let up = try await cluster.nodes().filter { $0["state"] as? String == "up" }.count
                let reported = Set(tasks.filter { $0.state == "running" }.compactMap { $0["container"] as? String })
                let running = Set(try nodes.flatMap { try dockerPS(label: "orch.node=\($0)", runningOnly: true, fullIDs: true) })
                let allRunning = tasks.allSatisfy { $0.state == "running" }
                if up == 2, allRunning, reported == running, reported.count == tasks.count {
                    mismatch = ""
                    break
                }
                mismatch = "nodes up \(up); tasks \(tasks.count), running \(tasks.filter { $0.state == "running" }.count); "
                    + "reported but not running \(reported.subtracting(running).count), running but not reported \(running.subtracting(reported).count)"
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(mismatch.isEmpty, "after a minute: \(mismatch)")
            print("fault: manager SIGKILLed (fsync \(fsync)): \(answered.count) answered 2xx, \(answered.subtracting(listed).count) lost, "
                  + "\(listed.count) listed after the restart; running and Docker agreed \(ContinuousClock.now - recoveryStarted) after it")
        }
    }
}

/// The ids the clients were answered 2xx for, shared by the clients.
final class Acknowledged: Sendable {
    let ids = Mutex<[String]>([])
}
