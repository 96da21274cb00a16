import Foundation
import OrchTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The routing mesh over real processes: a manager, two workers with their own advertise
/// addresses (127.0.0.1 and 127.0.0.2), each running HAProxy on the service's published
/// port, and busybox httpd replicas on Docker that answer with their own host name.
@Suite("End to end: the routing mesh (Docker, HAProxy)", .serialized, .timeLimit(.minutes(8)))
struct MeshProcessTests {
    static let advertise = ["mesh-a": "127.0.0.1", "mesh-b": "127.0.0.2"]

    /// `web`: `replicas` replicas answering `/id` with their container's host name, its
    /// port 8080 published on `publish` in `mode`; `version` goes into the command.
    static func serviceFile(publish: Int, mode: String, replicas: Int = 3, version: String = "v1") throws -> String {
        let script = "hostname > /www/id; echo \(version) > /www/version; exec httpd -f -p 8080 -h /www"
        let file: [String: Any] = [
            "name": "web", "replicas": replicas,
            "task": [
                "image": "orch-busybox:latest", "command": ["sh", "-c", script],
                "ports": [["containerPort": 8080, "publish": publish, "publishMode": mode]],
                "resources": ["cpus": 0.05, "memory": "16MiB"], "stopGracePeriod": "1s",
                "healthCheck": ["path": "/health", "port": 8080, "interval": "500ms", "timeout": "500ms", "failureThreshold": 2],
            ] as [String: Any],
            "update": ["parallelism": 1, "order": "start-first", "healthyDeadline": "20s", "minHealthyTime": "1s"],
        ]
        let path = temporaryDirectory("mesh") + "/web.json"
        try JSONSerialization.data(withJSONObject: file).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Two workers, each with the mesh on its own address.
    static func withMesh(_ body: (ClusterProcesses) async throws -> Void) async throws {
        try await ClusterProcesses.with { cluster in
            for (name, address) in advertise.sorted(by: { $0.key < $1.key }) {
                try await cluster.startWorker(name, options: ["--advertise-address", address])
            }
            try await body(cluster)
        }
    }

    static func loadBalancerPID(_ cluster: ClusterProcesses, _ worker: String) -> Int32? {
        guard let directory = cluster.workerStateDirs[worker],
              let text = try? String(contentsOfFile: "\(directory)/haproxy/haproxy.pid", encoding: .utf8) else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// A port free on both advertise addresses.
    static func freeMeshPort() throws -> Int { try freePort(onEvery: advertise.values.sorted()) }

    /// `GET /id` through `host:port`: the replica's host name, or nil when it failed.
    static func replicaID(_ host: String, _ port: Int) async -> String? {
        guard let answer = try? await http(.GET, "http://\(host):\(port)/id", token: .none), answer.status == 200 else { return nil }
        return answer.body.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Waits until `host:port` answers through the mesh.
    static func waitForMesh(_ host: String, _ port: Int, within timeout: Duration = .seconds(10), until condition: (String) -> Bool = { _ in true }) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let id = await replicaID(host, port), condition(id) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestTimeout(what: "\(host):\(port) to answer through the load balancer")
    }

    /// The host names of the service's running replicas (their containers' short ids).
    static func replicaHostnames(_ cluster: ClusterProcesses) async throws -> Set<String> {
        Set(ServiceProcessTests.running(try await ServiceProcessTests.replicas(cluster)).compactMap { task in
            (task["container"] as? String).map { String($0.prefix(12)) }
        })
    }

    /// `orchctl deploy -f FILE`: its progress (stderr).
    @discardableResult
    static func deploy(_ cluster: ClusterProcesses, _ file: String) async throws -> String {
        let deployed = try await LaunchedProcess.run(orchctl: ["deploy", "-f", file], environment: ["ORCH_API": cluster.api], within: .seconds(120))
        #expect(deployed.status == 0, "\(deployed.stderr)")
        return deployed.stderr
    }

    @Test func everyWorkersPublishedPortReachesEveryReplicaAndAKilledOneFailsNoRequest() async throws {
        try await Self.withMesh { cluster in
            let port = try Self.freeMeshPort()
            try await Self.deploy(cluster, try Self.serviceFile(publish: port, mode: "http"))
            let hostnames = try await Self.replicaHostnames(cluster)
            #expect(hostnames.count == 3)

            // 300 requests through each worker's port: every one answered, by every replica.
            for address in Self.advertise.values.sorted() {
                try await Self.waitForMesh(address, port)
                var seen: [String: Int] = [:]
                var failed = 0
                for _ in 0..<300 {
                    if let id = await Self.replicaID(address, port) { seen[id, default: 0] += 1 } else { failed += 1 }
                }
                #expect(failed == 0, "through \(address):\(port): \(failed) of 300 failed")
                #expect(Set(seen.keys) == hostnames, "through \(address):\(port), replicas seen: \(seen), running: \(hostnames)")
            }

            // A replica killed under load: no request fails, and the others keep answering. The
            // one request (of one client) that the dead replica was answering at that instant
            // may be cut once its response has begun (no proxy can take back bytes sent); every
            // other request must succeed: none refused, none answered 5xx.
            let victim = try #require(ServiceProcessTests.running(try await ServiceProcessTests.replicas(cluster)).first)
            let container = try #require(victim["container"] as? String)
            async let load = Self.requests(through: Self.advertise.values.sorted(), port: port, for: .seconds(4))
            try await Task.sleep(for: .milliseconds(800))
            _ = try runDocker(["kill", container])
            let (answered, failures) = await load
            #expect(answered > 100, "the load ran: \(answered) answered")
            let cut = failures.filter { $0.contains("stream ended at an unexpected time") }
            #expect(cut.count <= 1 && failures.count == cut.count,
                    "\(failures.count) requests failed after a replica was killed: \(failures.prefix(5))")
            if !cut.isEmpty { print("mesh: the request in flight on the killed replica was cut mid-response: \(cut[0])") }
        }
    }

    /// Requests in a loop through every address in turn for `duration`: how many were
    /// answered and what failed.
    static func requests(through addresses: [String], port: Int, for duration: Duration) async -> (Int, [String]) {
        let deadline = ContinuousClock.now + duration
        var answered = 0
        var failures: [String] = []
        var turn = 0
        while ContinuousClock.now < deadline {
            let address = addresses[turn % addresses.count]
            turn += 1
            do {
                let answer = try await http(.GET, "http://\(address):\(port)/id", token: .none)
                if answer.status == 200 { answered += 1 } else { failures.append("\(address): \(answer.status) \(answer.body.prefix(80))") }
            } catch {
                failures.append("\(address): \(error)")
            }
        }
        return (answered, failures)
    }

    @Test func aRollingUpdateUnderLoadFailsNoRequestOnKeptAndNewConnections() async throws {
        try await Self.withMesh { cluster in
            let port = try Self.freeMeshPort()
            try await Self.deploy(cluster, try Self.serviceFile(publish: port, mode: "http"))
            for address in Self.advertise.values.sorted() { try await Self.waitForMesh(address, port) }

            // A steady load from Python: keep-alive sessions and a new connection per request,
            // through both workers, at least 100 requests a second in all.
            let script = """
            import json, sys, threading, time, requests
            port, seconds = int(sys.argv[1]), float(sys.argv[2])
            hosts = ["127.0.0.1", "127.0.0.2"]
            lock = threading.Lock()
            result = {"ok": 0, "failed": 0, "errors": [], "versions": {}}
            def loop(host, keep):
                session = requests.Session() if keep else None
                end = time.time() + seconds
                while time.time() < end:
                    try:
                        getter = session.get if keep else requests.get
                        answer = getter(f"http://{host}:{port}/version", timeout=5, headers={} if keep else {"Connection": "close"})
                        good = answer.status_code == 200
                        with lock:
                            if good:
                                result["ok"] += 1
                                version = answer.text.strip()
                                result["versions"][version] = result["versions"].get(version, 0) + 1
                            else:
                                result["failed"] += 1
                                result["errors"].append(f"{host} keep={keep}: {answer.status_code}")
                    except Exception as error:
                        with lock:
                            result["failed"] += 1
                            result["errors"].append(f"{host} keep={keep}: {error}")
                    time.sleep(0.01)
            threads = [threading.Thread(target=loop, args=(h, k)) for h in hosts for k in (True, False)]
            for t in threads: t.start()
            for t in threads: t.join()
            result["errors"] = result["errors"][:10]
            print(json.dumps(result))
            """
            let seconds = 25
            let load = try LaunchedProcess(executable: try python(), ["-c", script, String(port), String(seconds)])
            try await Task.sleep(for: .seconds(2))
            try await Self.deploy(cluster, try Self.serviceFile(publish: port, mode: "http", version: "v2"))
            let status = try await load.waitForExit(within: .seconds(Double(seconds + 30)))
            #expect(status == 0, "\(load.stderr)")
            let result = try #require(try JSONSerialization.jsonObject(with: Data(load.stdout.utf8)) as? [String: Any], "\(load.stdout) \(load.stderr)")
            let ok = result["ok"] as? Int ?? 0, failed = result["failed"] as? Int ?? -1
            let versions = result["versions"] as? [String: Int] ?? [:]
            #expect(failed == 0, "failed requests during the rolling update: \(result["errors"] ?? "")")
            #expect(Double(ok) / Double(seconds) >= 100, "the load reached \(Double(ok) / Double(seconds)) requests a second")
            #expect(versions["v1", default: 0] > 0 && versions["v2", default: 0] > 0, "both versions answered during the update: \(versions)")
            print("mesh: rolling update under load: \(ok) requests answered, \(failed) failed, by version \(versions)")
        }
    }

    @Test func aKilledHAProxyIsStartedAgainAndServesWithinTwoSeconds() async throws {
        try await Self.withMesh { cluster in
            let port = try Self.freeMeshPort()
            try await Self.deploy(cluster, try Self.serviceFile(publish: port, mode: "tcp", replicas: 2))
            try await Self.waitForMesh("127.0.0.2", port)
            let old = try #require(Self.loadBalancerPID(cluster, "mesh-b"))
            kill(old, SIGKILL)
            let killed = ContinuousClock.now
            try await Self.waitForMesh("127.0.0.2", port, within: .seconds(2))
            let back = ContinuousClock.now - killed
            let new = try #require(Self.loadBalancerPID(cluster, "mesh-b"))
            #expect(new != old, "a new HAProxy runs")
            print("mesh: HAProxy killed, serving again after \(back)")
            #expect(back < .seconds(2))
            #expect(cluster.workers["mesh-b"]?.output.contains("HAProxy exited") == true)
        }
    }

    @Test func aWorkerWithoutHAProxySaysSoForAServiceThatPublishesAPort() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("mesh-none", options: ["--haproxy", "/nonexistent/haproxy"])
            let worker = try #require(cluster.workers["mesh-none"])
            #expect(worker.output.contains("no routing mesh on this worker") && worker.output.contains("--haproxy"), "\(worker.output.suffix(400))")
            let port = try Self.freeMeshPort()
            let progress = try await Self.deploy(cluster, try Self.serviceFile(publish: port, mode: "tcp", replicas: 1))
            // The user who deploys is told too, and the service says so for as long as it lasts.
            #expect(progress.contains("warning: published port \(port) listens on no worker") && progress.contains("--haproxy PATH"), "\(progress)")
            let service = try await http(.GET, "\(cluster.api)/services/web")
            #expect(service.body.contains("no load balancer") || service.body.contains("runs a load balancer"), "\(service.body.prefix(600))")
            try await worker.waitForOutput("service web publishes port \(port) but this worker cannot balance it", within: .seconds(10))
            #expect(worker.output.contains("apt-get install haproxy"))
            #expect(canBind("127.0.0.1", port), "nothing listens on the published port")
        }
    }

    /// A task in a container asks for `web.service.orch:PORT` by name (busybox's wget): the
    /// worker's DNS for containers gives its load balancer, which reaches a replica of web.
    @Test func aTaskReachesAnotherServiceByNameFromInsideItsContainer() async throws {
        try await Self.withMesh { cluster in
            let port = try Self.freeMeshPort()
            try await Self.deploy(cluster, try Self.serviceFile(publish: port, mode: "http"))
            let hostnames = try await Self.replicaHostnames(cluster)
            let worker = try #require(cluster.workers["mesh-a"])
            #expect(worker.output.contains("containers resolve NAME.service.orch at"), "\(worker.output.suffix(600))")
            let client: [String: Any] = [
                "image": "orch-busybox:latest", "name": "client",
                "command": ["sh", "-c", "for i in 1 2 3 4 5 6; do wget -qO- http://web.service.orch:\(port)/id; done"],
                "restartPolicy": ["mode": "never"], "constraints": ["node": "mesh-a"],
            ]
            let body = String(decoding: try JSONSerialization.data(withJSONObject: client), as: UTF8.self)
            let id = try await cluster.submit(body)
            let ended = try await cluster.waitForTasks("the client to end", within: .seconds(30)) { tasks in
                tasks.contains { $0["id"] as? String == id && ["completed", "failed"].contains($0.state) }
            }
            let task = try #require(ended.first { $0["id"] as? String == id })
            let logs = try await http(.GET, "\(cluster.api)/tasks/\(id)/logs")
            #expect(task.state == "completed", "the client: \(task) \(logs.body)")
            let answered = Set(logs.body.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) })
            #expect(!answered.isEmpty && answered.isSubset(of: hostnames), "answers \(answered), replicas \(hostnames)")
        }
    }
}
