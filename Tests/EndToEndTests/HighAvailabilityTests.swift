import Foundation
import NIOHTTP1
import OrchTestSupport
import Testing

/// Several managers on one PostgreSQL (a server of the test's own), two workers and real
/// containers, as real processes: one manager leads by the lease, the others follow; a
/// leader killed is replaced and the workers follow the new one with every task and the
/// service intact and no container restarted; a leader stopped hands over at once; a
/// follower answers REST with a redirect to the leader, which orchctl follows.
@Suite("Several managers on PostgreSQL (processes, Docker)", .serialized, .timeLimit(.minutes(4)))
struct HighAvailabilityTests {
    @Test func aKilledLeaderIsReplacedAStoppedOneHandsOverAndNothingIsRestarted() async throws {
        try await PostgresServer.with { server in
            try await ManagerGroup.with(server: server, names: ["m1", "m2", "m3"]) { group in
                try await group.startWorker("w1")
                try await group.startWorker("w2")
                for index in 1...10 {
                    let answer = try await group.request(.POST, "/tasks", via: "m1",
                        body: #"{"name": "t\#(index)", "image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.05, "memory": "16MiB"}}"#)
                    #expect(answer.status == 201, "\(answer.body)")
                }
                let service = try await group.request(.POST, "/services", via: "m1", body: #"""
                    {"name": "web", "replicas": 2, "task": {"image": "orch-busybox:latest", "command": ["sleep", "600"],
                     "resources": {"cpus": 0.05, "memory": "16MiB"}}}
                    """#)
                #expect(service.status == 201, "\(service.body)")
                let before = try await group.waitForRunning(12, via: "m1")
                #expect(Set(before.values.map(\.node)).count == 2, "spread over both workers: \(before)")

                // SIGKILL the leader: another takes the lease once it expires, the workers follow.
                let killed = ContinuousClock.now
                try await group.kill("m1", signal: SIGKILL)
                let (second, leaderAfter) = try await group.waitForLeader(among: ["m2", "m3"], since: killed, within: .seconds(15))
                let attachedAfter = try await group.waitForNodesUp(2, via: second, since: killed, within: .seconds(20))
                let afterKill = try await group.waitForRunning(12, via: second)
                #expect(afterKill == before, "every task on the same container, attempt and node after the kill")
                let web = try await group.request(.GET, "/services/web", via: second)
                #expect(web.status == 200 && web.body.contains(#""replicas":2"#), "the service is intact: \(web.body)")
                #expect(try group.runningContainers() == Set(before.values.map(\.container)), "no container restarted or added")
                print("ha: the leader SIGKILLed: \(second) leads after \(leaderAfter), both workers attached after \(attachedAfter)")

                // SIGTERM the new leader: it releases the lease, the last one takes it at once.
                let third = second == "m2" ? "m3" : "m2"
                let stopped = ContinuousClock.now
                try await group.kill(second, signal: SIGTERM)
                let (handedTo, handover) = try await group.waitForLeader(among: [third], since: stopped, within: .seconds(10))
                #expect(handedTo == third)
                #expect(handover < .seconds(3), "a planned stop hands over at once, not after the lease: \(handover)")
                let reattached = try await group.waitForNodesUp(2, via: third, since: stopped, within: .seconds(20))
                let afterHandover = try await group.waitForRunning(12, via: third)
                #expect(afterHandover == before, "every task intact after the handover")
                #expect(try group.runningContainers() == Set(before.values.map(\.container)))
                #expect(group.output(of: second).contains("released the lease"), "\(group.output(of: second))")
                print("ha: the leader SIGTERMed: \(third) leads after \(handover), both workers attached after \(reattached)")

                // A task submitted now runs: the third manager acts.
                let after = try await group.request(.POST, "/tasks", via: third, body: #"{"name": "after", "image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.05, "memory": "16MiB"}}"#)
                #expect(after.status == 201, "\(after.body)")
                _ = try await group.waitForRunning(13, via: third)
            }
        }
    }

    /// The leader runs in a network namespace of the test's, and reaches the database (and
    /// its workers reach it) over the namespace's link; the link is cut, silently. It must
    /// stop acting within 4 s of its last renewal, another must lead, and nothing the cut-off
    /// leader tried to write after the cut (a task submitted to it then; its silent workers
    /// marked down) may be in the store.
    @Test func aLeaderCutOffFromTheDatabaseStopsActingAndCommitsNothing() async throws {
        let namespace = try NetworkNamespace.create()
        defer { namespace.remove() }
        try await PostgresServer.with(alsoOn: [namespace.hostAddress], trusting: ["\(namespace.insideAddress)/32"]) { server in
            try await ManagerGroup.with(server: server, names: ["m1", "m2", "m3"], namespaces: ["m1": namespace]) { group in
                try await group.startWorker("w1")
                try await group.startWorker("w2")
                for index in 1...10 {
                    let answer = try await group.request(.POST, "/tasks", via: "m1",
                        body: #"{"name": "t\#(index)", "image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.05, "memory": "16MiB"}}"#)
                    #expect(answer.status == 201, "\(answer.status) \(answer.body)")
                }
                let service = try await group.request(.POST, "/services", via: "m1", body: #"{"name": "web", "replicas": 2, "task": {"image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.05, "memory": "16MiB"}}}"#)
                #expect(service.status == 201, "\(service.status) \(service.body)")
                let before = try await group.waitForRunning(12, via: "m1")

                let cut = ContinuousClock.now
                namespace.cut()
                // A task submitted to it now (over its own loopback, inside the namespace): it
                // takes it and tries to write it, and is refused once it stops acting, 4 s at
                // most after its last renewal. Its silent workers are written down too, or not,
                // as the race with its step-down goes; none of it may reach the store.
                let late = try await group.request(.POST, "/tasks", via: "m1",
                    body: #"{"name": "after-the-cut", "image": "orch-busybox:latest", "command": ["sleep", "600"]}"#)
                #expect(late.status == 503, "refused, never acknowledged: \(late.status) \(late.body)")
                let steppedDown = try await group.waitForOutput("stopped leading: no renewal of the lease", of: "m1", within: .seconds(10))
                let stoppedAfter = steppedDown - cut
                #expect(stoppedAfter < .seconds(5), "stops acting within 4 s of its last renewal (and a log line's delay): \(stoppedAfter)")

                let (leader, leaderAfter) = try await group.waitForLeader(among: ["m2", "m3"], since: cut, within: .seconds(15))
                _ = try await group.waitForNodesUp(2, via: leader, since: cut, within: .seconds(20))
                let after = try await group.waitForRunning(12, via: leader)
                #expect(after == before, "the same containers and attempts: nothing of the cut-off leader's is in the store")
                let web = try await group.request(.GET, "/services/web", via: leader)
                #expect(web.status == 200 && web.body.contains(#""replicas":2"#), "the service is intact: \(web.body.prefix(500))")
                #expect(try group.runningContainers() == Set(before.values.map(\.container)), "no container restarted or added")
                let events = try await group.request(.GET, "/events?limit=1000", via: leader)
                #expect(!events.body.contains("silent for") && !events.body.contains("lost") && !events.body.contains("after-the-cut"),
                        "no event of the cut-off leader: \(events.body.suffix(3000))")
                let tasks = try await group.request(.GET, "/tasks", via: leader)
                #expect(!tasks.body.contains("after-the-cut"), "the task it took after the cut is not in the store")
                print("ha: the leader cut off from the database: it stopped acting after \(stoppedAfter), \(leader) leads after \(leaderAfter)")

                // The link heals: the old leader follows, and still nothing of its is written.
                namespace.heal()
                let deadline = ContinuousClock.now + .seconds(15)
                var health = ""
                while ContinuousClock.now < deadline {
                    health = (try? await group.request(.GET, "/healthz", via: "m1"))?.body ?? ""
                    if health.contains(#""role":"follower""#) && health.contains(#""leader":"\#(leader)""#) { break }
                    try await Task.sleep(for: .milliseconds(200))
                }
                #expect(health.contains(#""role":"follower""#), "the old leader follows once it hears the database again: \(health)")
                try await Task.sleep(for: .seconds(1))
                #expect(try await group.waitForRunning(12, via: leader) == before)
                let later = try await group.request(.GET, "/events?limit=1000", via: leader)
                #expect(!later.body.contains("silent for") && !later.body.contains("after-the-cut"), "\(later.body.suffix(2000))")
                #expect(!(try await group.request(.GET, "/tasks", via: leader)).body.contains("after-the-cut"))
            }
        }
    }

    @Test func aFollowerRedirectsReadsAndWritesToTheLeaderAndOrchctlFollows() async throws {
        try await PostgresServer.with { server in
            try await ManagerGroup.with(server: server, names: ["m1", "m2"]) { group in
                let leader = group.api(of: "m1"), follower = group.api(of: "m2")
                let token = TestToken.bearer(group.adminToken)

                let health = try await httpOnce(.GET, "\(follower)/healthz", token: .none)
                #expect(health.status == 200 && health.body.contains(#""role":"follower""#) && health.body.contains(#""leader":"m1""#), "\(health.body)")
                let leaderHealth = try await httpOnce(.GET, "\(leader)/healthz", token: .none)
                #expect(leaderHealth.body.contains(#""role":"leader""#) && leaderHealth.body.contains(#""epoch":1"#), "\(leaderHealth.body)")

                // Reads and writes: 307 to the same path and query on the leader, method and body kept.
                let read = try await httpOnce(.GET, "\(follower)/tasks?state=running", token: token)
                #expect(read.status == 307, "\(read.status) \(read.body)")
                #expect(read.headers.first(name: "Location") == "\(leader)/tasks?state=running")
                #expect(read.body.contains("not_leader") && read.body.contains("m1 leads"), "\(read.body)")
                let write = try await httpOnce(.POST, "\(follower)/tasks", body: #"{"name": "via-follower", "image": "orch-busybox:latest"}"#, token: token)
                #expect(write.status == 307 && write.headers.first(name: "Location") == "\(leader)/tasks", "\(write.status) \(write.body)")
                let none = try await httpOnce(.GET, "\(leader)/tasks", token: token).body
                #expect((try JSONSerialization.jsonObject(with: Data(none.utf8)) as? [Any])?.isEmpty == true, "the follower made nothing itself: \(none)")
                // Whoever has no token learns nothing of the leader.
                let anonymous = try await httpOnce(.GET, "\(follower)/tasks", token: .none)
                #expect(anonymous.status == 401 && anonymous.headers.first(name: "Location") == nil, "\(anonymous.status)")

                // Every manager lists the managers, and says who leads.
                let managers = try await httpOnce(.GET, "\(follower)/managers", token: token)
                #expect(managers.status == 200, "\(managers.body)")
                let list = try #require(try JSONSerialization.jsonObject(with: Data(managers.body.utf8)) as? [[String: Any]])
                #expect(Set(list.compactMap { $0["name"] as? String }) == ["m1", "m2"], "\(managers.body)")
                #expect(list.first { $0["name"] as? String == "m1" }?["role"] as? String == "leader", "\(managers.body)")

                // orchctl pointed at the follower works: it follows the redirect with its token.
                let file = temporaryDirectory("ha-task") + "/task.json"
                try #"{"name": "via-orchctl", "image": "orch-busybox:latest", "command": ["sleep", "60"]}"#.write(toFile: file, atomically: true, encoding: .utf8)
                let environment = ["ORCH_TOKEN": group.adminToken, "ORCH_API": follower]
                let run = try await LaunchedProcess.run(orchctl: ["run", "-f", file], environment: environment, within: .seconds(20))
                #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
                let status = try await LaunchedProcess.run(orchctl: ["status"], environment: environment, within: .seconds(20))
                #expect(status.status == 0 && status.stdout.contains("via-orchctl"), "\(status.stdout)\(status.stderr)")
                let shown = try await LaunchedProcess.run(orchctl: ["managers"], environment: environment, within: .seconds(20))
                #expect(shown.status == 0 && shown.stdout.contains("m1") && shown.stdout.contains("leader") && shown.stdout.contains("follower"),
                        "\(shown.stdout)\(shown.stderr)")
                let tasks = try await httpOnce(.GET, "\(leader)/tasks", token: token)
                #expect(tasks.body.contains("via-orchctl"), "made on the leader: \(tasks.body)")

                // A token made on the leader is taken by the follower within a few seconds.
                let made = try await httpOnce(.POST, "\(leader)/tokens", body: #"{"name": "reader", "role": "viewer"}"#, token: token)
                let reader = try #require(try JSONSerialization.jsonObject(with: Data(made.body.utf8)) as? [String: Any])["token"] as? String
                let deadline = ContinuousClock.now + .seconds(10)
                var answered = 0
                while ContinuousClock.now < deadline {
                    answered = try await httpOnce(.GET, "\(follower)/managers", token: .bearer(try #require(reader))).status
                    if answered == 200 { break }
                    try await Task.sleep(for: .milliseconds(200))
                }
                #expect(answered == 200, "the follower reads the tokens again")
            }
        }
    }
}

/// Managers on one PostgreSQL as real processes, each with its own data directory and
/// ports, and workers given every manager's cluster port; all killed at the end, and every
/// container of their nodes removed.
final class ManagerGroup: @unchecked Sendable {
    struct Member {
        var httpPort: Int
        var wirePort: Int
        var data: String
        var process: LaunchedProcess
        /// Run inside this namespace (its REST on the namespace's own loopback), if any.
        var namespace: NetworkNamespace?
        var wireHost: String { namespace?.insideAddress ?? "127.0.0.1" }
    }

    let server: PostgresServer
    private(set) var members: [String: Member] = [:]
    private(set) var order: [String] = []
    private var workers: [String: LaunchedProcess] = [:]
    private var workerStateDirs: [String: String] = [:]
    /// The admin token the first manager made (every manager takes it: it is in the store).
    private(set) var adminToken = ""

    init(server: PostgresServer) {
        self.server = server
    }

    static func with(
        server: PostgresServer, names: [String], namespaces: [String: NetworkNamespace] = [:], _ body: (ManagerGroup) async throws -> Void
    ) async throws {
        let group = ManagerGroup(server: server)
        do {
            for (index, name) in names.enumerated() {
                try await group.launch(name, in: namespaces[name])
                // The first leads: the others start once it does, and are ready once they know
                // where it serves (they read the managers from the store every second).
                if index == 0 {
                    try await group.members[name]!.process.waitForOutput("leading with epoch")
                } else {
                    try await group.waitUntilItKnowsTheLeader(name)
                }
            }
            group.adminToken = try String(contentsOfFile: group.members[names[0]]!.data + "/admin.token", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            try await body(group)
        } catch {
            group.tearDown()
            throw error
        }
        group.tearDown()
    }

    func launch(_ name: String, in namespace: NetworkNamespace? = nil) async throws {
        let http = try freePort(), wire = try freePort()
        let data = temporaryDirectory("manager-\(name)")
        let arguments = [
            "manager", "--store", namespace.map { server.url(host: $0.hostAddress) } ?? server.url(), "--name", name, "--data", data,
            "--http", "127.0.0.1:\(http)", "--wire", "\(namespace?.insideAddress ?? "127.0.0.1"):\(wire)", "--dns", "off",
            "--heartbeat-interval", "200ms", "--heartbeat-grace", "2s", "--scheduler", "spread",
        ]
        let process: LaunchedProcess
        if let namespace {
            let inside = namespace.command(orchctlPath, arguments)
            process = try LaunchedProcess(executable: inside.executable, inside.arguments)
        } else {
            process = try LaunchedProcess(orchctl: arguments)
        }
        members[name] = Member(httpPort: http, wirePort: wire, data: data, process: process, namespace: namespace)
        order.append(name)
        try await process.waitForOutput("listening on 127.0.0.1:\(http)")
    }

    func waitUntilItKnowsTheLeader(_ name: String) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if let health = try? await request(.GET, "/healthz", via: name), health.body.contains("leaderURL") { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestTimeout(what: "\(name) to know where the leader serves: \(output(of: name).suffix(1500))")
    }

    func api(of name: String) -> String { "http://127.0.0.1:\(members[name]!.httpPort)" }

    /// Waits until `name`'s output holds `text`; when it was first seen.
    func waitForOutput(_ text: String, of name: String, within timeout: Duration) async throws -> ContinuousClock.Instant {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if output(of: name).contains(text) { return ContinuousClock.now }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestTimeout(what: "\"\(text)\" from \(name): \(output(of: name).suffix(2000))")
    }

    func output(of name: String) -> String { members[name]?.process.output ?? "" }

    func kill(_ name: String, signal: Int32) async throws {
        members[name]?.process.signal(signal)
        _ = try await members[name]?.process.waitForExit(within: .seconds(20))
    }

    /// A worker given every manager's cluster port, the last started first (so that it is
    /// sent on by a follower to the leader).
    func startWorker(_ name: String) async throws {
        let stateDir = temporaryDirectory("worker-\(name)")
        workerStateDirs[name] = stateDir
        let managers = order.reversed().map { "\(members[$0]!.wireHost):\(members[$0]!.wirePort)" }.joined(separator: ",")
        workers[name] = try LaunchedProcess(orchctl: [
            "worker", "--manager", managers, "--http", "127.0.0.1:0", "--name", name, "--state-dir", stateDir,
            "--cpus", "1", "--memory", "1GiB", "--join-token-file", "\(members[order[0]]!.data)/join.token",
        ])
        try await workers[name]!.waitForOutput("connected to the manager")
    }

    /// A request to `name`'s REST gateway, not following redirects (by curl inside its
    /// namespace for a manager in one).
    func request(_ method: HTTPMethod, _ path: String, via name: String, body: String? = nil) async throws -> HTTPAnswer {
        guard let namespace = members[name]?.namespace else {
            return try await httpOnce(method, api(of: name) + path, body: body, token: .bearer(adminToken))
        }
        var arguments = ["-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}", "-X", method.rawValue, "-H", "Authorization: Bearer \(adminToken)"]
        if let body { arguments += ["-H", "Content-Type: application/json", "--data-binary", body] }
        let inside = namespace.command("/usr/bin/curl", arguments + [api(of: name) + path])
        let curl = try LaunchedProcess(executable: inside.executable, inside.arguments)
        _ = try await curl.waitForExit(within: .seconds(15))
        let text = curl.stdout
        let split = text.lastIndex(of: "\n") ?? text.startIndex
        return HTTPAnswer(status: Int(text[split...].trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, headers: [:], body: String(text[..<split]))
    }

    struct Placement: Hashable {
        var container: String
        var attempt: Int
        var node: String
    }

    /// Waits until `count` tasks run (each with its container); they by id.
    func waitForRunning(_ count: Int, via name: String, within timeout: Duration = .seconds(40)) async throws -> [String: Placement] {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            if let answer = try? await request(.GET, "/tasks", via: name), answer.status == 200,
               let tasks = try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]] {
                last = answer.body
                let running = tasks.filter { $0["state"] as? String == "running" }
                if running.count == count, tasks.count == count {
                    var placements: [String: Placement] = [:]
                    for task in running {
                        guard let id = task["id"] as? String, let container = task["container"] as? String else { continue }
                        placements[id] = Placement(container: container, attempt: task["attempt"] as? Int ?? 0, node: task["node"] as? String ?? "")
                    }
                    if placements.count == count { return placements }
                }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestTimeout(what: "\(count) tasks running via \(name); last: \(last.prefix(2000))")
    }

    /// Waits until one of `names` says in `/healthz` that it leads; it, and the time since `since`.
    func waitForLeader(among names: [String], since: ContinuousClock.Instant, within timeout: Duration) async throws -> (String, Duration) {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            for name in names {
                if let health = try? await request(.GET, "/healthz", via: name), health.body.contains(#""role":"leader""#) {
                    return (name, ContinuousClock.now - since)
                }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestTimeout(what: "one of \(names) to lead; their output: \(names.map { output(of: $0).suffix(1500) })")
    }

    /// Waits until `count` nodes are up as `name` sees them; the time since `since`.
    func waitForNodesUp(_ count: Int, via name: String, since: ContinuousClock.Instant, within timeout: Duration) async throws -> Duration {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            if let answer = try? await request(.GET, "/nodes", via: name), answer.status == 200,
               let nodes = try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]] {
                last = answer.body
                if nodes.filter({ $0["state"] as? String == "up" }).count == count { return ContinuousClock.now - since }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestTimeout(what: "\(count) nodes up via \(name); last: \(last.prefix(1500)); workers: \(workers.values.map { $0.output.suffix(1500) })")
    }

    /// The full ids of the running containers of the workers' nodes.
    func runningContainers() throws -> Set<String> {
        var ids = Set<String>()
        for directory in workerStateDirs.values {
            let node = try String(contentsOfFile: directory + "/node-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            ids.formUnion(try dockerPS(label: "orch.node=\(node)", runningOnly: true, fullIDs: true))
        }
        return ids
    }

    func tearDown() {
        for worker in workers.values { worker.signal(SIGKILL) }
        for member in members.values { member.process.signal(SIGKILL) }
        for directory in workerStateDirs.values {
            if let text = try? String(contentsOfFile: "\(directory)/haproxy/haproxy.pid", encoding: .utf8),
               let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 {
                Glibc.kill(pid, SIGKILL)
            }
            guard let node = try? String(contentsOfFile: directory + "/node-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) else { continue }
            let ids = (try? dockerPS(label: "orch.node=\(node)")) ?? []
            if !ids.isEmpty { _ = try? runDocker(["rm", "-f"] + ids) }
        }
    }
}
