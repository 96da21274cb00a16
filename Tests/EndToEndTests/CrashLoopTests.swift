import Foundation
import OrchTestSupport
import Testing

/// A task that exits at once: restarted after 1 s, 2 s, 4 s, ... (its events say so), and
/// left failed once it has used the restarts its policy allows.
@Suite("End to end: crash loops back off (Docker)", .serialized, .timeLimit(.minutes(3)))
struct CrashLoopTests {
    static func crasher(_ policy: String) -> String {
        #"{"image": "orch-busybox:latest", "command": ["sh", "-c", "exit 1"], "restartPolicy": \#(policy), "stopGracePeriod": "1s"}"#
    }

    @Test func aTaskThatExitsAtOnceBacksOffExponentiallyAndOneWithAMaximumStopsAtIt() async throws {
        try await ClusterProcesses.with(grace: "5s") { cluster in
            try await cluster.startWorker("loop-a")
            let looping = try await cluster.submit(Self.crasher(#"{"mode": "always"}"#))
            let capped = try await cluster.submit(Self.crasher(#"{"mode": "on-failure", "maxRestarts": 2}"#))

            // How long each requeued attempt waits: from when the task is first seen pending
            // after attempt n to when attempt n + 1 first shows (the test's own clock, every
            // 50 ms; the containers' own start and exit are not in it).
            var pendingSince: [Int: ContinuousClock.Instant] = [:]
            var firstSeen: [Int: ContinuousClock.Instant] = [:]
            let deadline = ContinuousClock.now + .seconds(40)
            while firstSeen[4] == nil, ContinuousClock.now < deadline {
                let record = try await task(looping, in: cluster)
                if firstSeen[record.attempt] == nil { firstSeen[record.attempt] = .now }
                if record.state == "pending", pendingSince[record.attempt] == nil { pendingSince[record.attempt] = .now }
                try await Task.sleep(for: .milliseconds(50))
            }
            var waits: [Duration] = []
            for attempt in 1...3 {
                guard let pending = pendingSince[attempt], let next = firstSeen[attempt + 1] else { break }
                waits.append(next - pending)
            }
            try #require(waits.count == 3, "three requeues seen: pending \(pendingSince.keys.sorted()), attempts \(firstSeen.keys.sorted())")
            #expect(waits[0] >= .milliseconds(800) && waits[0] < .seconds(2), "first wait about 1 s: \(waits[0])")
            #expect(waits[1] >= .milliseconds(1800) && waits[1] < .seconds(3), "second about 2 s: \(waits[1])")
            #expect(waits[2] >= .milliseconds(3800) && waits[2] < .seconds(5), "third about 4 s: \(waits[2])")
            print("fault: crash loop: waits before attempts 2, 3, 4: \(waits)")

            let events = try await task(looping, in: cluster)["events"] as? [[String: Any]] ?? []
            let delays = events.compactMap { $0["message"] as? String }.filter { $0.hasPrefix("requeued: restarting after") }
            #expect(delays.count >= 3 && delays[0].contains("after 1s") && delays[1].contains("after 2s") && delays[2].contains("after 4s"),
                    "the delays are in the events: \(delays)")

            // The capped task: three attempts (two restarts), then failed for good.
            let ended = try await task(capped, in: cluster)
            #expect(ended.state == "failed" && ended.attempt == 3, "\(ended.state) after \(ended.attempt) attempts")
            #expect((ended["error"] as? String)?.contains("gave up after 2 restarts") == true, "error: \(ended["error"] ?? "none")")
            try await Task.sleep(for: .seconds(2))
            #expect(try await task(capped, in: cluster).attempt == 3, "not restarted again")
        }
    }

    func task(_ id: String, in cluster: ClusterProcesses) async throws -> [String: Any] {
        let answer = try await http(.GET, "\(cluster.api)/tasks/\(id)")
        return try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])
    }
}
