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

    func task(_ name: String, state: TaskState = .running, desired: DesiredState = .run) -> TaskDTO {
        let id = TaskID(rawValue: "0123456789abcdef-\(name.count)")
        var spec = TaskSpec(id: id, name: name, image: "orch-busybox:latest", command: ["sleep", "<60>"])
        spec.id = id
        var record = TaskRecord(id: id, spec: spec, now: Date(timeIntervalSince1970: 1_800_000_000))
        record.state = state
        record.desiredState = desired
        return TaskDTO(record, nodeName: "w1", events: nil, backoffUntil: nil)
    }

    @Test func theTasksPageListsEscapedRowsWithTheFilterAndTheNextPage() async throws {
        let console = try await Console.load()
        let html = console.render("tasks", Console.tasks([task("<b>web</b>"), task("db", state: .failed)], state: .running, next: "/ui/tasks?after=x&state=running", session: session))
        #expect(html.contains("&lt;b&gt;web&lt;/b&gt;") && !html.contains("<b>web</b>"))
        #expect(html.contains(#"<option value="running" selected>"#) && !html.contains(#"<option value="failed" selected>"#))
        #expect(html.contains(#"href="/ui/tasks/0123456789abcdef-"#) && html.contains(">0123456789ab</a>"), "rows link to the task by id")
        #expect(html.contains(#"<a href="/ui/tasks?after=x&amp;state=running">Next page</a>"#))
        let empty = console.render("tasks", Console.tasks([], state: .failed, next: nil, session: session))
        #expect(empty.contains("No tasks in this state.") && !empty.contains("Next page"))
    }

    @Test func aTaskPageHasStopForAnOperatorRemoveOnceEndedAndNothingForAViewer() async throws {
        let console = try await Console.load()
        let running = console.render("task", Console.task(task("web"), events: [], session: session))
        #expect(running.contains(#"action="/ui/tasks/0123456789abcdef-3/stop""#) && running.contains(#"name="csrf" value="c0ffee""#))
        #expect(!running.contains("/rm\""), "a live task is stopped, not removed")
        #expect(running.contains("sleep &lt;60&gt;"), "the command, escaped")
        let ended = console.render("task", Console.task(task("web", state: .completed, desired: .stop), events: [
            TaskHistoryEntry(task: TaskID(rawValue: "x"), at: Date(timeIntervalSince1970: 1_800_000_000), state: .completed, message: "exited with code 0"),
        ], session: session))
        #expect(ended.contains(#"action="/ui/tasks/0123456789abcdef-3/rm""#) && !ended.contains("/stop\"") && ended.contains("exited with code 0"))
        var viewer = session
        viewer.role = .viewer
        let read = console.render("task", Console.task(task("web"), events: [], session: viewer))
        #expect(!read.contains("/stop") && !read.contains("/rm") && !read.contains(#"class="actions""#), "a viewer sees no write buttons")
    }

    @Test func anEmptyClusterSaysSo() async throws {
        let console = try await Console.load()
        let html = console.render("overview", Console.overview(tasksByState: [:], nodesByState: [:], services: [], events: [], session: session))
        #expect(html.contains("No events yet.") && html.contains("0 / 0 up") && html.contains("0 / 0 healthy"))
    }
}
