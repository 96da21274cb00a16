import ArgumentParser
import Foundation
import OrchCore

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Shows the cluster's changes: each task's change of state and why, each node's.",
        discussion: """
            Each line is one change: its time, the task (name and short id) or node, the
            state after it, and what happened. Without --follow, the newest changes the
            manager holds; with it, every change from now until Ctrl-C.

            Examples:
              orchctl events
              orchctl events web
              orchctl events --node node-1 --follow
              orchctl events --service api --since 120 --json
            """.reflowed)

    @Argument(help: ArgumentHelp("Only this task's changes: its id, its name, or a unique prefix of its id.", valueName: "task"))
    var task: String?

    @Option(help: ArgumentHelp("Only the changes of this node (its name or id) and of the tasks on it.", valueName: "node"))
    var node: String?

    @Option(help: ArgumentHelp("Only the changes of this service's tasks.", valueName: "name"))
    var service: String?

    @Flag(name: .shortAndLong, help: "Keep printing changes as they happen.")
    var follow = false

    @Option(help: ArgumentHelp("Start after the change with this id (the `id` of --json).", valueName: "id"))
    var since: UInt64?

    @Option(help: ArgumentHelp("Without --follow, at most this many changes (the newest).", valueName: "N"))
    var limit: Int = 100

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if limit < 1 || limit > 10_000 { throw ValidationError("--limit must be from 1 to 10000") }
        if task?.isEmpty == true { throw ValidationError("a task id or name must not be empty") }
    }

    var query: String {
        var parts: [String] = []
        func add(_ key: String, _ value: String?) {
            if let value { parts.append("\(key)=\(value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? value)") }
        }
        add("task", task)
        add("node", node)
        add("service", service)
        return parts.joined(separator: "&")
    }

    func run() async throws {
        try await runClient {
            let client = try options.client
            if follow {
                try await client.followEvents(query, since: since) { events in
                    for event in events { print(options.json ? Self.jsonLine(event) : Self.line(event)) }
                    flushOutput()
                }
                return
            }
            var path = "/events?limit=\(limit)" + (query.isEmpty ? "" : "&" + query)
            if let since { path += "&since=\(since)" }
            let answer = try await client.request(.GET, path)
            let page = try client.decode(EventPageDTO.self, from: answer)
            if options.json { printJSON(answer); return }
            if page.gap, since != nil { print("(older changes are no longer held: the manager keeps the newest \(10_000) and restarts forget them)") }
            for event in page.events { print(Self.line(event)) }
            if page.events.isEmpty { printError("no changes\(query.isEmpty ? "" : " of that") yet") }
        }
    }

    /// `2026-12-03T19:50:01Z  task web 0123456789ab  running  started as 1a2b3c4d5e6f on node-1`.
    static func line(_ event: ClusterEventDTO) -> String {
        let time = timeFormat.string(from: event.at)
        switch event.kind {
        case .task:
            let who = [event.name, event.task?.short].compactMap { $0 }.joined(separator: " ")
            var message = event.message
            if let node = event.nodeName, !message.contains(node) { message += " (on \(node))" }
            return "\(time)  task \(who)  \(event.state)  \(message)"
        case .node:
            return "\(time)  node \(event.nodeName ?? event.node?.rawValue ?? "-")  \(event.state)  \(event.message)"
        }
    }

    static func jsonLine(_ event: ClusterEventDTO) -> String {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: encoder.encode(event), as: UTF8.self)) ?? "{}"
    }

    nonisolated(unsafe) static let timeFormat: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter
    }()
}
