import ArgumentParser
import Foundation
import NIOHTTP1

/// The REST gateway: POST /tasks requests/s, then GET /tasks with every task stored
/// (whole and paginated): p50/p99 and payload size.
struct RESTBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rest",
        abstract: "REST gateway: POST /tasks requests/s, GET /tasks latency with many tasks stored.",
        discussion: """
            Examples:
              orch-bench rest --tasks 10000,100000
              orch-bench rest --smoke
            """)

    @Option(help: "Numbers of stored tasks, comma-separated.")
    var tasks: IntList = IntList(argument: "10000,100000")!

    @Option(help: "Concurrent requests.")
    var concurrency: Int = 32

    @Option(help: "GET requests timed per case.")
    var samples: Int = 20

    @Flag(help: "Tiny sizes, for CI.")
    var smoke = false

    func run() async throws {
        let sizes = smoke ? [100] : tasks.values
        let samples = smoke ? 3 : self.samples
        print("rest: no workers (tasks stay pending), \(concurrency) concurrent POSTs; \(machineDescription())")
        var rows: [[String]] = []
        for n in sizes {
            let manager = try await ManagerProcess.start()
            let clock = ContinuousClock()
            let start = clock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<concurrency {
                    group.addTask {
                        var index = lane
                        while index < n {
                            let answer = try await send(.POST, manager.api + "/tasks", body: #"{"image": "orch-busybox:latest", "resources": {"cpus": 0.01, "memory": "6MiB"}}"#)
                            guard answer.status == 201 else { throw BenchError("POST answered \(answer.status)") }
                            index += concurrency
                        }
                    }
                }
                try await group.waitForAll()
            }
            let postRate = Double(n) / seconds(clock.now - start)
            for (label, path) in [("all at once", "/tasks?limit=1000000"), ("a page of 1000", "/tasks?limit=1000")] {
                var times: [Double] = []
                var bytes = 0
                for _ in 0..<samples {
                    let begin = clock.now
                    let answer = try await get(manager.api + path)
                    times.append(seconds(clock.now - begin) * 1000)
                    bytes = answer.body.readableBytes
                }
                rows.append(["\(n)", format(postRate, 0), "GET /tasks (\(label))", format(percentile(times, 50), 1), format(percentile(times, 99), 1),
                             format(Double(bytes) / 1_048_576, 2)])
            }
            await manager.stop()
        }
        table(["tasks", "POST/s", "request", "p50 ms", "p99 ms", "payload MiB"], rows)
    }
}
