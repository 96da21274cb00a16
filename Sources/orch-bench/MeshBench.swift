import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import OrchControl
import OrchCore
import OrchRuntime
import OrchTestSupport
import OrchWorker

/// What the routing mesh costs and how fast it forgets a dead replica, on real processes:
/// a manager, two workers (advertise addresses 127.0.0.1 and 127.0.0.2), each with its
/// HAProxy, and two services of busybox httpd replicas, one publishing its port in tcp mode,
/// the other in http mode.
///
/// - Cost: wrk against a replica's own host port (the container, straight), then against the
///   tcp and the http service's published port on the first worker (the mesh, balancing over
///   every replica), alternating, the median of each.
/// - Forgetting: a replica of the tcp service killed (its process, SIGKILL from the host),
///   then every worker's HAProxy polled through its runtime API until the replica's
///   server no longer takes connections (gone, in maintenance, draining or down): the time
///   to the first and to the last load balancer, p50 and p99 over the kills.
struct MeshBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh",
        abstract: "The routing mesh: its cost against a container's own port (wrk), and a killed replica's time until every load balancer drops it.",
        discussion: """
            The replicas are busybox httpd (one connection per request: it does not keep \
            connections alive), each reserving 2 CPUs; the \
            load is wrk (Debian's, installed by tools/setup.sh) with --connections at a time.

            Examples:
              orch-bench mesh                      (3 replicas, 3 runs of 5 s, 20 kills)
              orch-bench mesh --connections 32 --duration 10
              orch-bench mesh --smoke              (2 replicas, 1 run of 1 s, 2 kills)
            """)

    @Option(help: "Replicas of each service.")
    var replicas: Int = 3

    @Option(help: "Runs of each target, alternating (the median is printed).")
    var runs: Int = 3

    @Option(help: "Seconds of load per run.")
    var duration: Int = 5

    @Option(help: "Connections wrk keeps open.")
    var connections: Int = 8

    @Option(help: "Replicas killed one after another, for the drop times.")
    var kills: Int = 20

    @Flag(help: "2 replicas, one run of 1 s, 2 kills, for CI.")
    var smoke = false

    static let advertise = [("mesh-a", "127.0.0.1"), ("mesh-b", "127.0.0.2")]

    func validate() throws {
        guard replicas >= 2, replicas <= 20 else { throw ValidationError("--replicas must be 2 to 20 (one is killed while the others serve)") }
        guard runs >= 1, duration >= 1, connections >= 1, kills >= 1 else {
            throw ValidationError("--runs, --duration, --connections and --kills must be at least 1")
        }
    }

    func run() async throws {
        let n = smoke ? 2 : replicas
        let (runs, duration, kills) = smoke ? (1, 1, 2) : (self.runs, self.duration, self.kills)
        guard let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BenchError("wrk is not installed: run tools/setup.sh (or apt-get install wrk)")
        }
        print("mesh: 2 workers, a tcp and an http service of \(n) busybox httpd replicas each; wrk, \(connections) connections, "
              + "\(duration) s a run, median of \(runs); \(kills) replicas killed; \(machineDescription())")
        let runtime = try await DockerRuntime.connect(logger: Logger(label: "bench"))
        let manager = try await ManagerProcess.start()
        var workers: [LaunchedProcess] = []
        var stateDirs: [String] = []
        var failure: (any Error)?
        var cost: [(String, [WrkResult])] = []
        var drops: [(first: Double, last: Double)] = []
        do {
            for (name, address) in Self.advertise {
                let directory = temporaryDirectory("worker-\(name)")
                stateDirs.append(directory)
                workers.append(try LaunchedProcess(orchctl: [
                    "worker", "--manager", "127.0.0.1:\(manager.wirePort)", "--http", "\(address):0", "--advertise-address", address,
                    "--name", name, "--state-dir", directory, "--cpus", "\(4 * n + 4)", "--memory", "4GiB", "--log-level", "warning",
                    "--join-token-file", manager.joinTokenPath,
                ]))
            }
            try await waitUntil("both workers to join", within: .seconds(60)) {
                try await metric(manager.api, "orch_nodes", labels: "state=\"up\"") >= 2
            }
            let ports = try Self.freeMeshPorts(2)
            let services = [("bench-tcp", ports[0], "tcp"), ("bench-http", ports[1], "http")]
            for (name, publish, mode) in services {
                let created = try await send(.POST, manager.api + "/services", body: try Self.json(Self.service(name, replicas: n, publish: publish, mode: mode)))
                guard created.status == 201 else { throw BenchError("POST /services answered \(created.status): \(String(buffer: created.body).prefix(2000))") }
            }
            let sockets = stateDirs.map { "\($0)/haproxy/admin.sock" }
            for (name, publish, _) in services {
                try await waitUntil("\(n) ready servers of \(name) in every load balancer", within: .seconds(120)) {
                    sockets.allSatisfy { Self.readyServers($0, section: LoadBalancerPlan.sectionName(name, UInt16(publish))).count == n }
                }
            }
            let direct = try await Self.endpointAddress(manager.api, "bench-tcp")
            let targets = [
                ("container's own port", "http://\(direct)/id"),
                ("mesh, tcp mode", "http://127.0.0.1:\(ports[0])/id"),
                ("mesh, http mode", "http://127.0.0.1:\(ports[1])/id"),
            ]
            var results = targets.map { ($0.0, [WrkResult]()) }
            for run in 1...runs {
                for (index, target) in targets.enumerated() {
                    let result = try await Self.wrk(wrk, target.1, connections: connections, seconds: duration)
                    results[index].1.append(result)
                    note("run \(run), \(target.0): \(format(result.requestsPerSecond, 0)) requests/s, p50 \(format(result.p50 * 1000)) ms, "
                         + "p99 \(format(result.p99 * 1000)) ms, \(result.errors) errors")
                }
            }
            cost = results

            let section = LoadBalancerPlan.sectionName("bench-tcp", UInt16(ports[0]))
            for kill in 1...kills {
                let drop = try await killOne(api: manager.api, sockets: sockets, section: section, replicas: n)
                drops.append(drop)
                note("kill \(kill): dropped by the first load balancer in \(format(drop.first * 1000)) ms, by every one in \(format(drop.last * 1000)) ms")
            }
        } catch {
            failure = error
        }
        for service in ["bench-tcp", "bench-http"] { _ = try? await send(.DELETE, manager.api + "/services/\(service)") }
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { _ = try? await worker.waitForExit(within: .seconds(20)) }
        for directory in stateDirs {
            guard let node = try? String(contentsOfFile: directory + "/node-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) else { continue }
            for container in (try? await runtime.list(labels: [ContainerLabel.node: node])) ?? [] { try? await runtime.remove(container.id) }
        }
        await manager.stop()
        try? await runtime.shutdown()
        if let failure { throw failure }

        let base = cost.first.map { (median($0.1.map(\.requestsPerSecond)), median($0.1.map(\.p50)), median($0.1.map(\.p99))) } ?? (.nan, .nan, .nan)
        table(["target", "requests/s", "p50 ms", "p99 ms", "requests/s ÷ own port", "p50 ÷ own port", "p99 ÷ own port", "errors"], cost.map { name, runs in
            let rps = median(runs.map(\.requestsPerSecond)), p50 = median(runs.map(\.p50)), p99 = median(runs.map(\.p99))
            return [name, format(rps, 0), format(p50 * 1000), format(p99 * 1000), format(rps / base.0), format(p50 / base.1), format(p99 / base.2),
                    "\(runs.map(\.errors).reduce(0, +))"]
        })
        print("")
        table(["killed replica dropped by", "kills", "p50 ms", "p99 ms", "max ms"], [
            ["the first load balancer", "\(drops.count)", format(percentile(drops.map(\.first), 50) * 1000),
             format(percentile(drops.map(\.first), 99) * 1000), format((drops.map(\.first).max() ?? .nan) * 1000)],
            ["every load balancer", "\(drops.count)", format(percentile(drops.map(\.last), 50) * 1000),
             format(percentile(drops.map(\.last), 99) * 1000), format((drops.map(\.last).max() ?? .nan) * 1000)],
        ])
        print("own port: one replica's published host port, straight to its container; mesh: the first worker's published port, "
              + "balancing over all \(n) replicas on both workers. Dropped: from the SIGKILL of the replica's process until the replica's server takes no new "
              + "connections in that worker's HAProxy (gone, maint, drain or down), polled every millisecond through its runtime API.")
    }

    // MARK: Killing a replica

    /// Kills a replica of the service whose server every load balancer holds ready, times
    /// how long until each has dropped it, then waits until the service has `replicas` ready
    /// servers everywhere again.
    func killOne(api: String, sockets: [String], section: String, replicas: Int) async throws -> (first: Double, last: Double) {
        let answer = try await get(api + "/tasks?service=bench-tcp")
        let listed = (try? JSONSerialization.jsonObject(with: Data(String(buffer: answer.body).utf8))) as? [[String: Any]] ?? []
        let ready = sockets.map { Self.readyServers($0, section: section) }
        let tasks = listed.filter { task in
            guard let id = task["id"] as? String, task["state"] as? String == "running", task["container"] is String else { return false }
            return ready.allSatisfy { $0.contains(LoadBalancerPlan.serverName(TaskID(rawValue: id))) }
        }
        guard let victim = tasks.first, let id = victim["id"] as? String, let container = victim["container"] as? String else {
            throw BenchError("no replica of bench-tcp is ready in every load balancer: \(String(buffer: answer.body).prefix(2000))")
        }
        let server = LoadBalancerPlan.serverName(TaskID(rawValue: id))
        // The replica fails: its process (httpd, the container's first) killed on the host.
        let inspected = try DockerBench.parse([]).docker(["inspect", "--format", "{{.State.Pid}}", container])
        guard inspected.status == 0, let pid = Int32(inspected.output.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else {
            throw BenchError("docker inspect \(container): \(inspected.output.prefix(300))")
        }
        let clock = ContinuousClock()
        let start = clock.now
        guard Glibc.kill(pid, SIGKILL) == 0 else { throw BenchError("kill -9 \(pid): \(String(cString: strerror(errno)))") }
        var dropped: [Int: Double] = [:]
        let deadline = start + .seconds(30)
        while dropped.count < sockets.count {
            guard clock.now < deadline else { throw BenchError("the killed replica \(id) is still ready in a load balancer after 30 s") }
            for (index, socket) in sockets.enumerated() where dropped[index] == nil {
                if !Self.readyServers(socket, section: section).contains(server) { dropped[index] = seconds(clock.now - start) }
            }
            try await Task.sleep(for: .milliseconds(1))
        }
        try await waitUntil("\(replicas) ready servers again after the kill of \(id)", within: .seconds(60), every: .milliseconds(20)) {
            sockets.allSatisfy { Self.readyServers($0, section: section).count == replicas }
        }
        return (dropped.values.min() ?? .nan, dropped.values.max() ?? .nan)
    }

    /// The servers of `section` that take new connections (up and without an admin state:
    /// not in maintenance, not draining), from `show servers state`; none when the socket does
    /// not answer.
    static func readyServers(_ socket: String, section: String) -> Set<String> {
        guard let text = try? LoadBalancer.command("show servers state \(section)", socket: socket) else { return [] }
        // "be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...": op 2 is running.
        return Set(text.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard !line.hasPrefix("#"), fields.count > 6, fields[1] == section, fields[5] == "2", fields[6] == "0" else { return nil }
            return String(fields[3])
        })
    }

    // MARK: Setting up

    static func service(_ name: String, replicas: Int, publish: Int, mode: String) -> [String: Any] {
        [
            "name": name, "replicas": replicas,
            "task": [
                "image": "orch-busybox:latest", "command": ["sh", "-c", "hostname > /www/id; exec httpd -f -p 8080 -h /www"],
                "ports": [["containerPort": 8080, "publish": publish, "publishMode": mode]],
                "resources": ["cpus": 2, "memory": "32MiB"], "stopGracePeriod": "1s",
            ] as [String: Any],
        ]
    }

    static func json(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    /// `ADDRESS:PORT` of the service's first ready endpoint: its container's own published port.
    static func endpointAddress(_ api: String, _ service: String) async throws -> String {
        let answer = try await get(api + "/services/\(service)/endpoints")
        let object = (try? JSONSerialization.jsonObject(with: Data(String(buffer: answer.body).utf8))) as? [String: Any] ?? [:]
        for endpoint in object["endpoints"] as? [[String: Any]] ?? [] where endpoint["ready"] as? Bool == true {
            if let address = endpoint["address"] as? String, let port = (endpoint["ports"] as? [[String: Any]])?.first?["hostPort"] as? Int {
                return "\(address):\(port)"
            }
        }
        throw BenchError("no ready endpoint of \(service): \(String(buffer: answer.body).prefix(2000))")
    }

    /// `count` ports free on both advertise addresses.
    static func freeMeshPorts(_ count: Int) throws -> [Int] {
        var ports: [Int] = []
        while ports.count < count { ports.append(try freePort(onEvery: advertise.map(\.1), excluding: Set(ports))) }
        return ports
    }

    // MARK: wrk

    struct WrkResult {
        var requestsPerSecond: Double
        var p50: Double
        var p99: Double
        /// Socket errors, timeouts and answers other than 2xx or 3xx.
        var errors: Int
    }

    static func wrk(_ wrk: String, _ url: String, connections: Int, seconds: Int) async throws -> WrkResult {
        let process = try LaunchedProcess(executable: wrk, ["-t", "1", "-c", "\(connections)", "-d", "\(seconds)s", "--latency", url])
        let status = try await process.waitForExit(within: .seconds(Int64(seconds) + 30))
        let text = process.stdout
        guard status == 0, let result = parseWrk(text) else { throw BenchError("wrk \(url) exited \(status): \(process.output.suffix(2000))") }
        return result
    }

    /// The figures of wrk's `--latency` report.
    static func parseWrk(_ text: String) -> WrkResult? {
        var rps: Double?, p50: Double?, p99: Double?
        var errors = 0
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            if fields.first == "Requests/sec:", fields.count == 2 { rps = Double(fields[1]) }
            if fields.count == 2, fields[0] == "50%" { p50 = duration(fields[1]) }
            if fields.count == 2, fields[0] == "99%" { p99 = duration(fields[1]) }
            if line.contains("Non-2xx or 3xx responses:"), let count = fields.last.flatMap({ Int($0) }) { errors += count }
            if line.contains("Socket errors:") {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                errors += fields.compactMap { Int($0.trimmingCharacters(in: CharacterSet(charactersIn: ","))) }.reduce(0, +)
            }
        }
        guard let rps, let p50, let p99 else { return nil }
        return WrkResult(requestsPerSecond: rps, p50: p50, p99: p99, errors: errors)
    }

    /// `812.00us`, `1.23ms`, `2.00s` in seconds.
    static func duration(_ text: String) -> Double? {
        for (unit, scale) in [("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0)] where text.hasSuffix(unit) {
            return Double(text.dropLast(unit.count)).map { $0 * scale }
        }
        return nil
    }
}
