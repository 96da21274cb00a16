import Foundation
import OrchTestSupport
import Testing

/// Services over real processes: a manager and two workers running busybox httpd replicas on
/// Docker, driven with orchctl and the REST API.
@Suite("End to end: services (Docker)", .serialized, .timeLimit(.minutes(6)))
struct ServiceProcessTests {
    /// A service file of `replicas` httpd replicas with a health check; `extra` joins the command.
    static func serviceFile(replicas: Int = 3, extra: [String] = [], healthPath: String = "/health", minHealthy: String = "1s", deadline: String = "15s") throws -> String {
        let command = ["httpd", "-f", "-p", "8080", "-h", "/www"] + extra
        let file: [String: Any] = [
            "name": "web", "replicas": replicas,
            "task": [
                "image": "orch-busybox:latest", "command": command, "ports": [["containerPort": 8080]],
                "resources": ["cpus": 0.05, "memory": "16MiB"], "stopGracePeriod": "1s",
                "healthCheck": ["path": healthPath, "port": 8080, "interval": "1s", "timeout": "500ms", "failureThreshold": 2],
            ] as [String: Any],
            "update": ["parallelism": 1, "order": "start-first", "healthyDeadline": deadline, "minHealthyTime": minHealthy],
        ]
        let path = temporaryDirectory("service") + "/web.json"
        try JSONSerialization.data(withJSONObject: file).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func service(_ cluster: ClusterProcesses) async throws -> [String: Any] {
        let answer = try await http(.GET, "\(cluster.api)/services/web")
        guard answer.status == 200, let service = try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any] else {
            throw TestTimeout(what: "the service, got \(answer.status): \(answer.body.prefix(200))")
        }
        return service
    }

    /// The service's tasks as GET /tasks?service=web lists them.
    static func replicas(_ cluster: ClusterProcesses) async throws -> [[String: Any]] {
        let answer = try await http(.GET, "\(cluster.api)/tasks?service=web")
        guard let tasks = try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]] else {
            throw TestTimeout(what: "a task list, got \(answer.status): \(answer.body.prefix(200))")
        }
        return tasks
    }

    static func running(_ tasks: [[String: Any]]) -> [[String: Any]] {
        tasks.filter { $0.state == "running" && $0["desiredState"] as? String == "run" }
    }

    @Test func aServiceIsSpreadScaledRolledAndRolledBackThroughOrchctl() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("svc-a")
            try await cluster.startWorker("svc-b")
            let env = ["ORCH_API": cluster.api]

            // Three replicas, on both nodes, each serving HTTP on its published port.
            let created = try await LaunchedProcess.run(orchctl: ["deploy", "-f", try Self.serviceFile()], environment: env, within: .seconds(90))
            #expect(created.status == 0, "\(created.stderr)")
            #expect(created.stderr.contains("web created") && created.stderr.contains("3/3 replicas running"), "\(created.stderr)")
            var running = Self.running(try await Self.replicas(cluster))
            #expect(running.count == 3)
            #expect(Set(running.map(\.node)).count == 2, "spread on both workers: \(running.map(\.node))")
            #expect(Set(running.compactMap { $0["slot"] as? Int }) == [1, 2, 3])
            for task in running {
                let port = try #require((task["ports"] as? [[String: Any]])?.first)
                let answer = try await http(.GET, "http://\(port["hostIP"] as! String):\(port["hostPort"] as! Int)/health", token: .none)
                #expect(answer.status == 200, "replica \(task["slot"] ?? "?") answers HTTP")
            }

            // Scaled to 5, then to 2: the highest slots stop.
            let up = try await LaunchedProcess.run(orchctl: ["service", "scale", "web=5", "--wait"], environment: env, within: .seconds(60))
            #expect(up.status == 0, "\(up.stderr)")
            #expect(Set(Self.running(try await Self.replicas(cluster)).compactMap { $0["slot"] as? Int }) == [1, 2, 3, 4, 5])
            let down = try await LaunchedProcess.run(orchctl: ["service", "scale", "web=2", "--wait"], environment: env, within: .seconds(60))
            #expect(down.status == 0, "\(down.stderr)")
            try await waitUntil("slots 3 to 5 to stop", within: .seconds(20)) {
                Set(Self.running(try await Self.replicas(cluster)).compactMap { $0["slot"] as? Int }) == [1, 2]
            }
            let two = try await LaunchedProcess.run(orchctl: ["deploy", "-f", try Self.serviceFile(replicas: 3)], environment: env, within: .seconds(60))
            #expect(two.status == 0, "\(two.stderr)")

            // A new command rolls slot by slot: each new task starts once the one before has
            // been healthy for the minimum time.
            let rolled = try await LaunchedProcess.run(
                orchctl: ["deploy", "-f", try Self.serviceFile(extra: ["-v"])], environment: env, within: .seconds(120))
            #expect(rolled.status == 0, "\(rolled.stderr)")
            #expect(rolled.stderr.contains("deploy of version 2 succeeded"), "\(rolled.stderr)")
            running = Self.running(try await Self.replicas(cluster))
            #expect(running.count == 3 && running.allSatisfy { $0["version"] as? Int == 2 }, "\(running.map { $0["version"] ?? "?" })")
            #expect(running.allSatisfy { (($0["spec"] as? [String: Any])?["command"] as? [String])?.last == "-v" })
            let starts = running.compactMap { $0["createdAt"] as? String }.compactMap { ISO8601DateFormatter().date(from: $0) }.sorted()
            #expect(starts.count == 3)
            for (earlier, later) in zip(starts, starts.dropFirst()) {
                #expect(later.timeIntervalSince(earlier) >= 1, "one slot at a time, gated on the minimum healthy time: \(starts)")
            }

            // A template whose health check fails: the deploy fails, is rolled back, and
            // orchctl deploy says why with exit 1.
            let broken = try await LaunchedProcess.run(
                orchctl: ["deploy", "-f", try Self.serviceFile(extra: ["-v"], healthPath: "/missing", deadline: "10s")], environment: env,
                within: .seconds(120))
            #expect(broken.status == 1, "\(broken.stderr)")
            #expect(broken.stderr.contains("rolled back to version 2") && broken.stderr.contains("health check failed"), "\(broken.stderr)")
            running = Self.running(try await Self.replicas(cluster))
            #expect(running.count == 3 && running.allSatisfy { $0["version"] as? Int == 2 })
            let service = try await Self.service(cluster)
            #expect((service["deploy"] as? [String: Any])?["state"] as? String == "rolled-back")
            #expect(service["version"] as? Int == 2 && service["latestVersion"] as? Int == 3)

            // A rollback now is refused (the service is back already); ls and ps show it.
            let again = try await LaunchedProcess.run(orchctl: ["service", "rollback", "web"], environment: env)
            #expect(again.status == 1 && again.stderr.contains("back on version 2 already"), "\(again.stderr)")
            let list = try await LaunchedProcess.run(orchctl: ["service", "ls"], environment: env)
            #expect(list.stdout.contains("web") && list.stdout.contains("3/3") && list.stdout.contains("rolled-back"), "\(list.stdout)")
            let ps = try await LaunchedProcess.run(orchctl: ["service", "ps", "web"], environment: env)
            #expect(ps.stdout.contains("web.1") && ps.stdout.contains("web.3") && ps.stdout.contains("health check failed"), "\(ps.stdout)")

            // Removed: every container stops, the service is gone.
            let removed = try await LaunchedProcess.run(orchctl: ["service", "rm", "web"], environment: env, within: .seconds(60))
            #expect(removed.status == 0 && removed.stdout.contains("web removed"), "\(removed.stderr)")
            #expect(try await http(.GET, "\(cluster.api)/services/web").status == 404)
            // Its containers end (the last ones may still be being removed by their worker).
            let nodes = [try cluster.nodeID(of: "svc-a"), try cluster.nodeID(of: "svc-b")]
            try await waitUntil("the service's containers to be gone", within: .seconds(15)) {
                try nodes.allSatisfy { try dockerPS(label: "orch.node=\($0)", runningOnly: true).isEmpty }
            }
        }
    }

    /// GET /services/web/endpoints, decoded; its index from X-Orch-Index.
    static func endpoints(_ cluster: ClusterProcesses, query: String = "") async throws -> (index: UInt64, endpoints: [[String: Any]]) {
        let answer = try await http(.GET, "\(cluster.api)/services/web/endpoints\(query)", headers: [:])
        guard answer.status == 200, let body = try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any],
              let endpoints = body["endpoints"] as? [[String: Any]], let index = answer.headers.first(name: "X-Orch-Index").flatMap(UInt64.init),
              (body["index"] as? NSNumber)?.uint64Value == index else {
            throw TestTimeout(what: "the endpoints with their index, got \(answer.status): \(answer.body.prefix(200))")
        }
        return (index, endpoints)
    }

    /// The catalog lists each replica where it is reached (its published port answers), and a
    /// blocking query on it is answered as soon as a replica's container is killed, without it.
    @Test func theCatalogListsWhereReplicasAnswerAndAWatcherLearnsOfAKilledOneAtOnce() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("cat-a")
            try await cluster.startWorker("cat-b")
            let created = try await LaunchedProcess.run(
                orchctl: ["deploy", "-f", try Self.serviceFile()], environment: ["ORCH_API": cluster.api], within: .seconds(90))
            #expect(created.status == 0, "\(created.stderr)")
            let (index, endpoints) = try await Self.endpoints(cluster)
            let ready = endpoints.filter { $0["ready"] as? Bool == true }
            #expect(ready.count == 3 && Set(ready.compactMap { $0["slot"] as? Int }) == [1, 2, 3], "\(endpoints)")
            for endpoint in ready {
                let address = try #require(endpoint["address"] as? String)
                let port = try #require((endpoint["ports"] as? [[String: Any]])?.first?["hostPort"] as? Int)
                #expect(address == "127.0.0.1")
                _ = try await httpWhenUp("http://\(address):\(port)/")
            }
            let listed = try await LaunchedProcess.run(orchctl: ["service", "endpoints", "web"], environment: ["ORCH_API": cluster.api])
            #expect(listed.status == 0 && listed.stdout.components(separatedBy: " ready").count == 4, "\(listed.stdout)\(listed.stderr)")

            // A watcher waits with the index; the kill of slot 2's container answers it.
            let victim = try #require(ready.first { $0["slot"] as? Int == 2 }?["task"] as? String)
            let clock = ContinuousClock()
            async let watched = Self.endpoints(cluster, query: "?index=\(index)&wait=20s")
            try await Task.sleep(for: .milliseconds(300))
            let killedAt = clock.now
            _ = try runDocker(["kill", try #require(try dockerPS(label: "orch.task=\(victim)", runningOnly: true).first)])
            let (newIndex, after) = try await watched
            let took = clock.now - killedAt
            #expect(newIndex != index)
            #expect(!after.contains { $0["task"] as? String == victim && $0["ready"] as? Bool == true }, "\(after)")
            #expect(took < .seconds(2), "the killed replica left the ready endpoints \(took) after the kill")
            print("catalog: a killed replica left the ready endpoints \(took) after the kill")
            // Its slot is filled again: three ready endpoints, a new task in slot 2.
            try await waitUntil("slot 2 to be ready again", within: .seconds(30)) {
                let ready = try await Self.endpoints(cluster).endpoints.filter { $0["ready"] as? Bool == true }
                return ready.count == 3 && ready.contains { $0["slot"] as? Int == 2 && $0["task"] as? String != victim }
            }
        }
    }

    @Test func aKilledWorkersReplicasRunOnTheOtherOne() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("kill-a")
            try await cluster.startWorker("kill-b")
            let env = ["ORCH_API": cluster.api]
            let created = try await LaunchedProcess.run(orchctl: ["deploy", "-f", try Self.serviceFile(replicas: 4)], environment: env, within: .seconds(90))
            #expect(created.status == 0, "\(created.stderr)")
            let b = try cluster.nodeID(of: "kill-b")
            #expect(Self.running(try await Self.replicas(cluster)).filter { $0.node == b }.count == 2)

            try await cluster.killWorker("kill-b")
            let a = try cluster.nodeID(of: "kill-a")
            try await waitUntil("every replica to run on kill-a", within: .seconds(45)) {
                let running = Self.running(try await Self.replicas(cluster))
                return running.count == 4 && running.allSatisfy { $0.node == a }
            }
            let running = Self.running(try await Self.replicas(cluster))
            #expect(Set(running.compactMap { $0["slot"] as? Int }) == [1, 2, 3, 4])
            #expect(try dockerPS(label: "orch.node=\(a)", runningOnly: true).count == 4, "Docker runs what the manager says")
        }
    }

    @Test func aManagerKilledMidDeployFinishesItAfterTheRestart() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("mgr-a")
            try await cluster.startWorker("mgr-b")
            let env = ["ORCH_API": cluster.api]
            let created = try await LaunchedProcess.run(
                orchctl: ["deploy", "-f", try Self.serviceFile(minHealthy: "3s")], environment: env, within: .seconds(90))
            #expect(created.status == 0, "\(created.stderr)")
            let update = try await http(.PUT, "\(cluster.api)/services/web", body: #"{"task": \#(try Self.task(extra: ["-v"]))}"#)
            #expect(update.status == 200, "\(update.body)")
            // Killed once the first new replica runs, before the deploy can end.
            try await waitUntil("a replica of version 2 to run", within: .seconds(30)) {
                Self.running(try await Self.replicas(cluster)).contains { $0["version"] as? Int == 2 }
            }
            #expect((try await Self.service(cluster)["deploy"] as? [String: Any])?["state"] as? String == "running")
            try await cluster.killManager()
            try await cluster.startManagerAgain()

            try await waitUntil("the deploy to succeed after the restart", within: .seconds(90)) {
                let deploy = try await Self.service(cluster)["deploy"] as? [String: Any]
                return deploy?["state"] as? String == "succeeded"
            }
            let running = Self.running(try await Self.replicas(cluster))
            #expect(running.count == 3 && running.allSatisfy { $0["version"] as? Int == 2 }, "\(running.map { $0["version"] ?? "?" })")
            let nodes = [try cluster.nodeID(of: "mgr-a"), try cluster.nodeID(of: "mgr-b")]
            // The last replica of version 1 was told to stop as the deploy ended: its container
            // goes within its grace period, and none is left over.
            try await waitUntil("no container left over from version 1", within: .seconds(15)) {
                try nodes.flatMap { try dockerPS(label: "orch.node=\($0)", runningOnly: true) }.count == 3
            }
        }
    }

    /// The template of `serviceFile` as JSON text.
    static func task(extra: [String]) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: try serviceFile(extra: extra)))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return String(decoding: try JSONSerialization.data(withJSONObject: object["task"]!), as: UTF8.self)
    }

    /// Bad input over real processes: each is a clear error and changes nothing.
    @Test func badServiceFilesAndUnknownNamesAreClearErrors() async throws {
        try await ClusterProcesses.with { cluster in
            let env = ["ORCH_API": cluster.api]
            let bad = temporaryDirectory("service") + "/bad.json"
            try Data(#"{"name": "Web_1", "replicas": -1, "task": {"image": ""}}"#.utf8).write(to: URL(fileURLWithPath: bad))
            let deploy = try await LaunchedProcess.run(orchctl: ["deploy", "-f", bad], environment: env)
            #expect(deploy.status == 1)
            #expect(deploy.stderr.contains("name:") && deploy.stderr.contains("replicas:") && deploy.stderr.contains("task.image"), "\(deploy.stderr)")
            let create = try await LaunchedProcess.run(orchctl: ["service", "create", "-f", bad], environment: env)
            #expect(create.status == 1 && create.stderr.contains("invalid service"), "\(create.stderr)")
            let ps = try await LaunchedProcess.run(orchctl: ["service", "ps", "nope"], environment: env)
            #expect(ps.status == 1 && ps.stderr == "orchctl: no service named nope\n", "\(ps.stderr)")
            let scale = try await LaunchedProcess.run(orchctl: ["service", "scale", "web"], environment: env)
            #expect(scale.status != 0 && scale.stderr.contains("NAME=REPLICAS"), "\(scale.stderr)")
            // A service file given where a task file goes says what it is.
            let run = try await LaunchedProcess.run(orchctl: ["run", "-f", "data/service-web.json"], environment: env)
            #expect(run.status == 1 && run.stderr.contains("this is a service file"), "\(run.stderr)")
            // The same file twice is one service; another spec under its name is a conflict.
            let file = try Self.serviceFile(replicas: 0)
            #expect(try await LaunchedProcess.run(orchctl: ["service", "create", "-f", file], environment: env).status == 0)
            let same = try await LaunchedProcess.run(orchctl: ["service", "create", "-f", file], environment: env)
            #expect(same.status == 0 && same.stdout.contains("unchanged"), "\(same.stdout)")
            let other = try await LaunchedProcess.run(orchctl: ["service", "create", "-f", try Self.serviceFile(replicas: 1)], environment: env)
            #expect(other.status == 1 && other.stderr.contains("exists already with another spec"), "\(other.stderr)")
            #expect(try await Self.replicas(cluster).isEmpty, "nothing was started")
            // --image changes the template's image only: a new version.
            let image = try await LaunchedProcess.run(orchctl: ["service", "update", "web", "--image", "orch-busybox:other"], environment: env)
            #expect(image.status == 0 && image.stdout.contains("version 2"), "\(image.stdout)\(image.stderr)")
            #expect(try await Self.service(cluster)["image"] as? String == "orch-busybox:other")
            let both = try await LaunchedProcess.run(orchctl: ["service", "update", "web", "--image", "x", "-f", file], environment: env)
            #expect(both.status == 64 && both.stderr.contains("either -f FILE or --image IMAGE"), "\(both.stderr)")
            #expect(try await http(.GET, "\(cluster.api)/tasks?service=nope").status == 404)
        }
    }
}

/// Waits until `condition` holds, checking every 200 ms; a `TestTimeout` after `timeout`.
func waitUntil(_ what: String, within timeout: Duration, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(200))
    }
    throw TestTimeout(what: what)
}
