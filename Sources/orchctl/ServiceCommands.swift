import ArgumentParser
import Foundation
import OrchCore

struct ServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service",
        abstract: "Runs N replicas of a task, kept running and updated by rolling deploys.",
        discussion: """
            A service file is JSON: a name, replicas, a task template and an update policy
            (docs/SERVICES.md). `orchctl deploy -f FILE` creates or updates a service and waits
            for its deploy.

            Examples:
              orchctl service create -f data/service-web.json
              orchctl service ls
              orchctl service ps web
              orchctl service endpoints web
              orchctl service scale web=5
              orchctl service update web --image orch-busybox:latest
              orchctl service rollback web
              orchctl service rm web
            """.reflowed,
        subcommands: [
            ServiceCreateCommand.self, ServiceListCommand.self, ServicePSCommand.self, ServiceEndpointsCommand.self, ServiceScaleCommand.self,
            ServiceUpdateCommand.self, ServiceRollbackCommand.self, ServiceRemoveCommand.self,
        ])
}

struct ServiceCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Creates a service from a service file (the same file again changes nothing).",
        discussion: """
            Examples:
              orchctl service create -f data/service-web.json
              orchctl service create -f web.json --wait
            """.reflowed)

    @Option(name: [.short, .customLong("filename")], help: ArgumentHelp("The service file, or - for standard input.", valueName: "file"))
    var file: String

    @Flag(help: "Wait until every replica runs healthy, showing progress.")
    var wait = false

    @Option(help: ArgumentHelp("How long --wait waits, e.g. 60s or 10m.", valueName: "duration"))
    var timeout: String = "10m"

    @OptionGroup var options: ClientOptions

    func validate() throws { try checkDuration(timeout) }

    func run() async throws {
        try await runClient {
            let data = try readTaskFile(file)
            let client = try options.client
            let answer = try await client.request(.POST, "/services", body: data)
            let service = try client.decode(ServiceDTO.self, from: answer)
            if options.json && !wait { printJSON(answer); return }
            print("\(service.name) \(answer.status == 201 ? "created" : "unchanged"): version \(service.version), \(service.replicas.wanted) replicas of \(service.image)")
            if wait { try await DeployWatch(client: client, name: service.name, timeout: timeout).follow(deploy: false) }
        }
    }
}

struct ServiceListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "Lists the services: version, replicas running/wanted, image, ports published on every worker, deploy.",
        discussion: """
            Examples:
              orchctl service ls
              orchctl service ls --json
            """.reflowed,
        aliases: ["list"])

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runClient {
            let client = try options.client
            let answer = try await client.request(.GET, "/services")
            let services = try client.decode([ServiceDTO].self, from: answer)
            if options.json { printJSON(answer); return }
            printTable(
                ["NAME", "VERSION", "REPLICAS", "IMAGE", "PUBLISHED", "DEPLOY"],
                services.map { service in
                    [service.name, String(service.version), "\(service.replicas.running)/\(service.replicas.wanted)", service.image,
                     service.published.isEmpty ? "-" : service.published.map { "*:\($0.publish)->\($0.containerPort)/\($0.mode.rawValue)" }.joined(separator: ","),
                     service.state == "removing" ? "removing" : service.deploy.map { "\($0.state) (\($0.from)->\($0.to))" } ?? "-"]
                })
        }
    }
}

struct ServicePSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract: "Shows a service's tasks by slot: version, state, node, health.",
        discussion: """
            Ended tasks are kept a while (the newest 5 per slot) and shown below the live ones.

            Examples:
              orchctl service ps web
            """.reflowed)

    @Argument(help: "The service's name.")
    var name: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runClient {
            let client = try options.client
            let answer = try await client.request(.GET, "/services/\(try serviceName(name))")
            let service = try client.decode(ServiceDTO.self, from: answer)
            if options.json { printJSON(answer); return }
            let tasks = (service.tasks ?? []).sorted { a, b in
                let aLive = !a.state.isTerminal, bLive = !b.state.isTerminal
                return aLive != bLive ? aLive : (a.slot, b.createdAt) < (b.slot, a.createdAt)
            }
            printTable(
                ["SLOT", "TASK", "VERSION", "STATE", "NODE", "HEALTH", "AGE"],
                tasks.map { task in
                    var state = task.state.rawValue
                    if task.desiredState == .stop && !task.state.isTerminal { state += " (stopping)" }
                    if let error = task.error, task.state == .failed || task.state == .pending { state += ": \(error)" }
                    return ["\(service.name).\(task.slot)", String(task.id.rawValue.prefix(12)), String(task.version), state,
                            task.nodeName ?? "-", task.health.rawValue, age(since: task.createdAt)]
                })
        }
    }
}

struct ServiceEndpointsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoints",
        abstract: "Shows where a service's tasks are reached, and which are ready for traffic.",
        discussion: """
            An endpoint is a task whose container runs with its ports published: ready when it
            is healthy (or has no health check) and is to keep running on a node that is up;
            draining while it is told to stop or its node is away. With --watch, the table is
            printed again each time the endpoints change (a blocking query), until interrupted.

            Examples:
              orchctl service endpoints web
              orchctl service endpoints web --watch
            """.reflowed)

    @Argument(help: "The service's name.")
    var name: String

    @Flag(help: "Print the endpoints again each time they change.")
    var watch = false

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runClient {
            let client = try options.client
            let path = "/services/\(try serviceName(name))/endpoints"
            var index: UInt64?
            repeat {
                let answer = try await client.request(.GET, path + (index.map { "?index=\($0)&wait=60s" } ?? ""), timeout: .seconds(75))
                let catalog = try client.decode(ServiceCatalog.self, from: answer)
                if catalog.index == index { continue }
                if options.json { printJSON(answer) } else { Self.print(catalog, numbered: watch) }
                index = catalog.index
            } while watch
        }
    }

    static func print(_ catalog: ServiceCatalog, numbered: Bool) {
        if numbered { Swift.print("index \(catalog.index): \(catalog.ready.count) of \(catalog.endpoints.count) ready") }
        printTable(
            ["SLOT", "TASK", "VERSION", "NODE", "ADDRESS", "STATE", "HEALTH"],
            catalog.endpoints.map { endpoint in
                let ports = endpoint.ports.map { "\(endpoint.address):\($0.hostPort)->\($0.containerPort)" }.joined(separator: ", ")
                return ["\(catalog.service).\(endpoint.slot)", String(endpoint.task.rawValue.prefix(12)), String(endpoint.version),
                        endpoint.nodeName ?? endpoint.node.rawValue, ports.isEmpty ? endpoint.address : ports,
                        endpoint.ready ? "ready" : endpoint.draining ? "draining" : "not ready", endpoint.health.rawValue]
            })
    }
}

struct ServiceScaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Sets how many replicas services run (no new version: no task is replaced).",
        discussion: """
            Examples:
              orchctl service scale web=5
              orchctl service scale web=2 api=3 --wait
            """.reflowed)

    @Argument(help: ArgumentHelp("NAME=N, one or more.", valueName: "name=replicas"))
    var targets: [String]

    @Flag(help: "Wait until each service runs its replicas.")
    var wait = false

    @Option(help: ArgumentHelp("How long --wait waits.", valueName: "duration"))
    var timeout: String = "10m"

    @OptionGroup var options: ClientOptions

    func validate() throws {
        try checkDuration(timeout)
        for target in targets {
            let parts = target.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let count = Int(parts[1]), count >= 0 else {
                throw ValidationError("\(target): expected NAME=REPLICAS, e.g. web=5")
            }
        }
    }

    func run() async throws {
        try await runClient {
            let client = try options.client
            for target in targets {
                let parts = target.split(separator: "=", maxSplits: 1).map(String.init)
                let body = try JSONSerialization.data(withJSONObject: ["replicas": Int(parts[1])!])
                let answer = try await client.request(.PUT, "/services/\(try serviceName(parts[0]))", body: body)
                let service = try client.decode(ServiceDTO.self, from: answer)
                if options.json { printJSON(answer) } else { print("\(service.name) scaled to \(service.replicas.wanted)") }
                if wait { try await DeployWatch(client: client, name: service.name, timeout: timeout).follow(deploy: false) }
            }
        }
    }
}

struct ServiceUpdateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update",
        abstract: "Changes a service: a new template rolls out as a new version.",
        discussion: """
            -f takes a service file, or any of its fields (replicas, task, update); --image
            changes only the template's image. A new template starts a rolling deploy under the
            service's update policy; --wait follows it (exit 1 if it fails or is rolled back).

            Examples:
              orchctl service update web -f data/service-web.json
              orchctl service update web --image orch-busybox:latest --wait
            """.reflowed)

    @Argument(help: "The service's name.")
    var name: String

    @Option(name: [.short, .customLong("filename")], help: ArgumentHelp("A service file, or some of its fields.", valueName: "file"))
    var file: String?

    @Option(help: ArgumentHelp("A new image for the template.", valueName: "image"))
    var image: String?

    @Flag(help: "Wait until the deploy ends, showing progress.")
    var wait = false

    @Option(help: ArgumentHelp("How long --wait waits.", valueName: "duration"))
    var timeout: String = "10m"

    @OptionGroup var options: ClientOptions

    func validate() throws {
        try checkDuration(timeout)
        guard (file == nil) != (image == nil) else { throw ValidationError("give either -f FILE or --image IMAGE") }
    }

    func run() async throws {
        try await runClient {
            let client = try options.client
            let path = "/services/\(try serviceName(name))"
            let body: Data
            if let file {
                body = try readTaskFile(file)
            } else {
                let current = try client.decode(ServiceDTO.self, from: try await client.request(.GET, path))
                guard case .object(let fields) = current.spec, case .object(var task)? = fields["task"] else {
                    throw CommandFailure(description: "the manager answered a service without a task template")
                }
                task["image"] = .string(image!)
                body = try JSONEncoder().encode(JSONValue.object(["task": .object(task)]))
            }
            let answer = try await client.request(.PUT, path, body: body)
            let service = try client.decode(ServiceDTO.self, from: answer)
            if options.json && !wait { printJSON(answer); return }
            printChange(service)
            if wait { try await DeployWatch(client: client, name: service.name, timeout: timeout).follow(deploy: true) }
        }
    }
}

struct ServiceRollbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollback",
        abstract: "Goes back to the version before, rolling as a deploy does.",
        discussion: """
            Examples:
              orchctl service rollback web
              orchctl service rollback web --wait
            """.reflowed)

    @Argument(help: "The service's name.")
    var name: String

    @Flag(help: "Wait until the rollback ends, showing progress.")
    var wait = false

    @Option(help: ArgumentHelp("How long --wait waits.", valueName: "duration"))
    var timeout: String = "10m"

    @OptionGroup var options: ClientOptions

    func validate() throws { try checkDuration(timeout) }

    func run() async throws {
        try await runClient {
            let client = try options.client
            let answer = try await client.request(.POST, "/services/\(try serviceName(name))/rollback")
            let service = try client.decode(ServiceDTO.self, from: answer)
            if options.json && !wait { printJSON(answer); return }
            print("\(service.name): rolling back to version \(service.version)")
            if wait { try await DeployWatch(client: client, name: service.name, timeout: timeout).follow(deploy: true, rollback: true) }
        }
    }
}

struct ServiceRemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Stops every task of a service, then forgets it.",
        discussion: """
            Waits until the service is gone unless --detach.

            Examples:
              orchctl service rm web
            """.reflowed,
        aliases: ["remove"])

    @Argument(help: "The service's name.")
    var name: String

    @Flag(help: "Return once the removal is accepted.")
    var detach = false

    @Option(help: ArgumentHelp("How long to wait for the tasks to stop.", valueName: "duration"))
    var timeout: String = "2m"

    @OptionGroup var options: ClientOptions

    func validate() throws { try checkDuration(timeout) }

    func run() async throws {
        try await runClient {
            let client = try options.client
            let path = "/services/\(try serviceName(name))"
            let answer = try await client.request(.DELETE, path)
            let service = try client.decode(ServiceDTO.self, from: answer)
            if options.json { printJSON(answer) }
            guard !detach else { return options.json ? () : print("\(service.name) removing") }
            let deadline = ContinuousClock.now + (commandLineDuration(timeout) ?? .seconds(120))
            while ContinuousClock.now < deadline {
                let current = try await client.request(.GET, path)
                if current.status == 404 {
                    if !options.json { print("\(service.name) removed") }
                    return
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            throw CommandFailure(description: "service \(name) is still stopping its tasks after \(timeout); `orchctl service ps \(name)` shows them")
        }
    }
}

struct DeployCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy",
        abstract: "Creates or updates a service from its file and waits for the deploy to end.",
        discussion: """
            Progress goes to stderr, slot by slot. Exit 0 when the deploy succeeded (or the
            service runs its replicas), 1 with the reason when it failed or was rolled back.

            Examples:
              orchctl deploy -f data/service-web.json
              orchctl deploy -f web.json --timeout 5m
            """.reflowed)

    @Option(name: [.short, .customLong("filename")], help: ArgumentHelp("The service file, or - for standard input.", valueName: "file"))
    var file: String

    @Option(help: ArgumentHelp("How long to wait for the deploy.", valueName: "duration"))
    var timeout: String = "10m"

    @OptionGroup var options: ClientOptions

    func validate() throws { try checkDuration(timeout) }

    func run() async throws {
        try await runClient {
            let data = try readTaskFile(file)
            let spec: ServiceSpec
            do { spec = try ServiceSpec.decode(data) } catch let error as TaskSpecError {
                throw CommandFailure(description: "\(file): invalid service:\n  " + error.problems.map(\.description).joined(separator: "\n  "))
            }
            let client = try options.client
            let path = "/services/\(spec.name)"
            let existing = try await client.request(.GET, path)
            let answer: APIClient.Answer
            if existing.status == 404 {
                answer = try await client.request(.POST, "/services", body: data)
            } else {
                _ = try client.decode(ServiceDTO.self, from: existing)
                answer = try await client.request(.PUT, path, body: data)
            }
            let service = try client.decode(ServiceDTO.self, from: answer)
            if existing.status == 404 {
                FileHandle.standardError.write(Data("\(service.name) created: version \(service.version), \(service.replicas.wanted) replicas of \(service.image)\n".utf8))
            } else {
                FileHandle.standardError.write(Data(changeText(service).utf8 + Data("\n".utf8)))
            }
            let rolling = service.deploy.map { ["running", "rolling-back"].contains($0.state) } ?? false
            try await DeployWatch(client: client, name: service.name, timeout: timeout).follow(deploy: rolling)
            if options.json { printJSON(try await client.request(.GET, path)) }
        }
    }
}

/// Follows a service until its deploy ends (or, for a create or a scale, until every
/// replica runs healthy), printing what changes on stderr.
struct DeployWatch {
    let client: APIClient
    let name: String
    let timeout: String

    func follow(deploy: Bool, rollback: Bool = false) async throws {
        let limit = commandLineDuration(timeout) ?? .seconds(600)
        let started = ContinuousClock.now
        let deadline = started + limit
        var shownEvents = 0
        var slots: [Int: String] = [:]
        var last: ServiceDTO?
        var shownWarnings: Set<String> = []
        func say(_ text: String) {
            FileHandle.standardError.write(Data("[\(elapsedText(ContinuousClock.now - started))] \(text)\n".utf8))
        }
        while ContinuousClock.now < deadline {
            let service = try client.decode(ServiceDTO.self, from: try await client.request(.GET, "/services/\(name)"))
            last = service
            for warning in service.warnings where shownWarnings.insert(warning).inserted { say("warning: \(warning)") }
            if let events = service.deploy?.events, deploy {
                for event in events.dropFirst(shownEvents) { say(event.message) }
                shownEvents = events.count
            }
            for task in service.tasks ?? [] where task.desiredState == .run && !task.state.isTerminal {
                var line = "version \(task.version) \(task.state.rawValue)"
                if let node = task.nodeName { line += " on \(node)" }
                if task.health != .none { line += ", \(task.health.rawValue)" }
                let key = task.slot * 1000 + task.version
                if slots[key] != line {
                    slots[key] = line
                    say("\(name).\(task.slot): \(line)")
                }
            }
            if deploy, let current = service.deploy {
                switch current.state {
                case "succeeded":
                    return
                case "failed":
                    throw CommandFailure(description: "deploy of version \(current.to) of \(name) failed: \(current.reason ?? "no reason given")")
                case "rolled-back" where rollback:
                    return
                case "rolled-back":
                    throw CommandFailure(description: "deploy of version \(current.to) of \(name) was rolled back to version \(current.from): \(current.reason ?? "no reason given")")
                default: break
                }
            } else if !deploy || service.deploy == nil {
                if service.replicas.healthy == service.replicas.wanted && service.replicas.running == service.replicas.wanted {
                    say("\(name): \(service.replicas.running)/\(service.replicas.wanted) replicas running")
                    return
                }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        let state = last.map { "\($0.replicas.running)/\($0.replicas.wanted) running\($0.deploy.map { ", deploy \($0.state)" } ?? "")" } ?? "unknown"
        throw CommandFailure(description: "service \(name) has not settled after \(timeout) (\(state)); `orchctl service ps \(name)` shows why")
    }
}

private func changeText(_ service: ServiceDTO) -> String {
    if let deploy = service.deploy, deploy.state == "running", deploy.to == service.latestVersion {
        return "\(service.name): version \(deploy.to) rolling out (from \(deploy.from)), \(service.replicas.wanted) replicas"
    }
    return "\(service.name): version \(service.version), \(service.replicas.wanted) replicas (no new version)"
}

private func printChange(_ service: ServiceDTO) { print(changeText(service)) }

private func checkDuration(_ text: String) throws {
    guard commandLineDuration(text) != nil else { throw ValidationError("--timeout: \"\(text)\" is not a duration such as 60s, 5m or 90 (seconds)") }
}

/// A service name as a path segment: a DNS label, checked here so that a typo is a clear error.
private func serviceName(_ name: String) throws -> String {
    if let problem = ServiceSpec.nameProblem(name) { throw CommandFailure(description: "service name \(name) \(problem)") }
    return name
}
