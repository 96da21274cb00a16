import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Mustache
import OrchControl
import OrchCore
import OrchHTTP
import Synchronization

/// The web console, served by the manager under `/ui` on the REST port: server-rendered
/// HTML from the Mustache templates in `Console/Templates` (the module's resources), behind
/// the REST API's own tokens and roles.
///
/// Signing in takes a token; the session is a random id in an `HttpOnly`, `SameSite=Strict`
/// cookie, kept in memory with its token, which the gateway then accepts in place of the
/// bearer header (``ConsoleSessionMiddleware``): a revoked token ends its sessions. Every
/// write made with the cookie carries the session's CSRF token (a form field, or
/// `X-Orch-CSRF` on an API request).
final class Console: Sendable {
    let library: MustacheLibrary
    let stylesheet: String
    let sessions = ConsoleSessions()

    static let cookie = "orch_session"

    init(library: MustacheLibrary, stylesheet: String) {
        self.library = library
        self.stylesheet = stylesheet
    }

    /// The templates shipped with the module.
    static func load() async throws -> Console {
        guard let directory = Bundle.module.resourceURL?.appendingPathComponent("Templates").path else {
            throw ConsoleError("the console's templates are not in the module's resources")
        }
        let library = try await MustacheLibrary(directory: directory)
        let stylesheet = try String(contentsOfFile: directory + "/console.css", encoding: .utf8)
        return Console(library: library, stylesheet: stylesheet)
    }

    /// `template` rendered with `context` (every value HTML-escaped by the templates).
    func render(_ template: String, _ context: [String: Any]) -> String {
        library.render(context, withTemplate: template) ?? "template \(template) is missing"
    }

    /// What every page's header needs: who is signed in, and the session's CSRF token.
    static func chrome(title: String, session: ConsoleSession?) -> [String: Any] {
        var context: [String: Any] = ["title": title]
        if let session {
            context["signedIn"] = true
            context["caller"] = session.name
            context["role"] = session.role.rawValue
            context["csrf"] = session.csrf
        }
        return context
    }

    /// The overview page's context: tasks and nodes by state, services and their replicas,
    /// the newest events (newest first).
    static func overview(
        tasksByState: [TaskState: Int], nodesByState: [NodeDTO.State: Int], services: [ServiceDTO], events: [ClusterEventDTO],
        session: ConsoleSession?
    ) -> [String: Any] {
        var context = chrome(title: "Overview", session: session)
        context["taskCount"] = tasksByState.values.reduce(0, +)
        context["tasksByState"] = TaskState.allCases.compactMap { state in
            tasksByState[state].flatMap { $0 > 0 ? ["state": state.rawValue, "count": $0] as [String: Any] : nil }
        }
        context["nodeCount"] = nodesByState.values.reduce(0, +)
        context["nodesUp"] = nodesByState[.up] ?? 0
        context["nodesByState"] = NodeDTO.State.allCases.compactMap { state in
            nodesByState[state].flatMap { $0 > 0 ? ["state": state.rawValue, "count": $0] as [String: Any] : nil }
        }
        context["serviceCount"] = services.count
        context["servicesHealthy"] = services.filter { $0.replicas.running >= $0.replicas.wanted }.count
        context["services"] = services.map { ["name": $0.name, "running": $0.replicas.running, "wanted": $0.replicas.wanted] as [String: Any] }
        let formatter = ISO8601DateFormatter()
        context["events"] = events.reversed().map { event -> [String: Any] in
            let subject = event.name ?? event.task.map { String($0.rawValue.prefix(12)) } ?? event.nodeName ?? event.node?.rawValue ?? "-"
            return ["at": formatter.string(from: event.at), "subject": subject, "state": event.state, "message": event.message]
        }
        return context
    }
}

extension Console {
    /// A task as a row: short id, name (a replica as `service.slot`), node, ports, reason.
    static func row(_ task: TaskDTO) -> [String: Any] {
        [
            "id": task.id.rawValue, "short": String(task.id.rawValue.prefix(12)), "name": shownName(task), "image": task.image,
            "state": task.state.rawValue, "node": task.nodeName ?? task.node?.rawValue ?? "-", "ports": ports(task),
            "restarts": task.restarts, "reason": reason(task) ?? "-",
        ]
    }

    static func shownName(_ task: TaskDTO) -> String {
        if let service = task.service, let slot = task.slot { return "\(service).\(slot)" }
        return task.name ?? "-"
    }

    static func ports(_ task: TaskDTO) -> String {
        task.ports.isEmpty ? "-" : task.ports.map { "\($0.hostIP):\($0.hostPort)->\($0.containerPort)" }.joined(separator: ", ")
    }

    static func reason(_ task: TaskDTO) -> String? {
        task.error ?? task.exitCode.map { "exited with code \($0)" }
    }

    /// The tasks page: a page of tasks (in the state asked for, if any) and the next page's link.
    static func tasks(_ tasks: [TaskDTO], state: TaskState?, next: String?, session: ConsoleSession?) -> [String: Any] {
        var context = chrome(title: "Tasks", session: session)
        context["tasks"] = tasks.map(row)
        context["filtered"] = state != nil
        context["states"] = TaskState.allCases.map { ["name": $0.rawValue, "selected": $0 == state] as [String: Any] }
        if let next { context["next"] = next }
        return context
    }

    /// A task's page: its spec, state and events; stop and remove for an operator's session.
    static func task(_ task: TaskDTO, events: [TaskHistoryEntry], session: ConsoleSession?) -> [String: Any] {
        var context = row(task)
        for (key, value) in chrome(title: shownName(task) == "-" ? String(task.id.rawValue.prefix(12)) : shownName(task), session: session) {
            context[key] = value
        }
        context["command"] = task.spec.command.map { $0.joined(separator: " ") } ?? "(the image's)"
        context["desired"] = task.desiredState.rawValue
        context["attempt"] = task.attempt
        context["health"] = task.health.rawValue
        if let reason = reason(task) { context["reason"] = reason } else { context.removeValue(forKey: "reason") }
        let canWrite = (session?.role ?? .viewer) >= .operator
        context["canWrite"] = canWrite
        context["canStop"] = canWrite && task.desiredState == .run && !task.state.isTerminal
        context["canRemove"] = canWrite && task.state.isTerminal
        let formatter = ISO8601DateFormatter()
        context["events"] = events.reversed().map { ["at": formatter.string(from: $0.at), "state": $0.state.rawValue, "message": $0.message] as [String: Any] }
        return context
    }
}

struct ConsoleError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A signed-in browser: the token it signed in with, whose it is, and its CSRF token.
struct ConsoleSession: Sendable {
    var id: String
    var token: String
    var name: String
    var role: APIRole
    var csrf: String
    var expires: Date
}

/// The console's sessions, in memory (a restarted manager signs everyone out).
final class ConsoleSessions: Sendable {
    private let sessions = Mutex<[String: ConsoleSession]>([:])
    static let lifetime: TimeInterval = 12 * 3600

    func create(token: String, name: String, role: APIRole, now: Date = Date()) -> ConsoleSession {
        let session = ConsoleSession(
            id: Self.random(), token: token, name: name, role: role, csrf: Self.random(), expires: now.addingTimeInterval(Self.lifetime))
        sessions.withLock { sessions in
            sessions = sessions.filter { $0.value.expires > now }
            sessions[session.id] = session
        }
        return session
    }

    func session(_ id: String, now: Date = Date()) -> ConsoleSession? {
        sessions.withLock { sessions in
            guard let session = sessions[id], session.expires > now else { return nil }
            return session
        }
    }

    func remove(_ id: String) { _ = sessions.withLock { $0.removeValue(forKey: id) } }

    /// 32 random bytes, hex.
    static func random() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { $0.map { String(format: "%02x", $0) }.joined() }
    }
}

extension Request {
    /// The value of cookie `name`, if the request has it.
    func cookie(_ name: String) -> String? {
        for header in headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if pair.count == 2, pair[0] == name { return pair[1] }
            }
        }
        return nil
    }
}

/// Reads `a=1&b=two+words` (an HTML form's body).
func formFields(_ text: String) -> [String: String] {
    var fields: [String: String] = [:]
    for pair in text.split(separator: "&") {
        let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map {
            String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
        }
        if let key = parts.first { fields[key] = parts.count > 1 ? parts[1] : "" }
    }
    return fields
}

/// The console's sessions at the gateway, before the token check: a request with the
/// session cookie and no `Authorization` header is checked as if it brought the session's
/// token as its bearer (``BearerAuthMiddleware``'s fallback; roles, revocation and every
/// route's guard stay the token's); a write made so must carry
/// the session's CSRF token (`X-Orch-CSRF`; the console's own forms are checked by their
/// handlers, from the form). A console page asked without a session is sent to sign in.
struct ConsoleSessionMiddleware<Context: RequestContext>: RouterMiddleware {
    let console: Console

    static func isPublic(_ path: String) -> Bool { path == "/ui/login" || path == "/ui/console.css" }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        let page = path == "/ui" || path.hasPrefix("/ui/")
        guard request.headers[.authorization] == nil, !Self.isPublic(path) else { return try await next(request, context) }
        guard let id = request.cookie(Console.cookie), let session = console.sessions.session(id) else {
            if page, request.method == .get || request.method == .head {
                return Response(status: .seeOther, headers: [.location: "/ui/login"])
            }
            return try await next(request, context)
        }
        let writing = request.method != .get && request.method != .head
        if writing, !page, request.headers[HTTPField.Name("X-Orch-CSRF")!] != session.csrf {
            throw APIError(.forbidden, code: "csrf", message: "a write made with the console's session needs its CSRF token (X-Orch-CSRF)")
        }
        return try await ConsoleSession.$current.withValue(session) { try await next(request, context) }
    }
}

extension ConsoleSession {
    /// The session of the request being handled, if it came with one.
    @TaskLocal static var current: ConsoleSession?
}

extension RESTGateway {
    /// The console's routes: its stylesheet, sign-in and sign-out, and its pages.
    func addConsole(_ routes: APIRoutes<BasicRequestContext>, _ console: Console) {
        routes.get("ui/console.css") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/css; charset=utf-8", .cacheControl: "max-age=300"],
                     body: .init(byteBuffer: ByteBuffer(string: console.stylesheet)))
        }
        routes.get("ui/login") { _, _ in
            Self.page(console.render("login", Console.chrome(title: "Sign in", session: nil)))
        }
        routes.post("ui/login") { request, _ in
            let body = try await request.body.collect(upTo: 64 << 10)
            let token = (formFields(String(buffer: body))["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            guard let record = tokens.authenticate(token) else {
                var context = Console.chrome(title: "Sign in", session: nil)
                context["error"] = "That token is not valid (unknown or revoked)."
                return Self.page(console.render("login", context), status: .unauthorized)
            }
            let session = console.sessions.create(token: token, name: record.name, role: record.role)
            var headers: HTTPFields = [.location: "/ui"]
            headers[.setCookie] = "\(Console.cookie)=\(session.id); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(Int(ConsoleSessions.lifetime))"
                + (secureCookies ? "; Secure" : "")
            return Response(status: .seeOther, headers: headers)
        }
        routes.post("ui/logout") { request, _ in
            let body = try await request.body.collect(upTo: 64 << 10)
            guard let session = ConsoleSession.current, formFields(String(buffer: body))["csrf"] == session.csrf else {
                throw APIError(.forbidden, code: "csrf", message: "signing out needs the session's CSRF token")
            }
            console.sessions.remove(session.id)
            var headers: HTTPFields = [.location: "/ui/login"]
            headers[.setCookie] = "\(Console.cookie)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            return Response(status: .seeOther, headers: headers)
        }
        routes.get("ui/tasks") { request, _ in
            let query = request.uri.queryParameters
            let state = query.get("state").flatMap { $0.isEmpty ? nil : TaskState(rawValue: $0) }
            let after = query.get("after").map { TaskID(rawValue: $0) }
            let table = await cluster.taskTable()
            let (tasks, more) = table.list(state: state, node: nil, service: nil, after: after, limit: 100)
            let next = tasks.last.flatMap { last in
                more ? "/ui/tasks?after=\(last.id.rawValue)" + (state.map { "&state=\($0.rawValue)" } ?? "") : nil
            }
            return Self.page(console.render("tasks", Console.tasks(tasks, state: state, next: next, session: ConsoleSession.current)))
        }
        routes.get("ui/tasks/:taskID") { _, context in
            let id = try await resolveTask(context)
            guard let record = await cluster.task(id) else { throw Self.apiError(.taskNotFound(id.rawValue)) }
            let history = try await store.history(of: id)
            return Self.page(console.render("task", Console.task(await cluster.dto(record), events: history, session: ConsoleSession.current)))
        }
        for action in ["stop", "rm"] {
            routes.post(RouterPath("ui/tasks/:taskID/\(action)")) { request, context in
                let body = try await request.body.collect(upTo: 64 << 10)
                guard let session = ConsoleSession.current, formFields(String(buffer: body))["csrf"] == session.csrf else {
                    throw APIError(.forbidden, code: "csrf", message: "a change made from the console needs the session's CSRF token")
                }
                let id = try await resolveTask(context)
                do {
                    if action == "stop" {
                        _ = try await cluster.stop(id, by: session.name)
                    } else {
                        _ = try await cluster.purge(id, by: session.name)
                        return Response(status: .seeOther, headers: [.location: "/ui/tasks"])
                    }
                } catch let error as ClusterError {
                    throw Self.apiError(error)
                }
                return Response(status: .seeOther, headers: [.location: "/ui/tasks/\(id.rawValue)"])
            }
        }
        routes.get("ui") { _, _ in
            let (tasks, nodes) = await cluster.counts()
            let events = await cluster.events(after: nil, limit: 20, task: nil, node: nil, service: nil, wait: .zero)
            let context = Console.overview(
                tasksByState: tasks, nodesByState: nodes, services: await cluster.listServices(), events: events.events,
                session: ConsoleSession.current)
            return Self.page(console.render("overview", context))
        }
    }

    /// An HTML page: never cached, no script or frame from elsewhere.
    static func page(_ html: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status,
            headers: [
                .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                .contentSecurityPolicy: "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ],
            body: .init(byteBuffer: ByteBuffer(string: html)))
    }
}
