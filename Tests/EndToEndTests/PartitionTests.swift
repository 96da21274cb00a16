import Foundation
import OrchTestSupport
import Testing

/// A worker in a network namespace of the test's own, reaching the manager over a veth link;
/// the link is cut (silence: no FIN, no RST) and healed.
@Suite("End to end: a worker cut off and healed (Docker)", .serialized, .timeLimit(.minutes(4)))
struct PartitionTests {
    static let plain = #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.05, "memory": "8MiB"}, "restartPolicy": {"mode": "on-failure"}, "stopGracePeriod": "1s"}"#
    static let cautious = #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.05, "memory": "8MiB"}, "restartPolicy": {"mode": "on-failure"}, "stopGracePeriod": "1s", "disconnect": {"stopAfter": "3s"}}"#

    @Test func aCutWorkerIsReplacedItsStaleAttemptsStopOnTheHealAndAStopAfterTaskNeverRunsTwice() async throws {
        let namespace = try NetworkNamespace.create()
        defer { namespace.remove() }
        try await ClusterProcesses.with(grace: "3s", wireHost: namespace.hostAddress) { cluster in
            try await cluster.startWorker("cut-a", in: namespace)
            let plain = [try await cluster.submit(Self.plain), try await cluster.submit(Self.plain)]
            let cautious = try await cluster.submit(Self.cautious)
            let a = try cluster.nodeID(of: "cut-a")
            try await cluster.waitForTasks("three running on the cut-off worker") { $0.count == 3 && $0.allSatisfy { $0.state == "running" && $0.node == a } }
            try await cluster.startWorker("cut-b")
            let b = try cluster.nodeID(of: "cut-b")

            // Docker sampled every 200 ms from the cut to the end: never two running
            // containers of the task with a disconnect policy.
            let sampler = Task {
                var most = 0, samples = 0
                while !Task.isCancelled {
                    most = max(most, (try? dockerPS(label: "orch.task=\(cautious)", runningOnly: true).count) ?? 0)
                    samples += 1
                    try? await Task.sleep(for: .milliseconds(200))
                }
                return (most, samples)
            }

            namespace.cut()
            let cutAt = ContinuousClock.now
            let moved = try await cluster.waitForTasks("every task running on the other worker", within: .seconds(60)) {
                $0.count == 3 && $0.allSatisfy { $0.state == "running" && $0.node == b }
            }
            let replacedAfter = ContinuousClock.now - cutAt
            #expect(moved.allSatisfy { $0.attempt == 2 })
            let down = try await cluster.nodes().first { $0["name"] as? String == "cut-a" }
            #expect(down?["state"] as? String == "down", "the cut-off node is down: \(down ?? [:])")
            #expect(try plain.allSatisfy { id in try dockerPS(label: "orch.task=\(id)", runningOnly: true).count == 2 },
                    "without a disconnect policy the stale copies run on through the cut")

            // Heal: the worker reconnects, and its stale attempts are stopped within 2 s.
            namespace.heal()
            let reconnectDeadline = ContinuousClock.now + .seconds(30)
            var upAgain: ContinuousClock.Instant?
            var seen = ""
            var polls = 0
            while upAgain == nil, ContinuousClock.now < reconnectDeadline {
                let nodes = try await cluster.nodes()
                polls += 1
                let states = nodes.map { "\($0["name"] as? String ?? "?"): \($0["state"] as? String ?? "?")" }
                seen = states.joined(separator: ", ")
                if states.contains("cut-a: up") {
                    upAgain = ContinuousClock.now
                } else {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            let reconnected = try #require(upAgain, "the healed worker reconnects (\(polls) polls; nodes: \(seen))")
            var staleStoppedAfter: Duration?
            while staleStoppedAfter == nil, ContinuousClock.now - reconnected < .seconds(10) {
                if try dockerPS(label: "orch.node=\(a)", runningOnly: true).isEmpty { staleStoppedAfter = .now - reconnected }
                try await Task.sleep(for: .milliseconds(100))
            }
            let stopped = try #require(staleStoppedAfter, "the stale attempts on the healed worker stop")
            #expect(stopped < .seconds(2), "stopped \(stopped) after the reconnect")

            try await Task.sleep(for: .seconds(1))
            sampler.cancel()
            let (most, samples) = await sampler.value
            #expect(samples > 20)
            #expect(most == 1, "at most one running container of the task with stopAfter at any sample (saw \(most))")
            print("fault: link cut: replaced on the other worker \(replacedAfter) after the cut; healed worker's stale attempts stopped "
                  + "\(stopped) after its reconnect; stopAfter task: at most \(most) running in \(samples) samples")
            let final = try await cluster.tasks()
            #expect(final.allSatisfy { $0.state == "running" && $0.node == b && $0.attempt == 2 }, "nothing moved back")
        }
    }
}
