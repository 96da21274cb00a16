import HTTPTypes
import Hummingbird
import OrchCore
import OrchHTTP

/// A follower serves no route of the cluster's state: it answers each with
/// `307 Temporary Redirect` to the same path and query on the leader's REST gateway (the
/// method and body are kept; `orchctl` follows it with its token), or `503 no_leader` while
/// no manager leads or this one is still loading the state it just took over. `GET
/// /healthz` and `GET /managers` are answered by every manager.
///
/// Placed after the token check: whoever has no token learns nothing of the leader.
struct FollowerMiddleware<Context: RequestContext>: RouterMiddleware {
    let directory: LeaderDirectory
    /// Where this manager is reached: a leader announced there is this one under an old name
    /// (a restart), never a place to send anyone.
    let ownURL: @Sendable () -> String?

    static func answeredByEveryManager(_ path: String) -> Bool {
        path == "/healthz" || path == "/managers"
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let info = directory.info
        if info.acting || Self.answeredByEveryManager(request.uri.path) { return try await next(request, context) }
        guard let leader = directory.otherLeader, leader.apiURL != ownURL() else {
            var headers = HTTPFields()
            headers[.retryAfter] = "1"
            let message = info.leader == info.name
                ? "this manager is taking over as the leader and loading the state; try again in a moment"
                : "no manager leads right now (a new leader is taken within a few seconds); try again"
            throw APIError(.serviceUnavailable, code: "no_leader", message: message, headers: headers)
        }
        var headers = HTTPFields()
        headers[.location] = leader.apiURL + request.uri.description
        headers[.cacheControl] = "no-store"
        return try APIError(
            .temporaryRedirect, code: "not_leader", message: "this manager follows; \(leader.name) leads, at \(leader.apiURL)", headers: headers
        ).response(from: request, context: context)
    }
}
