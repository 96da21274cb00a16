import Foundation
import NIOHTTP1
import OrchSecurity
import OrchTestSupport
import Testing

/// The REST gateway's tokens and roles against a real manager process: every route refuses
/// a request without a token, with a wrong one and with a revoked one (401), a role below
/// the route's (403), and changes nothing meanwhile; the right role gets the usual answer.
@Suite("End to end: API tokens and roles (Docker)", .serialized, .timeLimit(.minutes(4)))
struct APIAuthTests {
    /// Each route with what it needs and the status its right role gets.
    struct Route: CustomStringConvertible {
        var method: HTTPMethod
        var path: String
        var body: String?
        var needs: String
        var description: String { "\(method) \(path)" }
    }

    @Test func everyRouteRefusesMissingWrongRevokedAndTooLowTokensAndChangesNothing() async throws {
        try await ClusterProcesses.with { cluster in
            try await cluster.startWorker("auth")
            let admin = try String(contentsOfFile: cluster.data + "/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let mode = try FileManager.default.attributesOfItem(atPath: cluster.data + "/admin.token")[.posixPermissions] as? Int
            #expect(mode == 0o600, "admin.token is the owner's only: \(String(mode ?? 0, radix: 8))")

            let task = try await cluster.submit(#"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "stopGracePeriod": "1s"}"#)
            try await cluster.waitForTasks("the task running") { $0.first?.state == "running" }
            let node = try cluster.nodeID(of: "auth")
            let viewer = try await create("watcher", role: "viewer", in: cluster, as: admin)
            let revoked = try await create("gone", role: "admin", in: cluster, as: admin)
            #expect(try await http(.DELETE, "\(cluster.api)/tokens/gone", token: .bearer(admin)).status == 204)

            let routes = [
                Route(method: .GET, path: "/tasks", needs: "viewer"),
                Route(method: .GET, path: "/tasks/\(task)", needs: "viewer"),
                Route(method: .GET, path: "/tasks/\(task)/logs", needs: "viewer"),
                Route(method: .GET, path: "/nodes", needs: "viewer"),
                Route(method: .GET, path: "/metrics", needs: "viewer"),
                Route(method: .POST, path: "/tasks", body: #"{"image": "orch-busybox:latest"}"#, needs: "operator"),
                Route(method: .DELETE, path: "/tasks/\(task)", needs: "operator"),
                Route(method: .DELETE, path: "/nodes/\(node)", needs: "admin"),
                Route(method: .GET, path: "/tokens", needs: "admin"),
                Route(method: .POST, path: "/tokens", body: #"{"name": "sneaky", "role": "admin"}"#, needs: "admin"),
                Route(method: .DELETE, path: "/tokens/admin", needs: "admin"),
                Route(method: .POST, path: "/join-token/rotate", needs: "admin"),
                Route(method: .GET, path: "/no/such/route", needs: "viewer"),
            ]
            let before = try await state(of: cluster, as: admin)
            for route in routes {
                for (what, token) in [("no token", TestToken.none), ("a wrong token", .bearer("orch_" + String(repeating: "x", count: 43))),
                                      ("a revoked token", .bearer(revoked)), ("not a bearer", .none)] {
                    var headers = HTTPHeaders()
                    if what == "not a bearer" { headers.add(name: "Authorization", value: "Basic YWRtaW46YWRtaW4=") }
                    let answer = try await http(route.method, cluster.api + route.path, headers: headers, body: route.body, token: token)
                    #expect(answer.status == 401, "\(route) with \(what): \(answer.status) \(answer.body)")
                    #expect(answer.body.contains(#""code":"unauthorized""#), "\(route) with \(what): \(answer.body)")
                    #expect(answer.headers.first(name: "WWW-Authenticate")?.hasPrefix("Bearer") == true, "\(route) with \(what)")
                }
                if route.needs != "viewer" {
                    let answer = try await http(route.method, cluster.api + route.path, body: route.body, token: .bearer(viewer))
                    #expect(answer.status == 403, "\(route) as a viewer: \(answer.status) \(answer.body)")
                    #expect(answer.body.contains(#""code":"forbidden""#) && answer.body.contains("needs \(route.needs)"), "\(answer.body)")
                }
            }
            #expect(try await state(of: cluster, as: admin) == before, "nothing changed by the refused requests")

            // The right roles: a viewer reads, an operator submits and stops (and is named
            // in the task's events), an admin manages tokens.
            #expect(try await http(.GET, "\(cluster.api)/tasks/\(task)", token: .bearer(viewer)).status == 200)
            #expect(try await http(.GET, "\(cluster.api)/healthz", token: .none).status == 200, "health needs no token")
            let ci = try await create("ci", role: "operator", in: cluster, as: admin)
            let submitted = try await http(.POST, "\(cluster.api)/tasks", body: #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "stopGracePeriod": "1s"}"#, token: .bearer(ci))
            #expect(submitted.status == 201, "\(submitted.body)")
            let id = try #require(try JSONSerialization.jsonObject(with: Data(submitted.body.utf8)) as? [String: Any])["id"] as? String ?? ""
            #expect(try await http(.DELETE, "\(cluster.api)/tasks/\(id)", token: .bearer(ci)).status == 202)
            #expect(try await http(.DELETE, "\(cluster.api)/tokens/ci", token: .bearer(ci)).status == 403, "an operator may not revoke")
            #expect(try await http(.POST, "\(cluster.api)/tokens", body: #"{"name": "x", "role": "admin"}"#, token: .bearer(ci)).status == 403)
            let last = try await http(.DELETE, "\(cluster.api)/tokens/admin", token: .bearer(admin))
            #expect(last.status == 409 && last.body.contains("last_admin"), "the last admin token is not revoked: \(last.body)")

            let status = try await LaunchedProcess.run(orchctl: ["status", id, "--api", cluster.api, "--token", ci])
            #expect(status.status == 0, "\(status.stderr)")
            #expect(status.stdout.contains("accepted from token ci") && status.stdout.contains("stop requested by token ci"),
                    "who did it is in the task's events: \(status.stdout)")

            let list = try await http(.GET, "\(cluster.api)/tokens", token: .bearer(admin))
            let names = (try JSONSerialization.jsonObject(with: Data(list.body.utf8)) as? [[String: Any]])?.compactMap { $0["name"] as? String }
            #expect(names == ["admin", "watcher", "ci"], "live tokens, oldest first; the revoked one is not listed: \(list.body)")
            #expect(!list.body.contains(ci) && !list.body.contains(admin), "no token is ever listed")
        }
    }

    @Test func orchctlFindsTheLocalTokenAndManagesTokens() async throws {
        try await ClusterProcesses.with { cluster in
            let env = ["ORCH_API": cluster.api]
            // No --token: orchctl reads the one the manager left in ~/.orch/tokens/HOST:PORT.
            let made = try await LaunchedProcess.run(orchctl: ["token", "create", "--name", "deploy", "--role", "operator"], environment: env)
            #expect(made.status == 0, "\(made.stderr)")
            let token = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(token.hasPrefix("orch_") && token.count == 48, "the token, and only it, on stdout: \(made.stdout)")
            #expect(made.stderr.contains("shown only this once"))

            let listed = try await LaunchedProcess.run(orchctl: ["token", "list"], environment: env)
            #expect(listed.status == 0 && listed.stdout.contains("deploy") && listed.stdout.contains("operator") && !listed.stdout.contains(token))

            // The new token works, as --token and as ORCH_TOKEN; a viewer's write is refused.
            #expect(try await LaunchedProcess.run(orchctl: ["status", "--token", token], environment: env).status == 0)
            let denied = try await LaunchedProcess.run(orchctl: ["token", "list"], environment: env.merging(["ORCH_TOKEN": token]) { $1 })
            #expect(denied.status != 0 && denied.stderr.contains("needs admin"), "an operator may not list tokens: \(denied.stderr)")

            let revoked = try await LaunchedProcess.run(orchctl: ["token", "revoke", "deploy"], environment: env)
            #expect(revoked.status == 0, "\(revoked.stderr)")
            let refused = try await LaunchedProcess.run(orchctl: ["status", "--token", token], environment: env)
            #expect(refused.status != 0 && refused.stderr.contains("not valid"), "a revoked token is refused: \(refused.stderr)")
            let again = try await LaunchedProcess.run(orchctl: ["token", "revoke", "deploy"], environment: env)
            #expect(again.status != 0 && again.stderr.contains("no token named deploy"))

            // A token file: read when given, a clear line when it cannot be.
            let file = temporaryDirectory("token") + "/t"
            try token.write(toFile: file, atomically: true, encoding: .utf8)
            let fromFile = try await LaunchedProcess.run(orchctl: ["status", "--token-file", file], environment: env)
            #expect(fromFile.status != 0 && fromFile.stderr.contains("not valid"), "the file's (revoked) token was sent: \(fromFile.stderr)")
            let missing = try await LaunchedProcess.run(orchctl: ["status", "--token-file", file + "-missing"], environment: env)
            #expect(missing.status == 1 && missing.stderr.contains("cannot read the token file"), "\(missing.stderr)")

            // A wrong token gets a 401 that says where the right one is.
            let wrong = try await LaunchedProcess.run(orchctl: ["status", "--token", "orch_wrong"], environment: env)
            #expect(wrong.status != 0 && wrong.stderr.contains("admin.token"), "\(wrong.stderr)")
        }
    }

    @Test func theManagerMakesItsCAAndAJoinTokenThatPinsItAndRotatesIt() async throws {
        try await ClusterProcesses.with { cluster in
            for file in ["ca.key", "join.token", "join.sha256"] {
                let mode = try FileManager.default.attributesOfItem(atPath: "\(cluster.data)/\(file)")[.posixPermissions] as? Int
                #expect(mode == 0o600, "\(file) is the owner's only")
            }
            let ca = try ClusterCA.loadOrCreate(in: cluster.data)
            let first = try JoinToken(parsing: try String(contentsOfFile: cluster.data + "/join.token", encoding: .utf8))
            #expect(first.caFingerprint == (try ca.fingerprint), "the token pins the manager's CA")
            let stored = try String(contentsOfFile: cluster.data + "/join.sha256", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(stored == JoinToken.hash(secret: first.secret) && !stored.contains(first.secret), "the secret is kept hashed")

            let rotated = try await LaunchedProcess.run(orchctl: ["token", "rotate-join"], environment: ["ORCH_API": cluster.api])
            #expect(rotated.status == 0, "\(rotated.stderr)")
            let second = try JoinToken(parsing: rotated.stdout)
            #expect(second.caFingerprint == first.caFingerprint && second.secret != first.secret)
            #expect(try JoinToken(parsing: try String(contentsOfFile: cluster.data + "/join.token", encoding: .utf8)) == second)
            #expect(try String(contentsOfFile: cluster.data + "/join.sha256", encoding: .utf8).contains(JoinToken.hash(secret: second.secret)))

            // A restarted manager keeps its CA and the rotated secret.
            try await cluster.restartManager()
            #expect(try ClusterCA.loadOrCreate(in: cluster.data).fingerprint == (try ca.fingerprint))
            #expect(try JoinToken(parsing: try String(contentsOfFile: cluster.data + "/join.token", encoding: .utf8)) == second)
        }
    }

    func create(_ name: String, role: String, in cluster: ClusterProcesses, as admin: String) async throws -> String {
        let answer = try await http(.POST, "\(cluster.api)/tokens", body: #"{"name": "\#(name)", "role": "\#(role)"}"#, token: .bearer(admin))
        try #require(answer.status == 201, "\(answer.body)")
        return try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])["token"] as? String ?? ""
    }

    /// What the refused requests must not change: tasks (id, state, desired), nodes, tokens.
    func state(of cluster: ClusterProcesses, as admin: String) async throws -> [String] {
        let tasks = try await http(.GET, "\(cluster.api)/tasks", token: .bearer(admin)).body
        let list = try JSONSerialization.jsonObject(with: Data(tasks.utf8)) as? [[String: Any]] ?? []
        let nodes = try await http(.GET, "\(cluster.api)/nodes", token: .bearer(admin)).body
        let nodeList = try JSONSerialization.jsonObject(with: Data(nodes.utf8)) as? [[String: Any]] ?? []
        let tokens = try await http(.GET, "\(cluster.api)/tokens", token: .bearer(admin)).body
        let tokenList = try JSONSerialization.jsonObject(with: Data(tokens.utf8)) as? [[String: Any]] ?? []
        return list.map { "task \($0["id"] ?? "") \($0["state"] ?? "") \($0["desiredState"] ?? "")" }
            + nodeList.map { "node \($0["id"] ?? "")" }
            + tokenList.map { "token \($0["name"] ?? "") \($0["role"] ?? "")" }
    }
}
