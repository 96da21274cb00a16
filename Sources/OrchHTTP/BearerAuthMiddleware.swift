import HTTPTypes
import Hummingbird
import OrchCore

/// Lets a request through only with `Authorization: Bearer TOKEN` of a role that may ask it
/// (``APIRole/required(method:path:)``): 401 without a token or with one that is unknown or
/// revoked, 403 for a role below the route's. `GET /healthz` needs none. Below it, handlers
/// read the caller's name from ``APICaller/name``.
///
/// Add it right after ``APIRoutes`` is made, before any route, so that it guards every
/// route and every miss alike (an unknown path without a token is a 401, not a 404: no
/// route's existence is told to whoever has no token).
public struct BearerAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    public typealias Authenticate = @Sendable (String) -> (name: String, role: APIRole)?

    let authenticate: Authenticate
    /// Where the people who get a 401 find a token: one sentence, in the message.
    let hint: String
    /// The token of a request without an `Authorization` header, if it has one another way
    /// (the web console's session).
    let fallback: @Sendable () -> String?

    public init(hint: String, fallback: @escaping @Sendable () -> String? = { nil }, authenticate: @escaping Authenticate) {
        self.hint = hint
        self.fallback = fallback
        self.authenticate = authenticate
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard let needed = APIRole.required(method: request.method.rawValue, path: path) else {
            return try await next(request, context)
        }
        guard let header = request.headers[.authorization] ?? fallback().map({ "Bearer \($0)" }) else {
            throw Self.unauthorized("\(request.method) \(path) needs a token (Authorization: Bearer TOKEN); \(hint)")
        }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw Self.unauthorized("the Authorization header must be \"Bearer TOKEN\"; \(hint)")
        }
        guard let caller = authenticate(String(parts[1]).trimmingCharacters(in: .whitespaces)) else {
            throw Self.unauthorized("the token is not valid (unknown or revoked); \(hint)")
        }
        guard caller.role >= needed else {
            throw APIError(
                .forbidden, code: "forbidden",
                message: "token \(caller.name) has the role \(caller.role.rawValue); \(request.method) \(path) needs \(needed.rawValue) or above")
        }
        return try await APICaller.$name.withValue(caller.name) { try await next(request, context) }
    }

    static func unauthorized(_ message: String) -> APIError {
        var headers = HTTPFields()
        headers[.wwwAuthenticate] = "Bearer realm=\"orch\""
        return APIError(.unauthorized, code: "unauthorized", message: message, headers: headers)
    }
}
