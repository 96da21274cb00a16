import Foundation
import OrchTestSupport
import Testing

/// The web console against a real manager process: a page asked without a session is sent to
/// sign in; signing in takes a token and sets an HttpOnly, SameSite=Strict cookie, which the
/// gateway then takes in place of the bearer header, with the token's role; a write made with
/// the cookie needs the session's CSRF token, and another session's is refused; signing out
/// and revoking the token both end the session.
@Suite("The web console (a manager process)", .serialized, .timeLimit(.minutes(2)))
struct ConsoleProcessTests {
    /// Signs in with `token`; the session cookie's value and the page's CSRF token.
    func signIn(_ api: String, token: String) async throws -> (cookie: String, csrf: String) {
        let answer = try await httpOnce(.POST, "\(api)/ui/login", body: "token=\(token)", token: .none,
                                        headers: [("Content-Type", "application/x-www-form-urlencoded")])
        #expect(answer.status == 303 && answer.headers.first(name: "Location") == "/ui", "\(answer.status) \(answer.body)")
        let setCookie = try #require(answer.headers.first(name: "Set-Cookie"))
        #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict") && setCookie.contains("Path=/"), "\(setCookie)")
        let cookie = String(try #require(setCookie.split(separator: ";").first))
        let page = try await httpOnce(.GET, "\(api)/ui", token: .none, headers: [("Cookie", cookie)])
        #expect(page.status == 200 && page.body.contains("<h1>Overview</h1>"), "\(page.status) \(page.body.prefix(300))")
        let csrf = try #require(page.body.range(of: #"name="csrf" value=""#).map { range in
            String(page.body[range.upperBound...].prefix { $0 != "\"" })
        })
        return (cookie, csrf)
    }

    @Test func aTaskIsListedShownStoppedAndRemovedFromItsPage() async throws {
        try await ClusterProcesses.with { cluster in
            let admin = try String(contentsOfFile: cluster.data + "/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let id = try await cluster.submit(#"{"name": "paged", "image": "orch-busybox:latest", "command": ["sleep", "30"]}"#)
            let (cookie, csrf) = try await signIn(cluster.api, token: admin)
            let list = try await httpOnce(.GET, "\(cluster.api)/ui/tasks", token: .none, headers: [("Cookie", cookie)])
            #expect(list.status == 200 && list.body.contains("paged") && list.body.contains("/ui/tasks/\(id)"), "\(list.body.prefix(500))")
            let page = try await httpOnce(.GET, "\(cluster.api)/ui/tasks/\(id)", token: .none, headers: [("Cookie", cookie)])
            #expect(page.status == 200 && page.body.contains("/ui/tasks/\(id)/stop"), "an operator sees Stop: \(page.body.prefix(800))")
            #expect(try await httpOnce(.GET, "\(cluster.api)/ui/tasks/nosuchtask", token: .none, headers: [("Cookie", cookie)]).status == 404)

            let form = ("Content-Type", "application/x-www-form-urlencoded")
            // A viewer's session sees no buttons, and its forged POST is refused for its role.
            let made = try await http(.POST, "\(cluster.api)/tokens", body: #"{"name": "looker", "role": "viewer"}"#)
            let viewer = try #require(try JSONSerialization.jsonObject(with: Data(made.body.utf8)) as? [String: Any])["token"] as? String
            let (viewerCookie, viewerCSRF) = try await signIn(cluster.api, token: try #require(viewer))
            let seen = try await httpOnce(.GET, "\(cluster.api)/ui/tasks/\(id)", token: .none, headers: [("Cookie", viewerCookie)])
            #expect(seen.status == 200 && !seen.body.contains("/stop"), "a viewer sees no write buttons")
            let forged = try await httpOnce(.POST, "\(cluster.api)/ui/tasks/\(id)/stop", body: "csrf=\(viewerCSRF)", token: .none,
                                            headers: [("Cookie", viewerCookie), form])
            #expect(forged.status == 403 && forged.body.contains("viewer"), "\(forged.status) \(forged.body)")
            let noCSRF = try await httpOnce(.POST, "\(cluster.api)/ui/tasks/\(id)/stop", body: "", token: .none, headers: [("Cookie", cookie), form])
            #expect(noCSRF.status == 403, "a CSRF-less POST is refused")
            #expect((try await cluster.tasks()).first { $0["id"] as? String == id }?["desiredState"] as? String == "run", "nothing was stopped")

            let stopped = try await httpOnce(.POST, "\(cluster.api)/ui/tasks/\(id)/stop", body: "csrf=\(csrf)", token: .none, headers: [("Cookie", cookie), form])
            #expect(stopped.status == 303 && stopped.headers.first(name: "Location") == "/ui/tasks/\(id)")
            _ = try await cluster.waitForTasks("the task ended") { $0.first { $0["id"] as? String == id }.map { ["completed", "failed"].contains($0.state) } ?? false }
            let ended = try await httpOnce(.GET, "\(cluster.api)/ui/tasks/\(id)", token: .none, headers: [("Cookie", cookie)])
            #expect(ended.body.contains("/ui/tasks/\(id)/rm") && !ended.body.contains("/ui/tasks/\(id)/stop"), "an ended task is removed, not stopped")
            let removed = try await httpOnce(.POST, "\(cluster.api)/ui/tasks/\(id)/rm", body: "csrf=\(csrf)", token: .none, headers: [("Cookie", cookie), form])
            #expect(removed.status == 303 && removed.headers.first(name: "Location") == "/ui/tasks")
            #expect(try await http(.GET, "\(cluster.api)/tasks/\(id)").status == 404, "removed with its history")
        }
    }

    @Test func signInSessionsRolesCSRFAndSignOut() async throws {
        try await ClusterProcesses.with { cluster in
            let admin = try String(contentsOfFile: cluster.data + "/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let anonymous = try await httpOnce(.GET, "\(cluster.api)/ui", token: .none)
            #expect(anonymous.status == 303 && anonymous.headers.first(name: "Location") == "/ui/login")
            let login = try await httpOnce(.GET, "\(cluster.api)/ui/login", token: .none)
            #expect(login.status == 200 && login.body.contains("API token"))
            #expect(login.headers.first(name: "Content-Security-Policy")?.contains("default-src 'self'") == true)
            let wrong = try await httpOnce(.POST, "\(cluster.api)/ui/login", body: "token=nope", token: .none,
                                           headers: [("Content-Type", "application/x-www-form-urlencoded")])
            #expect(wrong.status == 401 && wrong.body.contains("not valid") && wrong.headers.first(name: "Set-Cookie") == nil)

            let (cookie, csrf) = try await signIn(cluster.api, token: admin)
            let task = #"{"name": "from-the-console", "image": "orch-busybox:latest", "command": ["sleep", "30"]}"#
            let json = ("Content-Type", "application/json")
            // The cookie stands for the token, but a write with it needs the session's CSRF token.
            let forged = try await httpOnce(.POST, "\(cluster.api)/tasks", body: task, token: .none, headers: [("Cookie", cookie), json])
            #expect(forged.status == 403 && forged.body.contains("csrf"), "\(forged.status) \(forged.body)")
            let (other, otherCSRF) = try await signIn(cluster.api, token: admin)
            let crossed = try await httpOnce(.POST, "\(cluster.api)/tasks", body: task, token: .none,
                                             headers: [("Cookie", cookie), ("X-Orch-CSRF", otherCSRF), json])
            #expect(crossed.status == 403, "another session's CSRF token is refused: \(crossed.status)")
            let made = try await httpOnce(.POST, "\(cluster.api)/tasks", body: task, token: .none,
                                          headers: [("Cookie", cookie), ("X-Orch-CSRF", csrf), json])
            #expect(made.status == 201, "\(made.status) \(made.body)")
            let overview = try await httpOnce(.GET, "\(cluster.api)/ui", token: .none, headers: [("Cookie", cookie)])
            #expect(overview.body.contains("from-the-console"), "the overview shows the new task's event")
            // Reads with the cookie need no CSRF token.
            #expect(try await httpOnce(.GET, "\(cluster.api)/tasks", token: .none, headers: [("Cookie", other)]).status == 200)

            // A viewer's session reads, and may not write even with its CSRF token.
            let made2 = try await http(.POST, "\(cluster.api)/tokens", body: #"{"name": "looker", "role": "viewer"}"#)
            let viewer = try #require(try JSONSerialization.jsonObject(with: Data(made2.body.utf8)) as? [String: Any])["token"] as? String
            let (viewerCookie, viewerCSRF) = try await signIn(cluster.api, token: try #require(viewer))
            let refused = try await httpOnce(.POST, "\(cluster.api)/tasks", body: task, token: .none,
                                             headers: [("Cookie", viewerCookie), ("X-Orch-CSRF", viewerCSRF), json])
            #expect(refused.status == 403 && refused.body.contains("viewer"), "\(refused.status) \(refused.body)")
            // Revoking the token ends its sessions.
            #expect(try await http(.DELETE, "\(cluster.api)/tokens/looker").status == 204)
            #expect(try await httpOnce(.GET, "\(cluster.api)/ui", token: .none, headers: [("Cookie", viewerCookie)]).status == 401)

            // Signing out needs the CSRF token too, and ends the session.
            let form = ("Content-Type", "application/x-www-form-urlencoded")
            let badOut = try await httpOnce(.POST, "\(cluster.api)/ui/logout", body: "csrf=\(otherCSRF)", token: .none, headers: [("Cookie", cookie), form])
            #expect(badOut.status == 403)
            let out = try await httpOnce(.POST, "\(cluster.api)/ui/logout", body: "csrf=\(csrf)", token: .none, headers: [("Cookie", cookie), form])
            #expect(out.status == 303 && out.headers.first(name: "Set-Cookie")?.contains("Max-Age=0") == true)
            let after = try await httpOnce(.GET, "\(cluster.api)/ui", token: .none, headers: [("Cookie", cookie)])
            #expect(after.status == 303 && after.headers.first(name: "Location") == "/ui/login", "the session is gone")
        }
    }
}
