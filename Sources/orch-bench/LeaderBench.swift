import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OrchTestSupport

/// Leader changes among three managers on one PostgreSQL (a server of the benchmark's own,
/// with PostgreSQL's durable defaults), two workers and real containers: the leader
/// SIGKILLed, time to a new leader and to every worker attached to it; the leader SIGTERMed
/// (a planned handover), the same. The manager stopped is started again as a follower
/// before the next change.
struct LeaderBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leader",
        abstract: "Several managers: the time to a new leader and to every worker attached, after a kill and after a planned stop.",
        discussion: """
            Examples:
              orch-bench leader --kills 20 --handovers 20
              orch-bench leader --smoke
            """)

    @Option(help: "Leaders killed with SIGKILL.")
    var kills: Int = 20

    @Option(help: "Leaders stopped with SIGTERM (a planned handover).")
    var handovers: Int = 20

    @Option(help: "Tasks running on the workers meanwhile.")
    var tasks: Int = 4

    @Flag(help: "Tiny sizes, for CI.")
    var smoke = false

    func run() async throws {
        let kills = smoke ? 1 : self.kills, handovers = smoke ? 1 : self.handovers, count = smoke ? 1 : tasks
        print("leader: 3 managers on one PostgreSQL, 2 workers, \(count) tasks; \(kills) kills, \(handovers) handovers; \(machineDescription())")
        try await PostgresServer.with(durable: true) { server in
            let trio = try await Trio.start(server: server)
            defer { trio.stop() }
            for index in 0..<count {
                let answer = try await trio.send(.POST, "/tasks", body: #"{"name": "t\#(index)", "image": "orch-busybox:latest", "command": ["sleep", "3600"], "resources": {"cpus": 0.05, "memory": "16MiB"}}"#)
                guard answer.status == 201 else { throw BenchError("the task was refused: \(answer.status) \(String(buffer: answer.body))") }
            }
            try await waitUntil("the tasks running", within: .seconds(120)) { try await trio.running() == count }
            let containers = try await trio.containers()

            var rows: [[String]] = []
            for (signal, changes, label) in [(SIGKILL, kills, "SIGKILL"), (SIGTERM, handovers, "SIGTERM")] where changes > 0 {
                var leading: [Double] = [], attached: [Double] = []
                for _ in 0..<changes {
                    let (toLeader, toWorkers) = try await trio.changeLeader(signal: signal)
                    leading.append(seconds(toLeader))
                    attached.append(seconds(toWorkers))
                }
                rows.append([label, "\(changes)", format(median(leading), 3), format(percentile(leading, 99), 3),
                             format(median(attached), 3), format(percentile(attached, 99), 3)])
            }
            table(["leader stopped by", "changes", "new leader p50 s", "p99 s", "workers attached p50 s", "p99 s"], rows)
            let after = try await trio.containers()
            print("containers: \(after == containers ? "the same \(containers.count), none restarted" : "CHANGED: \(containers.count) before, \(after.count) after")")
            print("goals: a kill under 8 s to a new leader and 10 s to every worker attached (Swarm's Raft election alone takes 10 s or more); a planned handover under 1 s")
        }
    }
}

/// Three managers and two workers as processes; which manager leads is read from /healthz.
private final class Trio: @unchecked Sendable {
    struct Member {
        var http: Int
        var wire: Int
        var data: String
        var process: LaunchedProcess?
        var api: String { "http://127.0.0.1:\(http)" }
    }

    let server: PostgresServer
    var members: [String: Member] = [:]
    let names = ["m1", "m2", "m3"]
    var workers: [LaunchedProcess] = []
    var workerDirectories: [String] = []
    var token = ""
    var leader = "m1"

    init(server: PostgresServer) {
        self.server = server
    }

    static func start(server: PostgresServer) async throws -> Trio {
        let trio = Trio(server: server)
        for name in trio.names {
            trio.members[name] = Member(http: try freePort(), wire: try freePort(), data: temporaryDirectory("leader-\(name)"))
            try trio.launch(name)
            if name == "m1" {
                try await waitUntil("m1 to lead", within: .seconds(60)) { try await trio.role(of: "m1") == "leader" }
                trio.token = try String(contentsOfFile: trio.members["m1"]!.data + "/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } else {
                try await trio.waitUntilFollowing(name)
            }
        }
        let managers = trio.names.map { "127.0.0.1:\(trio.members[$0]!.wire)" }.joined(separator: ",")
        for index in 1...2 {
            let directory = temporaryDirectory("leader-worker-\(index)")
            trio.workerDirectories.append(directory)
            trio.workers.append(try LaunchedProcess(orchctl: [
                "worker", "--manager", managers, "--http", "127.0.0.1:0", "--name", "w\(index)", "--state-dir", directory,
                "--cpus", "1", "--memory", "1GiB", "--log-level", "warning", "--join-token-file", trio.members["m1"]!.data + "/join.token",
            ]))
        }
        try await waitUntil("both workers up", within: .seconds(60)) { try await trio.nodesUp(via: "m1") == 2 }
        return trio
    }

    func launch(_ name: String) throws {
        let member = members[name]!
        members[name]!.process = try LaunchedProcess(orchctl: [
            "manager", "--store", server.url(), "--name", name, "--data", member.data, "--http", "127.0.0.1:\(member.http)",
            "--wire", "127.0.0.1:\(member.wire)", "--dns", "off", "--log-level", "warning",
        ])
    }

    /// Stops the leader with `signal`; the time until another leads, and until both workers are
    /// up as it sees them. The one stopped is started again and follows before it returns.
    func changeLeader(signal: Int32) async throws -> (leader: Duration, workers: Duration) {
        let old = leader
        let others = names.filter { $0 != old }
        let clock = ContinuousClock()
        let start = clock.now
        members[old]!.process?.signal(signal)
        var next: String?
        try await waitUntil("another manager to lead", within: .seconds(30), every: .milliseconds(10)) {
            for name in others where (try? await role(of: name)) == "leader" {
                next = name
                return true
            }
            return false
        }
        let toLeader = clock.now - start
        guard let next else { throw BenchError("no leader") }
        leader = next
        try await waitUntil("both workers attached to \(next)", within: .seconds(60), every: .milliseconds(10)) { try await nodesUp(via: next) == 2 }
        let toWorkers = clock.now - start
        _ = try? await members[old]!.process?.waitForExit(within: .seconds(20))
        try launch(old)
        try await waitUntilFollowing(old)
        return (toLeader, toWorkers)
    }

    func waitUntilFollowing(_ name: String) async throws {
        try await waitUntil("\(name) to follow", within: .seconds(60)) {
            guard let health = try? await get(members[name]!.api + "/healthz") else { return false }
            return String(buffer: health.body).contains("leaderURL") && String(buffer: health.body).contains(#""role":"follower""#)
        }
    }

    func role(of name: String) async throws -> String? {
        let health = try await get(members[name]!.api + "/healthz")
        let object = try JSONSerialization.jsonObject(with: Data(buffer: health.body)) as? [String: Any]
        return object?["role"] as? String
    }

    func send(_ method: HTTPMethod, _ path: String, via name: String? = nil, body: String? = nil) async throws -> (status: Int, body: ByteBuffer) {
        var request = HTTPClientRequest(url: members[name ?? leader]!.api + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await httpClient.execute(request, timeout: .seconds(10))
        return (Int(response.status.code), try await response.body.collect(upTo: 64 << 20))
    }

    func nodesUp(via name: String) async throws -> Int {
        let answer = try await send(.GET, "/nodes", via: name)
        let nodes = try JSONSerialization.jsonObject(with: Data(buffer: answer.body)) as? [[String: Any]] ?? []
        return nodes.filter { $0["state"] as? String == "up" }.count
    }

    func running() async throws -> Int {
        let answer = try await send(.GET, "/tasks")
        let tasks = try JSONSerialization.jsonObject(with: Data(buffer: answer.body)) as? [[String: Any]] ?? []
        return tasks.filter { $0["state"] as? String == "running" }.count
    }

    /// Each task's container and attempt, as the leader has them.
    func containers() async throws -> [String: String] {
        let answer = try await send(.GET, "/tasks")
        let tasks = try JSONSerialization.jsonObject(with: Data(buffer: answer.body)) as? [[String: Any]] ?? []
        var result: [String: String] = [:]
        for task in tasks { result[task["id"] as? String ?? ""] = "\(task["container"] as? String ?? "-")#\(task["attempt"] as? Int ?? 0)" }
        return result
    }

    func stop() {
        for worker in workers { worker.signal(SIGKILL) }
        for member in members.values { member.process?.signal(SIGKILL) }
        for directory in workerDirectories {
            guard let node = try? String(contentsOfFile: directory + "/node-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) else { continue }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "docker ps -aq --filter label=orch.node=\(node) | xargs -r docker rm -f >/dev/null 2>&1"]
            try? process.run()
            process.waitUntilExit()
        }
    }
}
