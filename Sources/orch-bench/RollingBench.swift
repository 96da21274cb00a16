import ArgumentParser
import Foundation
import Logging
import NIOHTTP1
import OrchCore
import OrchRuntime
import OrchTestSupport

/// A rolling update of a service of N replicas (a new environment variable, so a new version),
/// timed until every replica runs the new version: our service (PUT /services/{name}, until its
/// deploy has succeeded) side by side with Docker Swarm's `docker service update` of the same
/// service, with the same update settings, on the same engine.
struct RollingBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rolling",
        abstract: "Rolling update of a service: the orchestrator's deploy against `docker service update` (Swarm).",
        discussion: """
            Both sides: start-first, --parallelism slots at a time, --min-healthy between a slot's \
            new task running and the next slot (ours: update.minHealthyTime; Swarm: --update-delay \
            and --update-monitor, 1 ms for 0, since Swarm reads a monitor of 0 as its default 5 s). \
            Swarm's time is until its UpdateStatus says completed (`docker service inspect` every \
            50 ms; ours: GET /services/{name} every 20 ms); the blocking `docker service update` is \
            timed too (its client waits the monitor once more after convergence, to verify).

            Examples:
              orch-bench rolling --replicas 10 --runs 3
              orch-bench rolling --min-healthy 1s
              orch-bench rolling --smoke            (2 replicas, no Swarm)
            """)

    @Option(help: "Replicas of the service.")
    var replicas: Int = 10

    @Option(help: "Slots replaced at a time (both sides).")
    var parallelism: Int = 1

    @Option(help: "Runs (the median is printed).")
    var runs: Int = 3

    @Option(name: .customLong("min-healthy"),
            help: "Ours: update.minHealthyTime; Swarm: --update-delay and --update-monitor (a Go duration: 0s, 500ms, 1s).")
    var minHealthy: String = "0s"

    @Flag(inversion: .prefixedNo, help: "Measure Docker Swarm too.")
    var swarm = true

    @Flag(help: "2 replicas, one run, no Swarm, for CI.")
    var smoke = false

    static let image = "orch-busybox:latest"
    static let command = ["sleep", "3600"]
    /// The environment variable whose value makes the new version, on both sides.
    static let variable = "BENCH_VERSION"

    /// Swarm's --update-monitor: the minimum healthy time, but 1 ms for none, because the API
    /// omits a zero monitor and Swarm then takes its default, 5 s.
    var swarmMonitor: String { DurationText.parse(minHealthy) == .zero ? "1ms" : minHealthy }

    func validate() throws {
        guard replicas >= 1, replicas <= 1000 else { throw ValidationError("--replicas must be 1 to 1000") }
        guard parallelism >= 1 else { throw ValidationError("--parallelism must be at least 1") }
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
        guard DurationText.parse(minHealthy) != nil else { throw ValidationError("--min-healthy: not a duration: \(minHealthy)") }
    }

    func run() async throws {
        let n = smoke ? 2 : replicas
        let runs = smoke ? 1 : self.runs
        let withSwarm = swarm && !smoke
        print("rolling: a service of \(n) replicas updated to a new version (a new environment variable), start-first, "
              + "parallelism \(parallelism), min healthy \(minHealthy) (ours: minHealthyTime \(minHealthy); "
              + "Swarm: --update-delay \(minHealthy) --update-monitor \(swarmMonitor)); median of \(runs); \(machineDescription())")
        let docker = try DockerBench.parse([])
        let runtime = try await DockerRuntime.connect(logger: Logger(label: "bench"))
        let manager = try await ManagerProcess.start()
        // 16 CPUs at least, so that N + parallelism tasks of 0.1 CPU fit on this 2-core machine.
        let cpus = max(16, ((n + parallelism) * Resources.default.millicores + 999) / 1000 + 1)
        let workerDir = temporaryDirectory("worker")
        let worker = try LaunchedProcess(orchctl: [
            "worker", "--manager", "127.0.0.1:\(manager.wirePort)", "--http", "127.0.0.1:0", "--name", "bench",
            "--state-dir", workerDir, "--cpus", "\(cpus)", "--log-level", "warning", "--join-token-file", manager.joinTokenPath,
        ])
        var swarmMade = false, swarmReady = false, bridgeBefore = true
        var ours: [Double] = [], swarmTimes: [Double] = [], swarmCLI: [Double] = [], swarmServer: [Double] = []
        var failure: (any Error)?
        do {
            try await waitUntil("the worker to join", within: .seconds(60)) {
                try await metric(manager.api, "orch_nodes", labels: "state=\"up\"") >= 1
            }
            let node = try docker.nodeID(workerDir)
            if withSwarm {
                bridgeBefore = docker.docker(["network", "inspect", "docker_gwbridge"]).status == 0
                swarmMade = docker.docker(["info", "--format", "{{.Swarm.LocalNodeState}}"]).output != "active"
                swarmReady = docker.initSwarm()
                if !swarmReady { swarmMade = false }
            }
            for run in 1...runs {
                let time = try await runOurs(n, api: manager.api, runtime: runtime, node: node)
                ours.append(time)
                note("run \(run): ours \(format(time)) s")
                if swarmReady {
                    let (polled, cli, server) = try await runSwarm(n, docker: docker)
                    swarmTimes.append(polled)
                    swarmCLI.append(cli)
                    if !server.isNaN { swarmServer.append(server) }
                    note("run \(run): Swarm \(format(polled)) s (its UpdateStatus \(format(server)) s; the blocking CLI \(format(cli)) s)")
                }
            }
        } catch {
            failure = error
        }
        if swarmMade {
            docker.leaveSwarm()
            // `swarm init` made this bridge and `swarm leave` keeps it.
            if !bridgeBefore { _ = docker.docker(["network", "rm", "docker_gwbridge"]) }
        }
        worker.signal(SIGTERM)
        _ = try? await worker.waitForExit(within: .seconds(20))
        if let node = try? docker.nodeID(workerDir) {
            for container in (try? await runtime.list(labels: [ContainerLabel.node: node])) ?? [] { try? await runtime.remove(container.id) }
        }
        await manager.stop()
        try? await runtime.shutdown()
        if let failure { throw failure }

        let a = median(ours), b = median(swarmTimes)
        table(["replicas", "ours s", "Swarm s", "ours/Swarm", "Swarm CLI s", "Swarm UpdateStatus s"], [[
            "\(n)", format(a), swarmTimes.isEmpty ? "-" : format(b), swarmTimes.isEmpty ? "-" : format(a / b),
            swarmCLI.isEmpty ? "-" : format(median(swarmCLI)), swarmServer.isEmpty ? "-" : format(median(swarmServer)),
        ]])
        print("ours: from PUT /services/{name} until its deploy is succeeded with \(n) tasks of the new version running; "
              + "Swarm: from `docker service update` until UpdateStatus completed with \(n) replicas running the new environment")
        if withSwarm && !swarmReady { print("Swarm: could not start here (docker swarm init failed); left out") }
    }

    // MARK: Ours

    func serviceBody(name: String, replicas: Int, version: Int) -> [String: Any] {
        [
            "name": name,
            "replicas": replicas,
            "task": taskBody(version: version),
            "update": ["parallelism": parallelism, "order": "start-first", "healthyDeadline": "120s", "minHealthyTime": minHealthy, "autoRollback": true],
        ]
    }

    func taskBody(version: Int) -> [String: Any] {
        // The task default's 0.1 CPU and 64 MiB; Swarm gets the same limits.
        ["image": Self.image, "command": Self.command, "environment": [Self.variable: "\(version)"], "stopGracePeriod": "1s"]
    }

    func json(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    func service(_ api: String, _ name: String) async throws -> (status: Int, object: [String: Any], text: String) {
        let answer = try await get(api + "/services/\(name)")
        let text = String(buffer: answer.body)
        let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        return (answer.status, object, text)
    }

    /// Tasks of `version` that run and are to run.
    func running(_ object: [String: Any], version: Int) -> Int {
        let tasks = object["tasks"] as? [[String: Any]] ?? []
        return tasks.filter {
            ($0["version"] as? Int) == version && ($0["state"] as? String) == "running" && ($0["desiredState"] as? String) == "run"
        }.count
    }

    func runOurs(_ n: Int, api: String, runtime: DockerRuntime, node: String) async throws -> Double {
        let name = "bench-rolling-\(UUID().uuidString.prefix(8).lowercased())"
        let created = try await send(.POST, api + "/services", body: try json(serviceBody(name: name, replicas: n, version: 1)))
        guard created.status == 201 else { throw BenchError("POST /services answered \(created.status): \(String(buffer: created.body).prefix(2000))") }
        do {
            try await waitUntil("\(n) replicas of \(name) running", within: .seconds(300), every: .milliseconds(50)) {
                running(try await service(api, name).object, version: 1) >= n
            }
            let clock = ContinuousClock()
            let start = clock.now
            let put = try await send(.PUT, api + "/services/\(name)", body: try json(["task": taskBody(version: 2)]))
            let putText = String(buffer: put.body)
            guard put.status == 200, let answer = try? JSONSerialization.jsonObject(with: Data(putText.utf8)) as? [String: Any],
                  let version = answer["latestVersion"] as? Int, version > 1 else {
                throw BenchError("PUT /services/\(name) answered \(put.status): \(putText.prefix(2000))")
            }
            var last = ""
            do {
                try await waitUntil("the deploy of \(name) to version \(version)", within: .seconds(60 + 30 * Int64(n)), every: .milliseconds(20)) {
                    let (status, object, text) = try await service(api, name)
                    last = text
                    guard status == 200 else { throw BenchError("GET /services/\(name) answered \(status): \(text.prefix(2000))") }
                    let deploy = object["deploy"] as? [String: Any] ?? [:]
                    let state = deploy["state"] as? String ?? ""
                    if ["failed", "rolling-back", "rolled-back"].contains(state) {
                        throw BenchError("the deploy of \(name) to version \(version) went \(state) after "
                                         + "\(format(seconds(clock.now - start))) s: \(text.prefix(4000))")
                    }
                    return state == "succeeded" && (deploy["to"] as? Int) == version && running(object, version: version) >= n
                }
            } catch let error as BenchError where error.description.hasPrefix("timed out") {
                throw BenchError("\(error) after \(format(seconds(clock.now - start))) s; the last GET /services/\(name): \(last.prefix(4000))")
            }
            let elapsed = seconds(clock.now - start)
            try await removeService(name, api: api, runtime: runtime, node: node)
            return elapsed
        } catch {
            try? await removeService(name, api: api, runtime: runtime, node: node)
            throw error
        }
    }

    func removeService(_ name: String, api: String, runtime: DockerRuntime, node: String) async throws {
        let answer = try await send(.DELETE, api + "/services/\(name)")
        guard answer.status == 202 || answer.status == 404 else {
            throw BenchError("DELETE /services/\(name) answered \(answer.status): \(String(buffer: answer.body).prefix(2000))")
        }
        try await waitUntil("\(name) removed and its containers gone", within: .seconds(300), every: .milliseconds(100)) {
            guard try await service(api, name).status == 404 else { return false }
            return try await runtime.list(labels: [ContainerLabel.node: node]).isEmpty
        }
    }

    // MARK: Docker Swarm

    /// (until UpdateStatus completed, polled; the blocking CLI's own time; StartedAt → CompletedAt by Swarm's clock).
    func runSwarm(_ n: Int, docker: DockerBench) async throws -> (polled: Double, cli: Double, server: Double) {
        let name = "orch-bench-rolling-\(UUID().uuidString.prefix(8).lowercased())"
        let created = docker.docker([
            "service", "create", "--detach", "--no-resolve-image", "--name", name, "--replicas", "\(n)",
            "--stop-grace-period", "1s", "--reserve-cpu", "0.1", "--limit-memory", "64m", "--env", "\(Self.variable)=1",
            "--update-parallelism", "\(parallelism)", "--update-delay", minHealthy, "--update-monitor", swarmMonitor,
            "--update-order", "start-first", "--update-failure-action", "rollback",
            Self.image,
        ] + Self.command)
        guard created.status == 0 else { throw BenchError("docker service create: \(created.output)") }
        defer { removeSwarmService(name, docker: docker) }
        try await waitUntil("\(n) replicas of \(name) running", within: .seconds(300), every: .milliseconds(50)) {
            let states = docker.docker(["service", "ps", name, "--filter", "desired-state=running", "--format", "{{.CurrentState}}"]).output
            return states.split(separator: "\n").filter { $0.hasPrefix("Running") }.count >= n
        }
        let clock = ContinuousClock()
        let start = clock.now
        // Blocks until the update has converged (then its client's verification wait).
        let update = try LaunchedProcess(executable: "/usr/bin/env", [
            "docker", "service", "update", "--quiet", "--no-resolve-image", "--env-add", "\(Self.variable)=2", name,
        ])
        defer {
            try? FileManager.default.removeItem(atPath: update.outputPath)
            try? FileManager.default.removeItem(atPath: update.errorPath)
        }
        var status: [String: Any] = [:]
        try await waitUntil("Swarm's update of \(name) completed", within: .seconds(60 + 30 * Int64(n)), every: .milliseconds(50)) {
            let text = docker.docker(["service", "inspect", name, "--format", "{{json .UpdateStatus}}"]).output
            status = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
            let state = status["State"] as? String ?? ""
            if state.hasPrefix("rollback") || state == "paused" {
                throw BenchError("Swarm's update of \(name) went \(state): \(text)")
            }
            return state == "completed"
        }
        let polled = seconds(clock.now - start)
        let exit = try await update.waitForExit(within: .seconds(120))
        let cli = seconds(clock.now - start)
        guard exit == 0 else { throw BenchError("docker service update exited \(exit): \(update.output.prefix(2000))") }
        // Converged: n replicas Running, n running containers of the service with the new environment.
        let states = docker.docker(["service", "ps", name, "--filter", "desired-state=running", "--format", "{{.CurrentState}}"]).output
        let runningTasks = states.split(separator: "\n").filter { $0.hasPrefix("Running") }.count
        let ids = docker.docker(["ps", "-q", "--filter", "label=com.docker.swarm.service.name=\(name)", "--filter", "status=running"])
            .output.split(separator: "\n").map(String.init)
        let environments = ids.isEmpty ? "" : docker.docker(["inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}"] + ids).output
        let updated = environments.split(separator: "\n").filter { $0 == "\(Self.variable)=2" }.count
        guard runningTasks == n, updated == n else {
            throw BenchError("Swarm's update of \(name) completed, but \(runningTasks) replicas run and \(updated) containers have \(Self.variable)=2")
        }
        var server = Double.nan
        if let started = (status["StartedAt"] as? String).flatMap(Self.date), let completed = (status["CompletedAt"] as? String).flatMap(Self.date) {
            server = completed.timeIntervalSince(started)
        }
        return (polled, cli, server)
    }

    func removeSwarmService(_ name: String, docker: DockerBench) {
        _ = docker.docker(["service", "rm", name])
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, !docker.docker(["ps", "-aq", "--filter", "label=com.docker.swarm.service.name=\(name)"]).output.isEmpty {
            usleep(200_000)
        }
    }

    /// An RFC 3339 date with up to nanoseconds, as Docker writes them ("2025-01-02T03:04:05.123456789Z").
    static func date(_ text: String) -> Date? {
        var base = text, fraction = 0.0
        if let dot = text.firstIndex(of: ".") {
            let digits = text[text.index(after: dot)...].prefix { $0.isNumber }
            fraction = Double("0." + digits) ?? 0
            base = String(text[..<dot]) + String(text[text.index(after: dot)...].dropFirst(digits.count))
        }
        return ISO8601DateFormatter().date(from: base).map { $0.addingTimeInterval(fraction) }
    }
}
