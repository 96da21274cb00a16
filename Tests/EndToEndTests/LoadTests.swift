import Foundation
import OrchTestSupport
import Testing

/// Both cores saturated for a minute under a manager and two workers running 20 tasks: no
/// healthy worker is marked down and no task is restarted.
@Suite("End to end: no flapping under CPU load (Docker)", .serialized, .timeLimit(.minutes(4)))
struct LoadTests {
    static let task = #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.05, "memory": "8MiB"}, "restartPolicy": {"mode": "on-failure"}, "stopGracePeriod": "1s"}"#

    @Test func aMinuteOfBothCoresSaturatedMarksNoWorkerDownAndRestartsNoTask() async throws {
        try await ClusterProcesses.with(grace: "5s") { cluster in
            try await cluster.startWorker("load-a")
            try await cluster.startWorker("load-b")
            for _ in 0..<20 { _ = try await cluster.submit(Self.task) }
            try await cluster.waitForTasks("twenty running", within: .seconds(60)) { $0.count == 20 && $0.allSatisfy { $0.state == "running" } }

            // Started with an empty signal mask: a child spawned from a thread that blocks
            // signals (libdispatch's do) inherits that mask, and stress-ng would then neither
            // end at its timeout nor on SIGTERM.
            let stress = try LaunchedProcess.withSignalsUnblocked("/usr/bin/stress-ng", [
                "--cpu", "\(ProcessInfo.processInfo.activeProcessorCount)", "--cpu-load", "100", "--timeout", "60s", "--quiet",
            ])
            // SIGTERM, not SIGKILL: stress-ng stops its workers on SIGTERM, while a SIGKILLed
            // parent leaves them burning both cores for every test after this one.
            defer {
                stress.signal(SIGTERM)
                let deadline = Date().addingTimeInterval(10)
                while stress.process.isRunning, Date() < deadline { usleep(50_000) }
                stress.signal(SIGKILL)
            }
            var downSeen: [String] = []
            var polls = 0
            let end = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < end, stress.process.isRunning {
                if let nodes = try? await cluster.nodes() {
                    polls += 1
                    for node in nodes where node["state"] as? String != "up" {
                        downSeen.append("\(node["name"] as? String ?? "?") \(node["state"] as? String ?? "?")")
                    }
                }
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(!stress.process.isRunning || ContinuousClock.now >= end)
            stress.signal(SIGTERM)
            _ = try await stress.waitForExit(within: .seconds(10))
            #expect(try runningStressWorkers() == 0, "stress-ng's workers ended with it")
            let sawLoad = try String(contentsOfFile: "/proc/loadavg", encoding: .utf8).split(separator: " ").first.flatMap { Double($0) } ?? 0
            #expect(sawLoad > 1.5, "the cores were saturated (load average \(sawLoad))")
            #expect(polls > 30, "the gateway answered through the load (\(polls) polls)")
            #expect(downSeen.isEmpty, "nodes seen not up: \(downSeen.prefix(5))")
            let tasks = try await cluster.tasks()
            print("fault: both cores saturated for 60 s (load \(sawLoad)): \(downSeen.count) nodes seen not up in \(polls) polls, "
                  + "\(tasks.filter { $0.attempt != 1 }.count) of \(tasks.count) tasks restarted")
            #expect(tasks.count == 20 && tasks.allSatisfy { $0.state == "running" && $0.attempt == 1 },
                    "restarted: \(tasks.filter { $0.attempt != 1 || $0.state != "running" }.map { "\($0.state) #\($0.attempt)" })")
        }
    }
}

/// How many stress-ng processes run (its workers rename themselves `stress-ng-cpu`).
func runningStressWorkers() throws -> Int {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
    process.arguments = ["-r", "R,S,D", "-f", "stress-ng"]   // not the zombies of earlier runs
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).split(separator: "\n").count
}
