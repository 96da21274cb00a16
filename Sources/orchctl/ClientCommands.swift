import ArgumentParser
import Foundation
import OrchCore

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Submits a task from a JSON file (ours or Cube's) and prints its id.",
        discussion: """
            The file is checked by the manager; every problem is listed with its field's path.
            With --wait, orchctl follows the task until it runs (or fails), showing its progress.

            Examples:
              orchctl run -f data/task1.json
              orchctl run -f data/task1.json --wait
              orchctl task --filename data/cube-task.json     (Cube's way)
              cat task.json | orchctl run -f -
            """.reflowed,
        aliases: ["task"])

    @Option(name: [.short, .customLong("filename")], help: ArgumentHelp("The task file, or - for standard input.", valueName: "file"))
    var file: String

    @Flag(help: "Wait until the task runs (and passes its health check) for --settle, showing progress; exit 1 with the reason when it does not.")
    var wait = false

    @Option(help: ArgumentHelp("How long --wait waits, e.g. 60s, 5m or 90 (seconds); default 2m.", valueName: "duration"))
    var timeout: String?

    @Option(help: ArgumentHelp("How long the task must keep running (and healthy, with a health check) before --wait says it runs.", valueName: "duration"))
    var settle: String = "2s"

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if let timeout {
            guard wait else { throw ValidationError("--timeout is how long --wait waits: add --wait") }
            guard commandLineDuration(timeout) != nil else { throw ValidationError("--timeout: \"\(timeout)\" is not a duration such as 60s, 5m or 90 (seconds)") }
        }
        guard commandLineDuration(settle) != nil else { throw ValidationError("--settle: \"\(settle)\" is not a duration such as 2s") }
    }

    func run() async throws {
        try await runClient {
            let data = try readTaskFile(file)
            // The manager checks the file; what has no effect in it is said here.
            if let submission = try? TaskFile.decode(data) { noteIgnoredFields(submission.ignoredFields) }
            let client = try options.client
            let answer = try await client.request(.POST, "/tasks", body: data)
            let task = try client.decode(TaskDTO.self, from: answer)
            if options.json && !wait {
                printJSON(answer)
            } else {
                print(task.id.rawValue)
            }
            guard wait else { return }
            try await waitUntilRunning(
                task.id, client: client, timeout: timeout.flatMap(commandLineDuration) ?? .seconds(120), settle: commandLineDuration(settle) ?? .seconds(2))
        }
    }

    /// Follows the task on stderr until it has run (and, with a health check, been healthy)
    /// for `settle` in one attempt, or ran to its end; throws with the reason when it fails,
    /// crashes, turns unhealthy or is restarted meanwhile, or the timeout passes.
    func waitUntilRunning(_ id: TaskID, client: APIClient, timeout: Duration, settle: Duration) async throws {
        let started = ContinuousClock.now
        let deadline = started + timeout
        var last = ""
        var steady: (attempt: Int, since: ContinuousClock.Instant)?
        var firstRestarts: Int?
        while ContinuousClock.now < deadline {
            let task = try client.decode(TaskDTO.self, from: try await client.request(.GET, try taskPath(id.rawValue)))
            var line = "\(task.state.rawValue)"
            if let node = task.nodeName ?? task.node?.rawValue { line += " on \(node)" }
            if task.state == .running, task.spec.healthCheck != nil { line += ", \(task.health.rawValue)" }
            if task.state == .pending, let reason = task.error { line += ": \(reason)" }
            if line != last {
                FileHandle.standardError.write(Data("[\(elapsedText(ContinuousClock.now - started))] \(line)\n".utf8))
                last = line
            }
            let restarts = firstRestarts ?? task.restarts
            firstRestarts = restarts
            let why = task.error ?? task.exitCode.map { "exit code \($0)" } ?? "no exit code"
            if task.restarts > restarts || (steady != nil && task.state != .running) || (steady.map { $0.attempt != task.attempt } ?? false) {
                throw CommandFailure(description: "task \(id) stopped running (\(why)); it is \(task.state.rawValue) after \(task.restarts) restart\(task.restarts == 1 ? "" : "s"): `orchctl logs --previous \(id.rawValue)` and `orchctl status \(id.rawValue)` show why")
            }
            switch task.state {
            case .running:
                if task.health == .unhealthy {
                    throw CommandFailure(description: "task \(id) runs but fails its health check: `orchctl status \(id.rawValue)` shows its events")
                }
                if task.spec.healthCheck == nil || task.health == .healthy {
                    let since = steady?.since ?? ContinuousClock.now
                    steady = (task.attempt, since)
                    if ContinuousClock.now - since >= settle {
                        let ports = task.ports.map { "\($0.hostIP):\($0.hostPort)->\($0.containerPort)" }.joined(separator: ", ")
                        FileHandle.standardError.write(Data("running as \(task.container?.short ?? "?")\(ports.isEmpty ? "" : ", ports \(ports)")\n".utf8))
                        return
                    }
                }
            case .completed:
                if task.desiredState == .stop || (task.exitCode ?? 0) == 0 { return }
                throw CommandFailure(description: "task \(id) ended: \(why)")
            case .failed:
                throw CommandFailure(description: "task \(id) failed: \(why)")
            default:
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw CommandFailure(description: "task \(id) is not running after \(DurationText.format(timeout)) (still \(last)); `orchctl status \(id)` shows why")
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Shows every task in a table, or one task with its history.",
        discussion: """
            A task is named by its id, its name (the live task of that name, else the newest
            ended one) or a unique prefix of its id, such as the short id the table shows.

            The table lists every task (every page of the API), with a line of counts by state
            under it; --state, --node, --service and --name keep some. With --watch, the table
            is shown again at every change (read from the events stream) until Ctrl-C.

            Examples:
              orchctl status
              orchctl status --state failed
              orchctl status --service web
              orchctl status --watch
              orchctl status web
              orchctl status 3f2a
              orchctl status --json
            """.reflowed)

    @Argument(help: ArgumentHelp("A task's id, its name, or a unique prefix of its id (the short id of the table).", valueName: "task"))
    var id: String?

    @Option(help: ArgumentHelp("Only tasks in this state (pending, scheduled, running, stopping, completed, failed).", valueName: "state"))
    var state: String?

    @Option(help: ArgumentHelp("Only tasks on this node (its name or id).", valueName: "node"))
    var node: String?

    @Option(help: ArgumentHelp("Only the tasks of this service.", valueName: "name"))
    var service: String?

    @Option(help: ArgumentHelp("Only tasks of this name.", valueName: "name"))
    var name: String?

    @Flag(name: .shortAndLong, help: "Show the table again at every change, until Ctrl-C.")
    var watch = false

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if id != nil, state != nil || node != nil || service != nil || name != nil {
            throw ValidationError("--state, --node, --service and --name filter the table; with a task, there is no table")
        }
        if watch && (id != nil || options.json) {
            throw ValidationError("--watch shows the table again at every change; for one task's changes use `orchctl events TASK --follow`")
        }
        if let state, TaskState(rawValue: state.lowercased()) == nil {
            throw ValidationError("--state: \"\(state)\" is not one of \(TaskState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() async throws {
        try await runClient {
            let client = try options.client
            if let id {
                let answer = try await client.request(.GET, try taskPath(id))
                let task = try client.decode(TaskDTO.self, from: answer)
                if options.json { printJSON(answer); return }
                printTask(task)
                return
            }
            if watch { return try await watchTable(client) }
            let (tasks, objects) = try await listing(client)
            if options.json {
                let pretty = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: pretty, as: UTF8.self))
                return
            }
            Self.printTasks(tasks)
        }
    }

    static func printTasks(_ tasks: [TaskDTO]) {
        printTable(
            ["ID", "NAME", "IMAGE", "STATE", "NODE", "PORTS", "AGE", "RESTARTS", "REASON"],
            tasks.map { task in
                [task.id.short, task.shownName, task.image, task.state.rawValue + (task.desiredState == .stop && !task.state.isTerminal ? " (stop)" : ""),
                 task.nodeName ?? "-", Self.ports(task), age(since: task.createdAt), String(task.restarts), Self.reason(task)]
            })
        print(summary(tasks))
    }

    /// The table, then again after every burst of changes: cleared in place on a terminal,
    /// one after the other (with the change that caused it) elsewhere.
    func watchTable(_ client: APIClient) async throws {
        // Where the stream starts is taken before the table is read: no change falls between.
        let start = try client.decode(EventPageDTO.self, from: try await client.request(.GET, "/events?limit=1")).last
        let terminal = isatty(STDOUT_FILENO) == 1
        func show(_ cause: ClusterEventDTO?) async throws {
            let (tasks, _) = try await listing(client)
            if terminal { print("\u{1B}[H\u{1B}[2J", terminator: "") } else if cause != nil { print("") }
            if let cause { print("-- \(EventsCommand.line(cause))") }
            Self.printTasks(tasks)
            flushOutput()
        }
        try await show(nil)
        try await client.followEvents("", since: start) { events in
            try await show(events.last)
        }
    }

    /// Every page of `GET /tasks` with the filters, following `Link: rel="next"`: the tasks,
    /// and the same as the API's JSON objects (for --json).
    func listing(_ client: APIClient) async throws -> ([TaskDTO], [Any]) {
        var query: [String] = []
        func add(_ key: String, _ value: String?) {
            if let value { query.append("\(key)=\(value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? value)") }
        }
        add("state", state?.lowercased())
        add("node", node)
        add("service", service)
        var (tasks, pages) = try await client.all(TaskDTO.self, from: "/tasks" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
        var objects: [Any] = pages.flatMap { (try? JSONSerialization.jsonObject(with: Data(buffer: $0.body)) as? [Any]) ?? [] }
        if let name {
            let keep = tasks.map { $0.name == name }
            tasks = tasks.filter { $0.name == name }
            objects = zip(objects, keep).filter(\.1).map(\.0)
        }
        return (tasks, objects)
    }

    /// `127.0.0.1:32788->8080`, comma-separated; `-` when none is published.
    static func ports(_ task: TaskDTO) -> String {
        task.ports.isEmpty ? "-" : task.ports.map { "\($0.hostIP):\($0.hostPort)->\($0.containerPort)\($0.protocol == .udp ? "/udp" : "")" }.joined(separator: ",")
    }

    /// Why a task is where it is: its error, its exit code, an unhealthy check; `-` otherwise.
    static func reason(_ task: TaskDTO, now: Date = Date()) -> String {
        if let until = task.backoffUntil, task.state == .pending {
            return "backoff, next try in \(age(since: now, now: until))" + (cause(task).map { " (\($0))" } ?? "")
        }
        if let error = task.error { return error.count > 60 ? String(error.prefix(59)) + "…" : error }
        if let code = task.exitCode, task.state.isTerminal { return "exit \(code)" }
        if task.health == .unhealthy { return "unhealthy" }
        return "-"
    }

    /// What ended the last attempt: `exited with code 3` out of `restarting after 4s (exited with code 3)`.
    static func cause(_ task: TaskDTO) -> String? {
        guard let error = task.error else { return nil }
        if error.hasPrefix("restarting after "), let open = error.firstIndex(of: "("), error.hasSuffix(")") {
            return String(error[error.index(after: open)..<error.index(before: error.endIndex)])
        }
        return error
    }

    /// `12 tasks: 9 running, 2 pending, 1 failed`.
    static func summary(_ tasks: [TaskDTO]) -> String {
        var counts: [TaskState: Int] = [:]
        for task in tasks { counts[task.state, default: 0] += 1 }
        let parts = TaskState.allCases.compactMap { state in counts[state].map { "\($0) \(state.rawValue)" } }
        return "\(tasks.count) task\(tasks.count == 1 ? "" : "s")" + (parts.isEmpty ? "" : ": " + parts.joined(separator: ", "))
    }

    func printTask(_ task: TaskDTO) {
        var lines: [(String, String)] = [
            ("id", task.id.rawValue), ("name", task.shownName), ("image", task.image),
            ("state", task.state.rawValue + (task.desiredState == .stop ? " (stop requested)" : "")),
            ("node", task.nodeName.map { "\($0) (\(task.node?.rawValue ?? ""))" } ?? "-"),
            ("container", task.container?.rawValue ?? "-"), ("attempt", String(task.attempt)), ("restarts", String(task.restarts)),
            ("health", task.health.rawValue),
        ]
        if !task.ports.isEmpty {
            lines.append(("ports", task.ports.map { "\($0.hostIP):\($0.hostPort)->\($0.containerPort)/\($0.protocol.rawValue)" }.joined(separator: ", ")))
        }
        if let code = task.exitCode { lines.append(("exit code", String(code))) }
        if let error = task.error { lines.append(("reason", error)) }
        if let until = task.backoffUntil, task.state == .pending {
            lines.append(("backoff", "crash-looping: placed again at \(ISO8601DateFormatter().string(from: until)) (in \(age(since: Date(), now: until))), after \(task.restarts) restart\(task.restarts == 1 ? "" : "s")"))
        }
        lines.append(("created", "\(ISO8601DateFormatter().string(from: task.createdAt)) (\(age(since: task.createdAt)) ago)"))
        for (key, value) in lines { print("\(key.padding(toLength: 10, withPad: " ", startingAt: 0)) \(value)") }
        if let events = task.events, !events.isEmpty {
            print("\nevents:")
            let formatter = ISO8601DateFormatter()
            for event in events { print("  \(formatter.string(from: event.at))  \(event.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0))  \(event.message)") }
        }
    }
}

struct StopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Stops a task: it ends Completed and is not restarted.",
        discussion: """
            Examples:
              orchctl stop web
              orchctl stop 3f2a
            """.reflowed)

    @Argument(help: ArgumentHelp("A task's id, its name, or a unique prefix of its id (the short id of the table).", valueName: "task"))
    var id: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runClient {
            let client = try options.client
            let answer = try await client.request(.DELETE, try taskPath(id))
            let task = try client.decode(TaskDTO.self, from: answer)
            if options.json { printJSON(answer); return }
            print("\(task.id.rawValue) \(task.state.rawValue)")
        }
    }
}

struct NodesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes",
        abstract: "Shows the worker nodes (state, capacity, use, tasks, labels), one node in detail, and drains, undrains or removes one.",
        discussion: """
            A node is named by its name, its id or a unique prefix of its id.

            Examples:
              orchctl nodes
              orchctl node web-1
              orchctl node drain web-1 --move
              orchctl node undrain web-1
              orchctl node rm web-1
            """.reflowed,
        subcommands: [NodeShow.self, NodeDrain.self, NodeUndrain.self, NodeRemove.self],
        defaultSubcommand: NodeShow.self,
        aliases: ["node"])

    static func cpus(_ millicores: Int) -> String {
        millicores % 1000 == 0 ? String(millicores / 1000) : String(format: "%.2f", Double(millicores) / 1000)
    }

    /// The path of a node's route, percent-encoded; an empty name is refused.
    static func path(_ node: String, _ suffix: String = "") throws -> String {
        guard !node.isEmpty else { throw CommandFailure(description: "a node name or id must not be empty") }
        return "/nodes/" + (node.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? node) + suffix
    }

    static func state(_ node: NodeDTO) -> String {
        var state = node.state.rawValue
        if node.drained { state += " (drained)" }
        // A node whose engine does not answer is alive but takes nothing: say so where people look.
        if node.engineError != nil { state += " (engine down)" }
        return state
    }

    static func labels(_ node: NodeDTO) -> String {
        let shown = node.labels.filter { !$0.key.hasPrefix(NodeLabel.reservedPrefix) }
        return shown.isEmpty ? "-" : shown.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }
}

struct NodeShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "The nodes in a table, or one node in detail.",
        discussion: """
            Examples:
              orchctl nodes
              orchctl node web-1 --json
            """.reflowed)

    @Argument(help: ArgumentHelp("A node's name or id; without it, every node.", valueName: "node"))
    var node: String?

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runClient {
            let client = try options.client
            if let node {
                let answer = try await client.request(.GET, try NodesCommand.path(node))
                let detail = try client.decode(NodeDTO.self, from: answer)
                if options.json { printJSON(answer); return }
                printDetail(detail, tasks: try await tasks(on: detail, client))
                return
            }
            let answer = try await client.request(.GET, "/nodes")
            let nodes = try client.decode([NodeDTO].self, from: answer)
            if options.json { printJSON(answer); return }
            printTable(
                ["NAME", "ADDRESS", "STATE", "CPUS", "MEMORY", "DISK", "TASKS", "HEARTBEAT", "LABELS"],
                nodes.map { node in
                    let cpus = "\(NodesCommand.cpus(node.reserved.millicores))/\(NodesCommand.cpus(node.capacity.millicores))"
                    let memory = "\(ByteCount.format(node.reserved.memoryBytes))/\(ByteCount.format(node.capacity.memoryBytes))"
                    let disk = node.metrics.map { "\(ByteCount.format($0.diskUsedBytes))/\(ByteCount.format($0.diskTotalBytes))" } ?? "-"
                    return [node.name, node.addresses.first ?? "-", NodesCommand.state(node), cpus, memory, disk, String(node.tasks),
                            node.lastHeartbeat.map { age(since: $0) + " ago" } ?? "-", NodesCommand.labels(node)]
                })
            for node in nodes {
                if let error = node.engineError { print("\(node.name): its container engine does not answer: \(error)") }
            }
        }
    }

    func tasks(on node: NodeDTO, _ client: APIClient) async throws -> [TaskDTO] {
        try await client.all(TaskDTO.self, from: "/tasks?node=\(node.id.rawValue)").elements.filter { !$0.state.isTerminal }
    }

    func printDetail(_ node: NodeDTO, tasks: [TaskDTO]) {
        var lines: [(String, String)] = [
            ("name", node.name), ("id", node.id.rawValue), ("state", NodesCommand.state(node)),
            ("addresses", node.addresses.isEmpty ? "-" : node.addresses.joined(separator: ", ")),
            ("labels", NodesCommand.labels(node)),
            ("mesh", node.labels[NodeLabel.mesh] ?? "none (no HAProxy: published ports do not listen here)"),
            ("capacity", "\(NodesCommand.cpus(node.capacity.millicores)) CPUs, \(ByteCount.format(node.capacity.memoryBytes)) memory, \(ByteCount.format(node.capacity.diskBytes)) disk"),
            ("reserved", "\(NodesCommand.cpus(node.reserved.millicores)) CPUs, \(ByteCount.format(node.reserved.memoryBytes)) memory"),
        ]
        if let metrics = node.metrics {
            lines.append(("measured", "\(NodesCommand.cpus(metrics.cpuMillicoresUsed)) CPUs busy, \(ByteCount.format(metrics.memoryUsedBytes)) of \(ByteCount.format(metrics.memoryTotalBytes)) memory, "
                          + "load \(String(format: "%.2f", metrics.load1)), \(metrics.runningTasks) containers"))
        }
        lines.append(("heartbeat", node.lastHeartbeat.map { age(since: $0) + " ago" } ?? "-"))
        if let error = node.engineError { lines.append(("engine", "does not answer: \(error)")) }
        for (key, value) in lines { print("\(key.padding(toLength: 10, withPad: " ", startingAt: 0)) \(value)") }
        print("\ntasks (\(tasks.count)):")
        for task in tasks { print("  \(task.id.short)  \(task.shownName)  \(task.state.rawValue)  \(task.image)") }
    }
}

struct NodeDrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain",
        abstract: "Places nothing new on a node; with --move, its tasks are moved to other nodes now.",
        discussion: """
            A drained node keeps its tasks (unless --move) and stays drained across restarts
            until `orchctl node undrain`.

            Examples:
              orchctl node drain web-1
              orchctl node drain web-1 --move
            """.reflowed)

    @Argument(help: ArgumentHelp("The node's name or id.", valueName: "node"))
    var node: String

    @Flag(help: "Stop its tasks there and place them on other nodes now.")
    var move = false

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runClient {
            let client = try options.client
            let answer = try await client.request(.POST, try NodesCommand.path(node, "/drain") + (move ? "?move=true" : ""))
            let drained = try client.decode(NodeDTO.self, from: answer)
            if options.json { printJSON(answer); return }
            print("\(drained.name) drained\(move ? "; its tasks are moving" : "") (\(drained.tasks) task\(drained.tasks == 1 ? "" : "s") on it)")
        }
    }
}

struct NodeUndrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "undrain",
        abstract: "Lets tasks be placed on a drained node again.",
        discussion: """
            Examples:
              orchctl node undrain web-1
            """.reflowed)

    @Argument(help: ArgumentHelp("The node's name or id.", valueName: "node"))
    var node: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runClient {
            let client = try options.client
            let answer = try await client.request(.POST, try NodesCommand.path(node, "/undrain"))
            let node = try client.decode(NodeDTO.self, from: answer)
            if options.json { printJSON(answer); return }
            print("\(node.name) takes tasks again")
        }
    }
}

struct NodeRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Removes a node that is down from the cluster: its certificate is refused from then on.",
        discussion: """
            Examples:
              orchctl node rm web-1
            """.reflowed)

    @Argument(help: ArgumentHelp("The node's name or id.", valueName: "node"))
    var node: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runClient {
            let client = try options.client
            let answer = try await client.request(.DELETE, try NodesCommand.path(node))
            guard answer.status == 204 else { throw APIClient.failure(answer) }
            print("removed \(node)")
        }
    }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Prints a task's container output, relayed from its worker.",
        discussion: """
            With --follow the output streams until the task ends or Ctrl-C. With --previous
            it is the output of the task's last attempt that ended, kept by its worker after
            the container is gone (its last 1 MiB): what a crash-looping task printed before
            it crashed.

            Examples:
              orchctl logs 3f2a
              orchctl logs 3f2a --tail 20 --follow
              orchctl logs web --previous
            """.reflowed)

    @Argument(help: ArgumentHelp("A task's id, its name, or a unique prefix of its id (the short id of the table).", valueName: "task"))
    var id: String

    @Flag(name: .shortAndLong, help: "Keep printing new output.")
    var follow = false

    @Option(help: ArgumentHelp("Only the last N lines.", valueName: "N"))
    var tail: Int?

    @Flag(name: .shortAndLong, help: "The output of the last attempt that ended, not the current one's.")
    var previous = false

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if let tail, tail < 0 { throw ValidationError("--tail must be 0 or more") }
        if previous && follow { throw ValidationError("--previous and --follow: an ended attempt prints nothing more") }
        if options.json { throw ValidationError("--json: logs are the container's own output, printed as it is") }
    }

    func run() async throws {
        try await runClient {
            var query: [String] = []
            if follow { query.append("follow=true") }
            if previous { query.append("previous=true") }
            if let tail { query.append("tail=\(tail)") }
            try await (try options.client).stream(try taskPath(id, "/logs") + (query.isEmpty ? "" : "?" + query.joined(separator: "&")), to: .standardOutput)
        }
    }
}

/// The path of a task's route, the id or name percent-encoded; an empty one is refused
/// before anything is sent.
func taskPath(_ reference: String, _ suffix: String = "") throws -> String {
    guard !reference.isEmpty else { throw CommandFailure(description: "a task id or name must not be empty") }
    var unreserved = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
    unreserved.insert(charactersIn: "-._~")
    return "/tasks/" + (reference.addingPercentEncoding(withAllowedCharacters: unreserved) ?? reference) + suffix
}

struct RemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Removes ended tasks with their history (a task that has not ended is refused: stop it first).",
        discussion: """
            Ended tasks are also removed by the manager after its --retention (24h by default)
            and beyond its --retain-ended count.

            Examples:
              orchctl rm web
              orchctl rm 3f2a 9c01
            """.reflowed)

    @Argument(help: ArgumentHelp("Tasks by id, name, or a unique prefix of the id.", valueName: "task"))
    var tasks: [String]

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if tasks.isEmpty { throw ValidationError("name at least one task to remove") }
    }

    func run() async throws {
        try await runClient {
            let client = try options.client
            var failures: [String] = []
            for task in tasks {
                let answer = try await client.request(.DELETE, try taskPath(task) + "?purge=true")
                if answer.status == 204 {
                    print("removed \(task)")
                } else {
                    failures.append("\(task): \(APIClient.failure(answer).description)")
                }
            }
            if !failures.isEmpty { throw CommandFailure(description: failures.joined(separator: "\n  ")) }
        }
    }
}

extension TaskDTO {
    /// The name a table shows: the task's own, a replica's service and slot (`web.2`), or `-`.
    var shownName: String {
        if let name { return name }
        if let service, let slot { return "\(service).\(slot)" }
        return "-"
    }
}

struct ManagersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "managers",
        abstract: "Shows the managers sharing this cluster's store: who leads (and with which epoch), where each serves.",
        discussion: """
            Any manager answers, the leader or a follower. A manager alone on its own SQLite
            store is the only one, and leads.

            Examples:
              orchctl managers
              orchctl managers --api http://127.0.0.1:5565 --json
            """.reflowed)

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runClient {
            let client = try options.client
            let answer = try await client.request(.GET, "/managers")
            let managers = try client.decode([ManagerDTO].self, from: answer)
            if options.json { printJSON(answer); return }
            printTable(
                ["NAME", "ROLE", "EPOCH", "API", "CLUSTER PORT", "STARTED", "SEEN"],
                managers.map { manager in
                    [manager.name, manager.role, manager.epoch.map(String.init) ?? "-", manager.apiURL, manager.wireAddress ?? "-",
                     age(since: manager.startedAt) + " ago", manager.seenSecondsAgo < 1 ? "now" : "\(Int(manager.seenSecondsAgo))s ago"]
                })
            if !managers.contains(where: { $0.role == "leader" }) { print("no manager leads right now") }
        }
    }
}
