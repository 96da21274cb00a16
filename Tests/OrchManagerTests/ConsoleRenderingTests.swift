import Foundation
import OrchCore
@testable import OrchManager
import Testing

/// The console's templates rendered with data, in process: what each page shows, every value
/// escaped, and the write controls only for a session.
@Suite struct ConsoleRenderingTests {
    let session = ConsoleSession(id: "s1", token: "t", name: "ops", role: .operator, csrf: "c0ffee", expires: .distantFuture)

    func event(_ id: UInt64, name: String, message: String, state: String = "running") -> ClusterEventDTO {
        ClusterEventDTO(id: id, at: Date(timeIntervalSince1970: 1_800_000_000 + Double(id)), kind: .task, task: TaskID(rawValue: "t\(id)"), name: name,
                        state: state, message: message)
    }

    @Test func theOverviewShowsCountsServicesAndTheNewestEventsFirstEscaped() async throws {
        let console = try await Console.load()
        let context = Console.overview(
            tasksByState: [.running: 3, .failed: 1, .pending: 0], nodesByState: [.up: 2, .down: 1], services: [],
            events: [event(1, name: "web", message: "accepted"), event(2, name: "<script>alert(1)</script>", message: "exited with <b>code</b> 3", state: "failed")],
            session: session)
        let html = console.render("overview", context)
        #expect(html.contains("<h1>Overview</h1>"))
        #expect(html.contains(#"<p class="big">4</p>"#), "four tasks in all")
        #expect(html.contains("running</span> 3") && html.contains("failed</span> 1") && !html.contains("pending</span>"), "states with tasks only")
        #expect(html.contains("2 / 3 up"))
        #expect(!html.contains("<script>alert(1)</script>") && html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "names are escaped")
        #expect(html.contains("exited with &lt;b&gt;code&lt;/b&gt; 3"), "messages are escaped")
        let newest = try #require(html.range(of: "exited with")), older = try #require(html.range(of: "accepted"))
        #expect(newest.lowerBound < older.lowerBound, "the newest event first")
        #expect(html.contains(#"name="csrf" value="c0ffee""#) && html.contains("Sign out") && html.contains("ops <em>operator</em>"))
    }

    @Test func theSignInPageHasNoSessionControlsAndSaysWhyATokenFailed() async throws {
        let console = try await Console.load()
        var context = Console.chrome(title: "Sign in", session: nil)
        context["error"] = "That token is not valid <x>."
        let html = console.render("login", context)
        #expect(html.contains(#"<form method="post" action="/ui/login""#) && html.contains(#"type="password""#))
        #expect(!html.contains("Sign out") && !html.contains("csrf"), "no session, no session controls")
        #expect(html.contains("That token is not valid &lt;x&gt;."))
        #expect(!console.render("login", Console.chrome(title: "Sign in", session: nil)).contains(#"class="error""#))
    }

    @Test func anEmptyClusterSaysSo() async throws {
        let console = try await Console.load()
        let html = console.render("overview", Console.overview(tasksByState: [:], nodesByState: [:], services: [], events: [], session: session))
        #expect(html.contains("No events yet.") && html.contains("0 / 0 up") && html.contains("0 / 0 healthy"))
    }
}
