import Foundation
import OrchTestSupport
import Testing

@Suite("orchctl client commands against a running manager (Docker)", .serialized, .timeLimit(.minutes(5)))
struct OrchctlClientTests {
    @Test func runStatusNodesLogsAndStop() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("cli")
            let env = ["ORCH_API": cluster.api]

            let run = try await LaunchedProcess.run(orchctl: ["run", "-f", "data/task1.json", "--wait"], environment: env)
            #expect(run.status == 0, "stderr: \(run.stderr)")
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(id.count == 36, "run prints the task's id, and only that: \(run.stdout)")
            #expect(run.stderr.contains("running on cli"), "--wait shows progress: \(run.stderr)")

            let table = try await LaunchedProcess.run(orchctl: ["status"], environment: env)
            #expect(table.status == 0)
            let lines = table.stdout.split(separator: "\n")
            #expect(lines.first?.split(separator: " ", omittingEmptySubsequences: true) == ["ID", "NAME", "IMAGE", "STATE", "NODE", "PORTS", "AGE", "RESTARTS", "REASON"])
            #expect(lines.contains { line in
                line.hasPrefix(String(id.filter { $0 != "-" }.prefix(12))) && line.contains("web") && line.contains("orch-busybox:latest")
                    && line.contains("running") && line.contains("cli") && line.contains("127.0.0.1:") && line.contains("->8080")
            }, "\(table.stdout)")
            #expect(lines.last == "1 task: 1 running", "the summary line: \(table.stdout)")

            let json = try await LaunchedProcess.run(orchctl: ["status", "--json"], environment: env)
            let tasks = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
            #expect(tasks.first?["id"] as? String == id)

            let one = try await LaunchedProcess.run(orchctl: ["status", String(id.prefix(8))], environment: env)
            #expect(one.status == 0)
            #expect(one.stdout.contains("state      running") && one.stdout.contains("events:") && one.stdout.contains("accepted"))
            let oneJSON = try await LaunchedProcess.run(orchctl: ["status", String(id.prefix(8)), "--json"], environment: env)
            let detail = try #require(try JSONSerialization.jsonObject(with: Data(oneJSON.stdout.utf8)) as? [String: Any])
            #expect((detail["events"] as? [[String: Any]])?.isEmpty == false)

            for command in [["nodes"], ["node"]] {
                let nodes = try await LaunchedProcess.run(orchctl: command, environment: env)
                #expect(nodes.status == 0)
                let header = nodes.stdout.split(separator: "\n").first?.split(separator: " ", omittingEmptySubsequences: true)
                #expect(header == ["NAME", "ADDRESS", "STATE", "CPUS", "MEMORY", "DISK", "TASKS", "HEARTBEAT", "LABELS"])
                #expect(nodes.stdout.contains("cli") && nodes.stdout.contains(" up "))
            }
            let nodesJSON = try await LaunchedProcess.run(orchctl: ["nodes", "--json"], environment: env)
            let nodes = try #require(try JSONSerialization.jsonObject(with: Data(nodesJSON.stdout.utf8)) as? [[String: Any]])
            #expect(nodes.first?["name"] as? String == "cli")

            let stop = try await LaunchedProcess.run(orchctl: ["stop", String(id.prefix(8))], environment: env)
            #expect(stop.status == 0)
            #expect(stop.stdout.contains(id))
            try await cluster.waitForTasks("stopped") { $0.first { $0["id"] as? String == id }?.state == "completed" }
        }
    }

    @Test func logsShowWhatTheContainerPrintedAndFollowShowsLaterLines() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("logs")
            let env = ["ORCH_API": cluster.api]
            let id = try await cluster.submit(#"{"image": "orch-busybox:latest", "command": ["sh", "-c", "echo printed-at-start; sleep 3; echo printed-later; sleep 300"]}"#)
            try await cluster.waitForTasks("running") { $0.first?.state == "running" }
            var logs = (status: Int32(0), stdout: "", stderr: "")
            let deadline = ContinuousClock.now + .seconds(10)
            while !logs.stdout.contains("printed-at-start"), ContinuousClock.now < deadline {
                logs = try await LaunchedProcess.run(orchctl: ["logs", id], environment: env)
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(logs.status == 0)
            #expect(logs.stdout.contains("printed-at-start"))
            #expect(!logs.stdout.contains("printed-later"), "not printed yet")

            let follow = try LaunchedProcess(orchctl: ["logs", String(id.prefix(8)), "--follow"], environment: env)
            try await follow.waitForOutput("printed-later", within: .seconds(20))
            #expect(follow.stdout.contains("printed-at-start\nprinted-later"))
            follow.signal(SIGINT)
            _ = try await follow.waitForExit()

            let tail = try await LaunchedProcess.run(orchctl: ["logs", id, "--tail", "1"], environment: env)
            #expect(tail.stdout == "printed-later\n")
        }
    }

    @Test func errorsAreOneClearLineWithANonZeroExit() async throws {
        try await ClusterProcesses.with { cluster in
            let env = ["ORCH_API": cluster.api]
            let unknown = try await LaunchedProcess.run(orchctl: ["status", "no-such-task"], environment: env)
            #expect(unknown.status == 1)
            #expect(unknown.stderr == "orchctl: no task with id no-such-task\n")
            let stopUnknown = try await LaunchedProcess.run(orchctl: ["stop", "no-such-task"], environment: env)
            #expect(stopUnknown.status == 1 && stopUnknown.stderr.contains("no task with id no-such-task"))

            let missing = try await LaunchedProcess.run(orchctl: ["run", "-f", "data/no-such-file.json"], environment: env)
            #expect(missing.status == 1)
            #expect(missing.stderr == "orchctl: no such file: data/no-such-file.json\n")

            let bad = try await runWithInput(["run", "-f", "-"], input: #"{"image": "", "resources": {"memory": "1KiB"}}"#, environment: env)
            #expect(bad.status == 1)
            #expect(bad.stderr.hasPrefix("orchctl: invalid task: 2 problems"), "stderr: \(bad.stderr)")
            #expect(bad.stderr.contains("image:") && bad.stderr.contains("resources.memory:"))
            #expect(try await cluster.tasks().isEmpty, "a refused task changes nothing")

            // A manager that is not there: said at once (not after the connect timeout), in one line.
            let before = ContinuousClock.now
            let unreachable = try await LaunchedProcess.run(orchctl: ["status", "--api", "http://127.0.0.1:1"])
            let took = ContinuousClock.now - before
            #expect(unreachable.status == 1)
            #expect(unreachable.stderr.hasPrefix("orchctl: cannot reach the manager at http://127.0.0.1:1"))
            #expect(unreachable.stderr.contains("refused"), "\(unreachable.stderr)")
            #expect(unreachable.stderr.split(separator: "\n").count == 1, "one line, no stack trace")
            #expect(took < .milliseconds(2500), "connection refused is reported at once, not after 3 s of retries: \(took)")

            // The API as HOST:PORT, and the client's options before the command.
            let port = String(cluster.api.split(separator: ":").last!)
            let plain = try await LaunchedProcess.run(orchctl: ["status"], environment: ["ORCH_API": "127.0.0.1:\(port)"])
            #expect(plain.status == 0 && plain.stdout.hasPrefix("ID "), "ORCH_API without a scheme: \(plain.stderr)")
            let first = try await LaunchedProcess.run(orchctl: ["--api", cluster.api, "status", "--state", "running"])
            #expect(first.status == 0 && first.stdout.contains("0 tasks"), "--api before the command: \(first.stderr)")
            let flagFirst = try await LaunchedProcess.run(orchctl: ["--json", "--api=\(cluster.api)", "status"])
            #expect(flagFirst.status == 0 && flagFirst.stdout.hasPrefix("["), "\(flagFirst.stderr)")

            // logs print the container's output as it is: --json is refused, not ignored.
            let logsJSON = try await LaunchedProcess.run(orchctl: ["logs", "web", "--json"], environment: env)
            #expect(logsJSON.status != 0 && logsJSON.stderr.contains("printed as it is"), "\(logsJSON.stderr)")

            // --timeout belongs to --wait, and takes bare seconds as task files do.
            let alone = try await LaunchedProcess.run(orchctl: ["run", "-f", "data/task1.json", "--timeout", "5"], environment: env)
            #expect(alone.status != 0 && alone.stderr.contains("add --wait"), "\(alone.stderr)")
            #expect(try await cluster.tasks().isEmpty, "refused before anything was sent")
        }
    }

    /// `run --wait` says running only for a task that keeps running (and passes its health
    /// check); one that crashes a moment later exits 1 with why.
    @Test func waitIsHonestAboutATaskThatCrashesAMomentLater() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("wait")
            let env = ["ORCH_API": cluster.api]
            let crashing = temporaryDirectory("crash") + "/crash.json"
            try Data(#"{"name": "crash", "image": "orch-busybox:latest", "command": ["sh", "-c", "sleep 0.5; exit 3"], "restartPolicy": "on-failure"}"#.utf8)
                .write(to: URL(fileURLWithPath: crashing))
            let crashed = try await LaunchedProcess.run(orchctl: ["run", "-f", crashing, "--wait", "--timeout", "30"], environment: env, within: .seconds(60))
            #expect(crashed.status == 1, "\(crashed.stderr)")
            #expect(crashed.stderr.contains("stopped running") && crashed.stderr.contains("code 3"), "\(crashed.stderr)")

            let steady = temporaryDirectory("steady") + "/steady.json"
            try Data(#"{"name": "steady", "image": "orch-busybox:latest", "command": ["sleep", "60"]}"#.utf8).write(to: URL(fileURLWithPath: steady))
            let ran = try await LaunchedProcess.run(orchctl: ["run", "-f", steady, "--wait", "--settle", "1s"], environment: env, within: .seconds(60))
            #expect(ran.status == 0 && ran.stderr.contains("running as"), "\(ran.stderr)")
        }
    }

    /// `orchctl node NAME`, `node drain [--move]`, `undrain`, `rm`, against a real worker;
    /// a drain outlives a manager restart.
    @Test func aNodeIsShownDrainedUndrainedAndRefusedRemovalWhileUp() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("drainme", options: ["--label", "zone=a"])
            let env = ["ORCH_API": cluster.api]
            func orchctl(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
                try await LaunchedProcess.run(orchctl: arguments, environment: env, within: .seconds(30))
            }
            let table = try await orchctl(["nodes"])
            #expect(table.stdout.split(separator: "\n").contains { $0.hasPrefix("drainme ") && $0.hasSuffix("zone=a") }, "\(table.stdout)")
            let detail = try await orchctl(["node", "drainme"])
            #expect(detail.status == 0 && detail.stdout.contains("name       drainme") && detail.stdout.contains("labels     zone=a")
                    && detail.stdout.contains("capacity ") && detail.stdout.contains("tasks (0):"), "\(detail.stdout)\(detail.stderr)")

            let file = temporaryDirectory("drain") + "/t.json"
            try Data(#"{"name": "long", "image": "orch-busybox:latest", "command": ["sleep", "300"]}"#.utf8).write(to: URL(fileURLWithPath: file))
            let run = try await orchctl(["run", "-f", file, "--wait", "--settle", "0s"])
            #expect(run.status == 0, "\(run.stderr)")
            let busy = try await orchctl(["node", "drainme"])
            let nodeID = try cluster.nodeID(of: "drainme")
            #expect(busy.stdout.contains("tasks (1):") && busy.stdout.contains("long  running  orch-busybox:latest"), "\(busy.stdout)")
            #expect(busy.stdout.contains("id         \(nodeID)") && busy.stdout.contains("addresses  127.0.0.1:")
                    && busy.stdout.contains("reserved   ") && busy.stdout.contains("measured   "), "\(busy.stdout)")

            // Drained with --move: its one task has nowhere else to go, and waits, saying why.
            let drained = try await orchctl(["node", "drain", "drainme", "--move"])
            #expect(drained.status == 0 && drained.stdout.contains("drainme drained"), "\(drained)")
            try await cluster.waitForTasks("the task moved off and waiting") { tasks in
                tasks.contains { $0["name"] as? String == "long" && $0.state == "pending" && (($0["error"] as? String) ?? "").contains("drained") }
            }
            #expect(try await orchctl(["nodes"]).stdout.contains("up (drained)"))

            // Still drained after the manager restarts; undrained, the task runs there again.
            try await cluster.restartManager()
            try await cluster.waitForNodes("drainme up again") { nodes in nodes.contains { $0["name"] as? String == "drainme" && $0["state"] as? String == "up" } }
            let after = try await http(.GET, "\(cluster.api)/nodes/drainme")
            #expect(after.status == 200 && after.body.contains("\"drained\":true"), "\(after.body)")
            let undrained = try await orchctl(["node", "undrain", "drainme"])
            #expect(undrained.status == 0 && undrained.stdout.contains("takes tasks again"), "\(undrained)")
            try await cluster.waitForTasks("the task running again") { tasks in
                tasks.contains { $0["name"] as? String == "long" && $0.state == "running" }
            }

            let remove = try await orchctl(["node", "rm", "drainme"])
            #expect(remove.status == 1 && remove.stderr.contains("is up"), "\(remove.stderr)")
            // Down, it is removed, and no longer listed.
            try await cluster.killWorker("drainme")
            try await cluster.waitForNodes("drainme down") { nodes in nodes.contains { $0["name"] as? String == "drainme" && $0["state"] as? String != "up" } }
            let removed = try await orchctl(["node", "rm", "drainme"])
            #expect(removed.status == 0 && removed.stdout == "removed drainme\n", "\(removed)")
            #expect(try await !orchctl(["nodes"]).stdout.contains("drainme"))
            let unknown = try await orchctl(["node", "drain", "nope"])
            #expect(unknown.status == 1 && unknown.stderr.contains("no node"), "\(unknown.stderr)")
        }
    }

    /// The table keeps the tasks of one node (`--node`) or one service (`--service`), against
    /// two real workers and a service; a Cube file run says what it ignores; `orchctl events`
    /// without `--follow` prints what happened and ends.
    @Test func filtersKeepOneNodeOrServiceAndACubeFileSaysWhatItIgnores() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("fa")
            try await cluster.startWorker("fb")
            let env = ["ORCH_API": cluster.api]
            func orchctl(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
                try await LaunchedProcess.run(orchctl: arguments, environment: env, within: .seconds(60))
            }
            let cube = try await orchctl(["run", "-f", "data/cube-task.json", "--wait", "--settle", "0s"])
            #expect(cube.status == 0 && cube.stderr.contains("note: Task.State has no effect here"), "\(cube)")

            let directory = temporaryDirectory("filters")
            try Data(#"{"name": "on-fb", "image": "orch-busybox:latest", "command": ["sleep", "300"], "constraints": {"node": "fb"}}"#.utf8)
                .write(to: URL(fileURLWithPath: directory + "/pinned.json"))
            #expect(try await orchctl(["run", "-f", directory + "/pinned.json", "--wait", "--settle", "0s"]).status == 0)
            try Data(#"{"name": "sleepers", "replicas": 2, "task": {"image": "orch-busybox:latest", "command": ["sleep", "300"]}}"#.utf8)
                .write(to: URL(fileURLWithPath: directory + "/service.json"))
            let deploy = try await orchctl(["deploy", "-f", directory + "/service.json"])
            #expect(deploy.status == 0, "\(deploy.stderr)")
            try await cluster.waitForTasks("4 running") { $0.filter { $0.state == "running" }.count == 4 }

            let pinned = try await orchctl(["status", "--node", "fb", "--json"])
            let onFB = try #require(try JSONSerialization.jsonObject(with: Data(pinned.stdout.utf8)) as? [[String: Any]])
            let fbID = try cluster.nodeID(of: "fb")
            #expect(onFB.contains { $0["name"] as? String == "on-fb" } && onFB.allSatisfy { $0.node == fbID }, "\(pinned.stdout)")
            let all = try await cluster.tasks()
            #expect(onFB.count == all.filter { $0.node == fbID }.count && onFB.count < all.count, "only fb's, and all of them")
            let service = try await orchctl(["status", "--service", "sleepers"])
            let rows = service.stdout.split(separator: "\n").dropFirst().dropLast()
            #expect(rows.count == 2 && rows.allSatisfy { $0.contains(" sleepers.") && $0.contains("running") }, "a replica is named by its service and slot: \(service.stdout)")
            #expect(service.stdout.hasSuffix("2 tasks: 2 running\n"), "\(service.stdout)")

            let events = try await orchctl(["events", "on-fb"])
            #expect(events.status == 0 && events.stdout.contains("task on-fb ") && events.stdout.contains("placed on fb (\(fbID))"), "\(events)")
        }
    }

    @Test func everyCommandsHelpShowsAnExample() async throws {
        for command in ["manager", "worker", "dev", "run", "task", "status", "stop", "rm", "nodes", "node", "logs", "validate"] {
            let help = try await LaunchedProcess.run(orchctl: [command, "--help"])
            #expect(help.status == 0, "\(command) --help")
            #expect(help.stdout.contains("Examples:") && help.stdout.contains("orchctl "), "\(command) --help shows an example")
        }
    }

    /// `orchctl dev` on its own addresses says how to reach it, and its temporary state goes
    /// when it stops.
    @Test func devSaysWhereItIsAndLeavesNoTemporaryState() async throws {
        let http = "127.0.0.1:\(try freePort())"
        let dev = try LaunchedProcess(orchctl: [
            "dev", "--http", http, "--wire", "127.0.0.1:\(try freePort())", "--worker-http", "127.0.0.1:\(try freePort())",
        ])
        try await dev.waitForOutput("export ORCH_API=\(http)", within: .seconds(30))
        let line = try #require(dev.stderr.split(separator: "\n").first { $0.contains("State in ") })
        let after = line.components(separatedBy: "State in ")[1]
        let root = String(after[..<(after.range(of: " (temporary")?.lowerBound ?? after.endIndex)])
        #expect(FileManager.default.fileExists(atPath: root + "/manager"), "\(root)")
        // The worker joins a moment after the manager listens.
        let deadline = ContinuousClock.now + .seconds(20)
        var nodes = try await LaunchedProcess.run(orchctl: ["nodes"], environment: ["ORCH_API": http])
        while !nodes.stdout.contains("local"), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            nodes = try await LaunchedProcess.run(orchctl: ["nodes"], environment: ["ORCH_API": http])
        }
        #expect(nodes.status == 0 && nodes.stdout.contains("local"), "orchctl reaches it where it said: \(nodes)")
        dev.signal(SIGINT)
        #expect(try await dev.waitForExit(within: .seconds(30)) == 0, "\(dev.output)")
        #expect(!FileManager.default.fileExists(atPath: root), "the temporary state \(root) is removed")
    }

    @Test func quickstartRunsTwiceHarmlesslyAndStops() async throws {
        let api = "http://127.0.0.1:\(try freePort())"
        let env = [
            "ORCH_API": api, "ORCH_QUICKSTART_BUILD": "debug", "ORCH_QUICKSTART_DIR": temporaryDirectory("quickstart"),
            "ORCH_QUICKSTART_WIRE": "127.0.0.1:\(try freePort())", "ORCH_QUICKSTART_WORKER_HTTP": "127.0.0.1:\(try freePort())",
        ]
        let script = repositoryRoot.appendingPathComponent("tools/quickstart.sh").path
        do {
            let first = try LaunchedProcess(executable: script, [], environment: env)
            #expect(try await first.waitForExit(within: .seconds(30)) == 0, "output: \(first.output)")
            #expect(first.stdout.contains("web") && first.stdout.contains("running"), "status shows the task running: \(first.stdout)")
            #expect(first.stdout.contains("NAME") && first.stdout.contains(" up "), "nodes are shown")
            #expect(first.stderr.contains("tools/quickstart.sh --stop"), "it says how to stop the cluster")

            let second = try LaunchedProcess(executable: script, [], environment: env)
            #expect(try await second.waitForExit(within: .seconds(240)) == 0, "output: \(second.output)")
            #expect(second.stderr.contains("a cluster is running already"))
            #expect(second.stderr.contains("the example task runs already"))
            let tasks = try await LaunchedProcess.run(orchctl: ["status", "--json"], environment: env)
            let list = try #require(try JSONSerialization.jsonObject(with: Data(tasks.stdout.utf8)) as? [[String: Any]])
            #expect(list.count == 1, "no second task, no second cluster")

            // The example task waiting (its only node drained): said so, waited for, and run
            // once the node takes tasks again.
            let drain = try await LaunchedProcess.run(orchctl: ["node", "drain", "local", "--move"], environment: env)
            #expect(drain.status == 0, "\(drain.stderr)")
            let third = try LaunchedProcess(executable: script, [], environment: env)
            try await third.waitForOutput("the example task exists but is pending", within: .seconds(60))
            #expect(third.stderr.contains("drained"), "the reason is said: \(third.stderr)")
            let undrain = try await LaunchedProcess.run(orchctl: ["node", "undrain", "local"], environment: env)
            #expect(undrain.status == 0, "\(undrain.stderr)")
            #expect(try await third.waitForExit(within: .seconds(60)) == 0, "output: \(third.output)")
            #expect(third.stdout.contains("running"), "\(third.stdout)")
        } catch {
            _ = try? await LaunchedProcess(executable: script, ["--stop"], environment: env).waitForExit(within: .seconds(60))
            throw error
        }
        let stop = try LaunchedProcess(executable: script, ["--stop"], environment: env)
        #expect(try await stop.waitForExit(within: .seconds(60)) == 0, "output: \(stop.output)")
        let after = try await LaunchedProcess.run(orchctl: ["status"], environment: env)
        #expect(after.status == 1 && after.stderr.contains("cannot reach the manager"), "the cluster is stopped")
    }
}

/// Runs orchctl with `input` on its standard input.
func runWithInput(_ arguments: [String], input: String, environment: [String: String]) async throws -> (status: Int32, stdout: String, stderr: String) {
    let file = NSTemporaryDirectory() + "orch-input-\(UUID().uuidString.prefix(8)).json"
    try Data(input.utf8).write(to: URL(fileURLWithPath: file))
    let shell = try LaunchedProcess(executable: "/bin/sh", ["-c", "exec \"$0\" \"$@\" < \"\(file)\"", orchctlPath] + arguments, environment: environment)
    let status = try await shell.waitForExit(within: .seconds(60))
    return (status, shell.stdout, shell.stderr)
}
