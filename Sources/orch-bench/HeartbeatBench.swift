import ArgumentParser
import Foundation
import OrchTestSupport

/// K simulated workers heartbeating every second: the manager's CPU share and resident
/// memory, and the heartbeat-to-recorded latency (read off to applied, in the manager).
struct HeartbeatBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heartbeats",
        abstract: "Heartbeat scale: manager CPU, memory per idle worker, apply latency.",
        discussion: """
            Examples:
              orch-bench heartbeats --workers 1000,10000
              orch-bench heartbeats --smoke
            """)

    @Option(help: "Numbers of simulated workers, comma-separated.")
    var workers: IntList = IntList(argument: "1000,10000")!

    @Option(help: "Seconds to measure over once all are connected.")
    var duration: Int = 20

    @Option(help: "Processes the simulated workers run in.")
    var processes: Int = 4

    @Flag(help: "Tiny sizes, for CI.")
    var smoke = false

    func run() async throws {
        let sizes = smoke ? [10] : workers.values
        let window = smoke ? 2 : duration
        print("heartbeats: every 1 s, measured over \(window) s; \(machineDescription())")
        var rows: [[String]] = []
        for k in sizes {
            let manager = try await ManagerProcess.start()
            let pid = manager.process.process.processIdentifier
            try await Task.sleep(for: .seconds(1))
            let idleRSS = residentBytes(pid: pid)
            let sims = try await startSimulatedWorkers(count: k, processes: smoke ? 1 : processes, wirePort: manager.wirePort, joinTokenFile: manager.joinTokenPath, prefix: "h\(k)p")
            try await waitUntil("\(k) nodes up", within: .seconds(300), every: .milliseconds(200)) {
                try await metric(manager.api, "orch_nodes", labels: "state=\"up\"") >= Double(k)
            }
            try await Task.sleep(for: .seconds(2))   // settle
            let bucketsBefore = try await histogram(manager.api)
            let cpuBefore = cpuSeconds(pid: pid)
            let simBefore = sims.map { cpuSeconds(pid: $0.process.processIdentifier) }.reduce(0, +)
            let beatsBefore = try await metric(manager.api, "orch_heartbeats_total")
            try await Task.sleep(for: .seconds(window))
            let cpu = (cpuSeconds(pid: pid) - cpuBefore) / Double(window)
            let simCPU = (sims.map { cpuSeconds(pid: $0.process.processIdentifier) }.reduce(0, +) - simBefore) / Double(window)
            let beats = (try await metric(manager.api, "orch_heartbeats_total") - beatsBefore) / Double(window)
            let buckets = try await histogram(manager.api).map { bound, count in (bound, count - (bucketsBefore.first { $0.0 == bound }?.1 ?? 0)) }
            let rss = residentBytes(pid: pid)
            let nodesDown = try await metric(manager.api, "orch_nodes", labels: "state=\"down\"")
            rows.append([
                "\(k)", format(beats, 0), format(cpu * 100, 1) + "%", format(simCPU * 100, 1) + "%",
                format(rss / 1_048_576, 1), format((rss - idleRSS) / Double(k), 0),
                quantile(buckets, 0.5), quantile(buckets, 0.99), format(nodesDown, 0),
            ])
            for sim in sims { sim.signal(SIGKILL) }
            await manager.stop()
            let connectionBytes = try await bareConnectionBytes(k)
            rows[rows.count - 1].insert(format(connectionBytes, 0), at: 6)
            rows[rows.count - 1].insert(format((rss - idleRSS) / Double(k) - connectionBytes, 0), at: 7)
        }
        table(["workers", "beats/s", "manager CPU (of 1 core)", "simulators CPU", "manager RSS MiB", "bytes/worker", "of which connection",
               "beyond connection", "apply p50", "apply p99", "marked down"], rows)
        print("targets: under 50% of one core, under 1 KiB per idle worker beyond its connection's buffers, p99 under 50 ms")
        print("bytes/worker = (RSS with K workers − RSS with none) / K; \"of which connection\" is the same measure for a")
        print("listener with the same pipeline that keeps no state (bare-listener); \"beyond connection\" is the difference")
    }

    /// Resident bytes per connection of a listener that keeps no state, with `k` simulated workers.
    func bareConnectionBytes(_ k: Int) async throws -> Double {
        let port = try freePort()
        let tokenFile = temporaryDirectory("bare") + "/join.token"
        let bare = try LaunchedProcess(executable: CommandLine.arguments[0], ["bare-listener", "--port", "\(port)", "--join-token-file", tokenFile])
        defer { bare.signal(SIGKILL) }
        try await bare.waitForOutput("listening", within: .seconds(30))
        try await Task.sleep(for: .seconds(1))
        let pid = bare.process.processIdentifier
        let idle = residentBytes(pid: pid)
        let sims = try await startSimulatedWorkers(count: k, processes: smoke ? 1 : processes, wirePort: port, joinTokenFile: tokenFile, prefix: "b\(k)p")
        try await Task.sleep(for: .seconds(3))
        let loaded = residentBytes(pid: pid)
        for sim in sims { sim.signal(SIGKILL) }
        return (loaded - idle) / Double(k)
    }

    /// The cumulative buckets of orch_heartbeat_apply_seconds: (upper bound in seconds, count).
    func histogram(_ api: String) async throws -> [(Double, Double)] {
        let text = String(buffer: try await get(api + "/metrics").body)
        return text.split(separator: "\n").compactMap { line -> (Double, Double)? in
            guard line.hasPrefix("orch_heartbeat_apply_seconds_bucket"), let start = line.range(of: "le=\""),
                  let end = line[start.upperBound...].firstIndex(of: "\"") else { return nil }
            let bound = line[start.upperBound..<end] == "+Inf" ? Double.infinity : Double(line[start.upperBound..<end]) ?? .nan
            return (bound, Double(line.split(separator: " ").last ?? "0") ?? 0)
        }.sorted { $0.0 < $1.0 }
    }

    /// The upper bound of the bucket holding quantile `q` ("≤ 250µs").
    func quantile(_ buckets: [(Double, Double)], _ q: Double) -> String {
        guard let total = buckets.last?.1, total > 0 else { return "-" }
        guard let bucket = buckets.first(where: { $0.1 >= q * total }) else { return "-" }
        if bucket.0.isInfinite { return "> 1 s" }
        return bucket.0 < 0.001 ? "≤ \(format(bucket.0 * 1e6, 0)) µs" : "≤ \(format(bucket.0 * 1000, 1)) ms"
    }
}
