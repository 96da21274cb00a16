import Foundation
import HTTPTypes
import Hummingbird
import OrchControl
import OrchCore
import OrchHTTP
import OrchStore
import OrchWire

/// The manager's REST gateway (Protocol/openapi.yaml describes every route).
///
/// Routes are registered through ``APIRoutes``, which answers every error in the API's
/// shape, a known path asked with another method 405 with `Allow`, and a path with an
/// empty segment 404. The server it runs on should be `.http1WithAPIErrors()`, so that a
/// request the HTTP parser refuses (headers over 80 KiB: 431) is answered in that shape too.
struct RESTGateway: Sendable {
    let cluster: Cluster
    let store: any ManagerStore
    let metrics: ManagerMetrics
    let tokens: APITokens
    let joinSecret: JoinSecret
    let directory: LeaderDirectory
    let startedAt: Date
    /// Where clients reach this manager (known once it listens).
    let apiURL: @Sendable () -> String?
    /// The web console, when its templates could be loaded.
    var console: Console? = nil
    /// Whether the console's cookie is marked `Secure` (the gateway serves TLS).
    var secureCookies = false

    static let defaultLimit = 1000
    static let maximumLimit = 1_000_000

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        let routes = APIRoutes(router)
        if let console { routes.add(middleware: ConsoleSessionMiddleware(console: console)) }
        routes.add(middleware: BearerAuthMiddleware(
            hint: "the manager wrote its admin token to admin.token in its data directory (orchctl reads it by itself on that host; --token or ORCH_TOKEN elsewhere)",
            fallback: { ConsoleSession.current?.token }
        ) { [tokens] token in
            tokens.authenticate(token).map { ($0.name, $0.role) }
        })
        routes.add(middleware: FollowerMiddleware(directory: directory, ownURL: apiURL))
        if let console { addConsole(routes, console) }
        routes.get("healthz") { _, _ in
            let info = directory.info
            guard info.acting else {
                // A follower is healthy while it answers: it says who leads.
                let leader = directory.otherLeader
                return JSONBody(HealthDTO(status: "ok", role: "follower", manager: info.name, leader: info.leader, leaderURL: leader?.apiURL, epoch: info.leaderEpoch))
            }
            if let problem = await cluster.storeProblem {
                throw APIError(.serviceUnavailable, code: "store_unavailable", message: "the state cannot be written: \(problem)")
            }
            return JSONBody(
                HealthDTO(status: "ok", role: "leader", manager: info.name, leader: info.name, leaderURL: apiURL(), epoch: info.epoch),
                headers: await revisionHeader())
        }
        routes.get("managers") { _, _ in
            let info = directory.info
            if info.alone {
                return JSONBody([ManagerDTO(name: info.name, apiURL: apiURL() ?? "", role: "leader", epoch: nil, startedAt: startedAt, seenSecondsAgo: 0)])
            }
            return JSONBody(info.managers.map { row in
                let leads = row.name == info.leader
                // A manager not heard from for a few seconds is likely gone (its row stays an hour).
                let role = leads ? "leader" : row.seenSecondsAgo > 5 ? "silent" : "follower"
                return ManagerDTO(
                    name: row.name, apiURL: row.apiURL, wireAddress: row.wireAddress, role: role,
                    epoch: leads ? info.leaderEpoch : nil, startedAt: row.startedAt, seenSecondsAgo: row.seenSecondsAgo)
            })
        }
        routes.get("metrics") { _, _ in
            let (tasks, nodes) = await cluster.counts()
            let text = metrics.render(tasks: tasks, nodes: nodes)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        routes.get("tasks") { request, _ in try await listTasks(request) }
        routes.post("tasks") { request, _ in try await submit(request) }
        routes.get("tasks/:taskID") { _, context in
            let id = try await resolveTask(context)
            guard let record = await cluster.task(id) else { throw Self.apiError(.taskNotFound(id.rawValue)) }
            let history = try await store.history(of: id)
            return JSONBody(await cluster.dto(record, events: history), headers: await revisionHeader())
        }
        routes.delete("tasks/:taskID") { request, context in
            let id = try await resolveTask(context)
            do {
                // `?purge=true`: an ended task removed with its history (204); else a stop.
                if try Self.flag(request, "purge") {
                    let revision = try await cluster.purge(id, by: APICaller.name)
                    return Response(status: .noContent, headers: Self.revisionHeader(revision))
                }
                let (record, revision) = try await cluster.stop(id, by: APICaller.name)
                return try JSONBody(await cluster.dto(record), status: .accepted, headers: Self.revisionHeader(revision))
                    .response(from: request, context: context)
            } catch let error as ClusterError {
                throw Self.apiError(error)
            }
        }
        routes.get("tasks/:taskID/logs") { request, context in try await logs(request, context) }
        routes.get("events") { request, context in try await events(request, context) }
        routes.get("nodes") { _, _ in JSONBody(await cluster.listNodes(), headers: await revisionHeader()) }
        routes.get("nodes/:nodeID") { _, context in
            let text = try context.parameters.decoded("nodeID", code: "invalid_node_id", what: "node id")
            do {
                let id = try await cluster.resolveNode(text)
                guard let node = await cluster.node(id) else { throw ClusterError.nodeNotFound(text) }
                return JSONBody(node, headers: await revisionHeader())
            } catch let error as ClusterError {
                throw Self.apiError(error)
            }
        }
        for (route, drain) in [("nodes/:nodeID/drain", true), ("nodes/:nodeID/undrain", false)] {
            routes.post(RouterPath(route)) { request, context in
                let text = try context.parameters.decoded("nodeID", code: "invalid_node_id", what: "node id")
                let move = try Self.flag(request, "move")
                if move && !drain { throw APIError(.badRequest, code: "invalid_query", message: "move goes with drain, not undrain") }
                do {
                    let id = try await cluster.resolveNode(text)
                    let revision = try await cluster.drainNode(id, drain: drain, move: move)
                    guard let node = await cluster.node(id) else { throw ClusterError.nodeNotFound(text) }
                    return JSONBody(node, headers: Self.revisionHeader(revision))
                } catch let error as ClusterError {
                    throw Self.apiError(error)
                }
            }
        }
        routes.delete("nodes/:nodeID") { _, context in
            let text = try context.parameters.decoded("nodeID", code: "invalid_node_id", what: "node id")
            do {
                let id = try await cluster.resolveNode(text)
                let revision = try await cluster.removeNode(id)
                return Response(status: .noContent, headers: Self.revisionHeader(revision))
            } catch let error as ClusterError {
                throw Self.apiError(error)
            }
        }
        routes.get("services") { _, _ in JSONBody(await cluster.listServices(), headers: await revisionHeader()) }
        routes.post("services") { request, _ in
            let spec = try await request.serviceFile()
            do {
                let (record, created, revision) = try await cluster.createService(spec, by: APICaller.name)
                var headers = Self.revisionHeader(revision)
                headers[.location] = "/services/\(record.name)"
                return JSONBody(await cluster.serviceDTO(record), status: created ? .created : .ok, headers: headers)
            } catch let error as ClusterError {
                throw Self.apiError(error)
            }
        }
        routes.get("services/:name") { _, context in
            let name = try Self.serviceName(context)
            guard let record = await cluster.service(name) else { throw Self.apiError(.serviceNotFound(name)) }
            return JSONBody(await cluster.serviceDTO(record), headers: await revisionHeader())
        }
        routes.get("services/:name/endpoints") { request, context in
            let name = try Self.serviceName(context)
            let (index, wait) = try Self.blockingQuery(request)
            do {
                let catalog = try await cluster.endpoints(of: name, index: index, wait: wait)
                var headers = HTTPFields()
                headers[Self.indexField] = String(catalog.index)
                return JSONBody(catalog, headers: headers)
            } catch let error as ClusterError {
                throw Self.apiError(error)
            }
        }
        routes.put("services/:name") { request, context in
            let name = try Self.serviceName(context)
            let change = try await request.serviceChange()
            return try await serviceAnswer { () async throws(ClusterError) in try await cluster.updateService(name, change, by: APICaller.name) }
        }
        routes.post("services/:name/rollback") { _, context in
            let name = try Self.serviceName(context)
            return try await serviceAnswer { () async throws(ClusterError) in try await cluster.rollbackService(name, by: APICaller.name) }
        }
        routes.delete("services/:name") { _, context in
            let name = try Self.serviceName(context)
            return try await serviceAnswer(status: .accepted) { () async throws(ClusterError) in try await cluster.removeService(name, by: APICaller.name) }
        }
        routes.get("tokens") { _, _ in JSONBody(tokens.list()) }
        routes.post("tokens") { request, _ in
            let body = try await request.jsonObject(limit: 4096)
            guard let name = body["name"] as? String else {
                throw APIError(.badRequest, code: "invalid_token", message: "give the token a name: {\"name\": \"ci\", \"role\": \"operator\"}")
            }
            let roleText = body["role"] as? String ?? APIRole.viewer.rawValue
            guard let role = APIRole(rawValue: roleText) else {
                throw APIError(.badRequest, code: "invalid_token",
                               message: "role must be one of \(APIRole.allCases.map(\.rawValue).joined(separator: ", ")), not \(roleText)")
            }
            return JSONBody(try await tokens.create(name: name, role: role), status: .created)
        }
        routes.post("join-token/rotate") { _, _ in
            do {
                let token = try await joinSecret.rotate()
                return JSONBody(["token": token.description], status: .created)
            } catch {
                throw APIError(.serviceUnavailable, code: "store_unavailable", message: "the new join token could not be written: \(error)")
            }
        }
        routes.delete("tokens/:name") { _, context in
            let name = try context.parameters.decoded("name", code: "invalid_token_name", what: "token name")
            try await tokens.revoke(name)
            return Response(status: .noContent)
        }
        return router
    }

    private func serviceAnswer(
        status: HTTPResponse.Status = .ok, _ body: () async throws(ClusterError) -> (record: ServiceRecord, revision: UInt64)
    ) async throws -> JSONBody<ServiceDTO> {
        do {
            let (record, revision) = try await body()
            return JSONBody(await cluster.serviceDTO(record), status: status, headers: Self.revisionHeader(revision))
        } catch {
            throw Self.apiError(error)
        }
    }

    /// The service the path names: a DNS label (400 `invalid_service_name` otherwise).
    static func serviceName(_ context: BasicRequestContext) throws -> String {
        let name = try context.parameters.decoded("name", code: "invalid_service_name", what: "service name")
        if let problem = ServiceSpec.nameProblem(name) {
            throw APIError(.badRequest, code: "invalid_service_name", message: "service name \(String(reflecting: String(name.prefix(64)))) \(problem)")
        }
        return name
    }

    private func listTasks(_ request: Request) async throws -> JSONBody<[TaskDTO]> {
        let query = request.uri.queryParameters
        var state: TaskState?
        if let text = query.get("state") {
            guard let parsed = TaskState(rawValue: text.lowercased()) else {
                throw APIError(.badRequest, code: "invalid_query", message: "state must be one of \(TaskState.allCases.map(\.rawValue).joined(separator: ", ")), not \(text)")
            }
            state = parsed
        }
        var node: NodeID?
        if let text = query.get("node") {
            do { node = try await cluster.resolveNode(text) } catch { throw Self.apiError(error) }
        }
        var limit = Self.defaultLimit
        if let text = query.get("limit") {
            guard let parsed = Int(text), (1...Self.maximumLimit).contains(parsed) else {
                throw APIError(.badRequest, code: "invalid_query", message: "limit must be a number from 1 to \(Self.maximumLimit), not \(text)")
            }
            limit = parsed
        }
        let service = query.get("service")
        if let service, await cluster.service(service) == nil {
            throw Self.apiError(.serviceNotFound(service))
        }
        let after = query.get("after").map { TaskID(rawValue: $0) }
        // The listing is built here, from a copy of the table, not on the cluster's actor:
        // a page of a million tasks must not hold up heartbeats meanwhile.
        let revision = await cluster.revision
        let table = await cluster.taskTable()
        let (tasks, more) = table.list(state: state, node: node, service: service, after: after, limit: limit)
        var headers = Self.revisionHeader(revision)
        if more, let last = tasks.last {
            var next = "/tasks?limit=\(limit)&after=\(last.id.rawValue)"
            if let state { next += "&state=\(state.rawValue)" }
            if let node { next += "&node=\(node.rawValue)" }
            if let service { next += "&service=\(service)" }
            headers[HTTPField.Name("Link")!] = "<\(next)>; rel=\"next\""
        }
        return JSONBody(tasks, headers: headers)
    }

    /// `GET /events`: the cluster's changes. As JSON, the newest `limit` (or those after
    /// `since`, waiting up to `wait` for one when there are none yet); as server-sent events
    /// (`follow=true`), a stream from `since` (or from now),
    /// resumed after `Last-Event-ID`. `task`, `node` and `service` keep one's events.
    private func events(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        var since: UInt64?
        if let text = request.headers[HTTPField.Name("Last-Event-ID")!] ?? query.get("since") {
            // Event ids are at most 2^63 - 1, as the document says (a larger one names none).
            guard let value = UInt64(text), value <= UInt64(Int64.max) else {
                throw APIError(.badRequest, code: "invalid_query", message: "since must be the id of an event (a whole number), not \(String(text.prefix(40)))")
            }
            since = value
        }
        var limit = Self.defaultLimit
        if let text = query.get("limit") {
            guard let parsed = Int(text), (1...EventLog().capacity).contains(parsed) else {
                throw APIError(.badRequest, code: "invalid_query", message: "limit must be a number from 1 to \(EventLog().capacity), not \(text)")
            }
            limit = parsed
        }
        var task: TaskID?, node: NodeID?
        let service = query.get("service")
        do {
            if let text = query.get("task") { task = try await cluster.resolveTask(text) }
            if let text = query.get("node") { node = try await cluster.resolveNode(text) }
        } catch {
            throw Self.apiError(error)
        }
        if let service, await cluster.service(service) == nil { throw Self.apiError(.serviceNotFound(service)) }
        guard try Self.flag(request, "follow") else {
            let (_, wait) = try Self.blockingQuery(index: nil, wait: query.get("wait"))
            let page = await cluster.events(after: since, limit: limit, task: task, node: node, service: service, wait: query.get("wait") == nil ? .zero : wait)
            return try JSONBody(page).response(from: request, context: context)
        }
        let start: UInt64 = if let since { since } else { await cluster.lastEvent }
        let generation = await cluster.termGeneration
        let body = ResponseBody { [cluster, task, node] writer in
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            var last = start
            // A comment first: the stream is open, and proxies pass it on at once.
            try await writer.write(ByteBuffer(string: ": events after \(start)\n\n"))
            while await cluster.serves(generation) {
                let page = await cluster.events(after: last, limit: 1000, task: task, node: node, service: service, wait: .seconds(15))
                // Stepped down meanwhile: what this page says is the empty state of a follower.
                guard await cluster.serves(generation) else { break }
                var text = ""
                if page.gap { text += "event: gap\ndata: {\"after\":\(last)}\n\n" }
                for event in page.events {
                    text += "id: \(event.id)\nevent: \(event.kind.rawValue)\ndata: \(String(decoding: try encoder.encode(event), as: UTF8.self))\n\n"
                }
                if page.last != last && page.events.isEmpty { text += "id: \(page.last)\n\n" }
                last = page.last
                try await writer.write(ByteBuffer(string: text.isEmpty ? ": keep-alive\n\n" : text))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }

    private func submit(_ request: Request) async throws -> JSONBody<TaskDTO> {
        let submission = try await request.taskSubmission()
        do {
            if submission.intent == .stop {
                // Cube stops a task by posting its event again with State 3.
                guard let id = submission.spec.id else {
                    throw APIError(.badRequest, code: "invalid_task", message: "a stop event needs the task's id")
                }
                let (record, revision) = try await cluster.stop(id, by: APICaller.name)
                return JSONBody(await cluster.dto(record), status: .accepted, headers: Self.revisionHeader(revision))
            }
            let (record, created, revision) = try await cluster.submit(submission.spec, by: APICaller.name)
            var headers = Self.revisionHeader(revision)
            headers[.location] = "/tasks/\(record.id.rawValue)"
            return JSONBody(await cluster.dto(record), status: created ? .created : .ok, headers: headers)
        } catch let error as ClusterError {
            throw Self.apiError(error)
        }
    }

    /// The task's output, relayed from its worker; with `follow=true` it streams until the
    /// task ends or the client goes away (then the worker is told to stop sending).
    private func logs(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let id = try await resolveTask(context)
        let query = request.uri.queryParameters
        var tail: Int?
        if let text = query.get("tail") {
            guard let value = Int(text), value >= 0 else {
                throw APIError(.badRequest, code: "invalid_query", message: "tail must be a number of lines, not \(text)")
            }
            tail = value
        }
        let follow = ["1", "true", "yes"].contains(query.get("follow")?.lowercased() ?? "")
        let previous = try Self.flag(request, "previous")
        let opened: (stream: UInt64, events: AsyncStream<LogStreams.Event>, link: NodeLink)
        do { opened = try await cluster.openLogs(id, tail: tail, follow: follow, previous: previous) } catch { throw Self.apiError(error) }
        let (stream, events, link) = opened
        // A worker that cannot serve the logs says so at once: that is a 409, not a 200
        // whose body holds the error. Output (or silence) within a moment starts the stream.
        if let refusal = await cluster.logStreams.refusal(of: stream, within: .milliseconds(500)) {
            throw APIError(.conflict, code: "logs_unavailable", message: "no logs: \(refusal)")
        }
        let body = ResponseBody { writer in
            var ended = false
            defer {
                if !ended {
                    // The client went away: the worker stops sending.
                    link.send(.logEnd(LogEnd(streamID: stream, error: nil)))
                    cluster.logStreams.finish(stream, error: nil)
                }
            }
            for await event in events {
                switch event {
                case .output(let bytes):
                    try await writer.write(ByteBuffer(bytes: bytes))
                    link.send(.logCredit(LogCredit(streamID: stream, bytes: UInt32(bytes.count))))
                case .end(let error):
                    ended = true
                    if let error { try await writer.write(ByteBuffer(string: "\n[orch: \(error)]\n")) }
                }
            }
            ended = true
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: body)
    }

    /// The task the path names, by its id or a unique prefix; 400 `invalid_task_id` for
    /// text no task id can start with (`%00`, 1,000 characters, `é`).
    func resolveTask(_ context: BasicRequestContext) async throws -> TaskID {
        let text = try context.parameters.taskID()
        do {
            return try await cluster.resolveTask(text)
        } catch {
            throw Self.apiError(error)
        }
    }

    /// `X-Orch-Index`: the index of the endpoints an answer lists, to ask with next.
    static let indexField = HTTPField.Name("X-Orch-Index")!
    static let defaultWait: Duration = .seconds(30)
    static let maximumWait: Duration = .seconds(300)

    /// `?index=N&wait=30s`: answer once something differs from index N, or after the wait
    /// (default 30 s, at most 5 min). Without an index: at once.
    static func blockingQuery(_ request: Request) throws -> (index: UInt64?, wait: Duration) {
        let query = request.uri.queryParameters
        return try blockingQuery(index: query.get("index"), wait: query.get("wait"))
    }

    static func blockingQuery(index indexText: String?, wait waitText: String?) throws -> (index: UInt64?, wait: Duration) {
        var index: UInt64?
        if let text = indexText {
            // The schema's index is an int64: past Int64.max is no index the server gave.
            guard let value = UInt64(text), value <= UInt64(Int64.max) else {
                throw APIError(.badRequest, code: "invalid_query", message: "index must be a whole number (the X-Orch-Index of the last answer), not \(String(text.prefix(40)))")
            }
            index = value
        }
        var wait = index == nil ? .zero : defaultWait
        if let text = waitText {
            // A unit is required (`0s`, not `0`), as the API's Duration schema says.
            guard text.last?.isLetter == true, let value = DurationText.parse(text), value >= .zero, value <= maximumWait else {
                throw APIError(.badRequest, code: "invalid_query", message: "wait must be a duration from 0s to 5m, such as 30s, not \(String(text.prefix(40)))")
            }
            if index != nil { wait = value }
        }
        return (index, wait)
    }

    /// `X-Orch-Revision`: the revision of the manager's state the answer reflects.
    static let revisionField = HTTPField.Name("X-Orch-Revision")!

    static func revisionHeader(_ revision: UInt64) -> HTTPFields {
        var fields = HTTPFields()
        fields[revisionField] = String(revision)
        return fields
    }

    private func revisionHeader() async -> HTTPFields { Self.revisionHeader(await cluster.revision) }

    /// A boolean query parameter: absent or `false` is false, `true` is true; anything else
    /// is refused (400 `invalid_query`).
    static func flag(_ request: Request, _ name: String) throws -> Bool {
        guard let text = request.uri.queryParameters.get(name) else { return false }
        switch text {
        case "true": return true
        case "false": return false
        default: throw APIError(.badRequest, code: "invalid_query", message: "\(name) must be true or false, not \(text)")
        }
    }

    static func apiError(_ error: ClusterError) -> APIError {
        switch error {
        case .taskNotFound: APIError(.notFound, code: "task_not_found", message: error.description)
        case .nodeNotFound: APIError(.notFound, code: "node_not_found", message: error.description)
        case .ambiguousTaskID, .ambiguousNodeID: APIError(.conflict, code: "ambiguous_id", message: error.description)
        case .taskConflict: APIError(.conflict, code: "task_conflict", message: error.description)
        case .nameTaken: APIError(.conflict, code: "name_taken", message: error.description)
        case .taskNotEnded: APIError(.conflict, code: "task_not_ended", message: error.description)
        case .nodeIsUp: APIError(.conflict, code: "node_is_up", message: error.description)
        case .nodeRemoved: APIError(.notFound, code: "node_not_found", message: error.description)
        case .nodeConnected: APIError(.conflict, code: "node_is_up", message: error.description)
        case .unavailable: APIError(.serviceUnavailable, code: "store_unavailable", message: error.description)
        case .invalidTask(let problems):
            APIError(.badRequest, code: "invalid_task", message: error.description, details: problems)
        case .noLogs: APIError(.conflict, code: "logs_unavailable", message: error.description)
        case .taskTooLarge: APIError(.badRequest, code: "invalid_task", message: error.description)
        case .serviceNotFound: APIError(.notFound, code: "service_not_found", message: error.description)
        case .serviceConflict: APIError(.conflict, code: "service_conflict", message: error.description)
        case .serviceRemoving: APIError(.conflict, code: "service_removing", message: error.description)
        case .nothingToRollBack: APIError(.conflict, code: "nothing_to_roll_back", message: error.description)
        case .invalidService(let problems):
            APIError(.badRequest, code: "invalid_service", message: error.description, details: problems)
        }
    }
}
