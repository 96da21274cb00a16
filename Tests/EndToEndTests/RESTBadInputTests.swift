import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OrchCore
import OrchTestSupport
import Testing

/// Input the REST gateway must refuse, against a running manager process: each case answers
/// its exact status and error code, in the error shape, and changes nothing.
@Suite("REST gateway refuses bad input", .serialized, .timeLimit(.minutes(3)))
struct RESTBadInputTests {
    /// A task that stays pending (no worker runs here), so nothing ever leaves its state.
    static let validTask = #"{"image": "orch-busybox:latest", "command": ["sleep", "1"]}"#

    /// The error body of `answer`, which must be in the API's shape with `code`.
    @discardableResult
    func expectError(_ answer: HTTPAnswer, _ status: Int, _ code: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) -> APIErrorBody? {
        #expect(answer.status == status, "\(what): \(answer.body)", sourceLocation: sourceLocation)
        #expect(answer.headers.first(name: "Content-Type") == "application/json; charset=utf-8", "\(what)", sourceLocation: sourceLocation)
        guard let body = try? JSONDecoder().decode(APIErrorBody.self, from: Data(answer.body.utf8)) else {
            Issue.record("\(what): not the error shape: \(answer.body)", sourceLocation: sourceLocation)
            return nil
        }
        #expect(body.error.code == code, "\(what): \(body.error.message)", sourceLocation: sourceLocation)
        #expect(!body.error.message.isEmpty && !body.error.message.contains("\n"), "\(what): a one-line message", sourceLocation: sourceLocation)
        return body
    }

    /// Every task, as the manager lists them (the same list before and after a refusal).
    func taskList(_ cluster: ClusterProcesses) async throws -> [String] {
        try await cluster.tasks().map { "\($0["id"] as? String ?? "?") \($0.state) \($0["desiredState"] as? String ?? "?")" }
    }

    // MARK: - Bodies

    @Test func aBodyThatIsNotJSONIsA400SayingSo() async throws {
        try await ClusterProcesses.with { cluster in
            let before = try await taskList(cluster)
            for contentType in ["application/json", nil] {
                let headers: HTTPHeaders = contentType.map { ["Content-Type": $0] } ?? [:]
                let answer = try await http(.POST, "\(cluster.api)/tasks", headers: headers, body: "image: orch-busybox:latest")
                let body = expectError(answer, 400, "invalid_task", "YAML sent as \(contentType ?? "no content type")")
                #expect(body?.error.message == "invalid task: not valid JSON: invalid value around character 0", "says where: \(body?.error.message ?? "")")
                #expect(body?.error.details?.map(\.path) == [""], "the problem is the whole document")
            }
            #expect(try await taskList(cluster) == before)
        }
    }

    @Test func aBodyWhoseContentTypeIsNotJSONIs415() async throws {
        try await ClusterProcesses.with { cluster in
            let before = try await taskList(cluster)
            // A valid task file each time: the type is refused, not the bytes.
            for contentType in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=iso-8859-1"] {
                let answer = try await http(.POST, "\(cluster.api)/tasks", headers: ["Content-Type": contentType], body: Self.validTask)
                let body = expectError(answer, 415, "unsupported_media_type", contentType)
                #expect(body?.error.message.contains("application/json") == true, "the message names the type to send")
            }
            #expect(try await taskList(cluster) == before)

            // JSON under its other names, and no Content-Type at all, are read as JSON.
            for (index, contentType) in ["application/json; charset=UTF-8", "application/vnd.orch.task+json", nil].enumerated() {
                let headers: HTTPHeaders = contentType.map { ["Content-Type": $0] } ?? [:]
                let task = #"{"id": "json-\#(index)", "image": "orch-busybox:latest"}"#
                let answer = try await http(.POST, "\(cluster.api)/tasks", headers: headers, body: task)
                #expect(answer.status == 201, "\(contentType ?? "no content type"): \(answer.body)")
            }
            #expect(try await taskList(cluster).count == before.count + 3)
        }
    }

    @Test func aBodyOverTheTaskFileLimitIs413AndOneAtItIsRead() async throws {
        try await ClusterProcesses.with { cluster in
            let before = try await taskList(cluster)
            /// A task file of exactly `size` bytes (its name is far too long: a 400 once read).
            func taskFile(ofSize size: Int) -> String {
                let head = #"{"image": "orch-busybox:latest", "name": ""#, tail = #""}"#
                return head + String(repeating: "x", count: size - head.utf8.count - tail.utf8.count) + tail
            }
            let over = try await http(.POST, "\(cluster.api)/tasks", headers: ["Content-Type": "application/json"], body: taskFile(ofSize: TaskFile.maximumBytes + 1))
            let body = expectError(over, 413, "body_too_large", "1 MiB + 1 byte")
            #expect(body?.error.message.contains("\(TaskFile.maximumBytes + 1) bytes") == true, "\(body?.error.message ?? "")")

            let huge = try await http(.POST, "\(cluster.api)/tasks", headers: [:], body: taskFile(ofSize: 8 << 20))
            expectError(huge, 413, "body_too_large", "8 MiB")

            // Without a length (chunked), the limit holds while the body is read.
            var request = HTTPClientRequest(url: "\(cluster.api)/tasks")
            request.method = .POST
            if let authorization = TestToken.local.authorization(for: request.url) { request.headers.add(name: "Authorization", value: authorization) }
            request.body = .bytes(Array(taskFile(ofSize: 2 << 20).utf8), length: .unknown)
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            let chunked = HTTPAnswer(status: Int(response.status.code), headers: response.headers, body: String(buffer: try await response.body.collect(upTo: 1 << 20)))
            expectError(chunked, 413, "body_too_large", "2 MiB, chunked")

            let atLimit = try await http(.POST, "\(cluster.api)/tasks", headers: [:], body: taskFile(ofSize: TaskFile.maximumBytes))
            let problems = expectError(atLimit, 400, "invalid_task", "exactly 1 MiB is read")?.error.details ?? []
            #expect(problems.map(\.path) == ["name"], "the file was read and its name refused: \(problems)")
            #expect(try await taskList(cluster) == before)
        }
    }

    @Test func deepNestingIsA400AndTheManagerStaysUp() async throws {
        try await ClusterProcesses.with { cluster in
            let before = try await taskList(cluster)
            let bodies = [
                ("100,000 [", String(repeating: "[", count: 100_000)),
                ("100,000 [ and ]", String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)),
                ("50,000 {\"a\":", String(repeating: #"{"a":"#, count: 50_000)),
                ("deep in a field", #"{"image": "orch-busybox:latest", "environment": "# + String(repeating: "[", count: 100_000)),
            ]
            for (what, body) in bodies {
                let started = ContinuousClock.now
                let answer = try await http(.POST, "\(cluster.api)/tasks", headers: ["Content-Type": "application/json"], body: body)
                let error = expectError(answer, 400, "invalid_task", what)
                #expect(error?.error.message.contains("nested more than") == true, "\(what): \(error?.error.message ?? "")")
                #expect(ContinuousClock.now - started < .seconds(5), "\(what) answered at once")
            }
            #expect(try await http(.GET, "\(cluster.api)/healthz").status == 200, "the manager is still up")
            #expect(try await taskList(cluster) == before)
        }
    }

    // MARK: - Headers

    @Test func hugeHeadersAre431InTheErrorShape() async throws {
        try await ClusterProcesses.with { cluster in
            let before = try await taskList(cluster)
            // Raw TCP: the server answers while the client still sends its headers, which
            // AsyncHTTPClient does not survive (it traps), whatever the server does.
            let task = #"{"id": "padded", "image": "orch-busybox:latest"}"#
            let padded = "POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(task.utf8.count)\r\nX-Padding: \(String(repeating: "a", count: 100 * 1024))\r\n\r\n\(task)"
            let huge = try rawHTTPExchange(port: cluster.httpPort, padded, halfClose: false)
            let answer = try #require(huge.answer, "one header of 100 KB: an answer, not \(huge.ending) after \(huge.received.prefix(100).debugDescription)")
            let body = expectError(answer, 431, "headers_too_large", "one header of 100 KB")
            #expect(body?.error.message.contains("80 KiB") == true, "the message tells the limit")
            #expect(huge.ending == .closed && huge.elapsed < .seconds(5), "closed, not reset or left open: \(huge.ending) after \(huge.elapsed)")

            var fields = ""
            for index in 0..<1_001 { fields += "X-Field-\(index): v\r\n" }
            let many = try rawHTTPExchange(port: cluster.httpPort, "GET /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n\(fields)\r\n", halfClose: true)
            let manyAnswer = try #require(many.answer, "1,001 header fields: an answer")
            expectError(manyAnswer, 431, "headers_too_large", "1,001 header fields")

            // Just under the limit is served, and the manager is up.
            let under: HTTPHeaders = ["X-Padding": String(repeating: "a", count: 60 * 1024)]
            #expect(try await http(.GET, "\(cluster.api)/healthz", headers: under).status == 200)
            #expect(try await taskList(cluster) == before, "the oversized POST was not submitted")
        }
    }

    // MARK: - Ids in paths

    @Test func idsNoTaskCanHaveAre400() async throws {
        try await ClusterProcesses.with { cluster in
            _ = try await cluster.submit(#"{"id": "kept", "image": "orch-busybox:latest"}"#)
            let before = try await taskList(cluster)
            let ids = [
                ("NUL", "%00"),
                ("1,000 characters", String(repeating: "a", count: 1_000)),
                ("é (unicode)", "%C3%A9t%C3%A9"),
                ("an emoji", "%F0%9F%9A%80"),
                ("an encoded slash", "kept%2F"),
                ("a space", "kept%20"),
                ("broken percent-encoding", "%E9"),
            ]
            for (what, id) in ids {
                for (method, path) in [("GET", "/tasks/\(id)"), ("DELETE", "/tasks/\(id)"), ("GET", "/tasks/\(id)/logs")] {
                    // Raw, so that the path goes out byte for byte (Foundation's URL turns
                    // `/tasks/%E9` into `/`).
                    let exchange = try rawHTTPExchange(
                        port: cluster.httpPort, "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(authorizationLine(port: cluster.httpPort))Connection: close\r\n\r\n", halfClose: false)
                    let answer = try #require(exchange.answer, "\(method) \(what): \(exchange.received.prefix(100))")
                    let body = expectError(answer, 400, "invalid_task_id", "\(method) \(what)")
                    #expect(body?.error.message.hasPrefix("task id ") == true, "\(body?.error.message ?? "")")
                }
            }
            #expect(try await taskList(cluster) == before, "nothing was stopped")
        }
    }

    @Test func percentEncodedIDsAreDecoded() async throws {
        try await ClusterProcesses.with { cluster in
            _ = try await cluster.submit(#"{"id": "a-b", "image": "orch-busybox:latest"}"#)
            for path in ["/tasks/a%2Db", "/tasks/%61%2d%62", "/tasks/a-b", "/tasks/a%2D"] {
                let answer = try await http(.GET, "\(cluster.api)\(path)", headers: [:])
                #expect(answer.status == 200, "\(path): \(answer.body)")
                let task = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
                #expect(task?["id"] as? String == "a-b", "\(path) names a-b")
            }
            let stop = try await http(.DELETE, "\(cluster.api)/tasks/a%2Db", headers: [:])
            #expect(stop.status == 202, "\(stop.body)")
            #expect(try await cluster.tasks().first?["desiredState"] as? String == "stop")
        }
    }

    @Test func anEmptyIDNamesNoRoute() async throws {
        try await ClusterProcesses.with { cluster in
            _ = try await cluster.submit(#"{"id": "logs", "image": "orch-busybox:latest"}"#)
            let before = try await taskList(cluster)
            // Hummingbird's router drops empty segments: these were the list, and the task
            // called `logs`, before the gateway held paths to what they say.
            for (method, path) in [(HTTPMethod.GET, "/tasks/"), (.DELETE, "/tasks/"), (.GET, "/tasks//logs"), (.DELETE, "/nodes/"), (.GET, "//tasks")] {
                let answer = try await http(method, "\(cluster.api)\(path)", headers: [:])
                let body = expectError(answer, 404, "not_found", "\(method) \(path)")
                #expect(body?.error.message.contains("empty") == true, "\(body?.error.message ?? "")")
            }
            #expect(try await taskList(cluster) == before, "the task called logs was not stopped")
        }
    }

    // MARK: - Methods

    @Test func wrongMethodsOnKnownRoutesAre405WithAllow() async throws {
        try await ClusterProcesses.with { cluster in
            _ = try await cluster.submit(#"{"id": "method-target", "image": "orch-busybox:latest"}"#)
            let before = try await taskList(cluster)
            let cases: [(HTTPMethod, String, String)] = [
                (.PUT, "/tasks", "GET, POST"),
                (.PATCH, "/tasks", "GET, POST"),
                (.DELETE, "/tasks", "GET, POST"),
                (.POST, "/tasks/method-target", "GET, DELETE"),
                (.PUT, "/tasks/method-target", "GET, DELETE"),
                (.POST, "/tasks/unknown-id/logs", "GET"),
                (.DELETE, "/tasks/method-target/logs", "GET"),
                (.PATCH, "/nodes", "GET"),
                (.POST, "/nodes", "GET"),
                (.PUT, "/nodes/some-node", "GET, DELETE"),
                (.GET, "/nodes/some-node/drain", "POST"),
                (.DELETE, "/nodes/some-node/undrain", "POST"),
                (.POST, "/healthz", "GET"),
                (.DELETE, "/metrics", "GET"),
                (.OPTIONS, "/tasks", "GET, POST"),
                (.RAW(value: "QUERY"), "/tasks", "GET, POST"),
            ]
            for (method, path, allow) in cases {
                let answer = try await http(method, "\(cluster.api)\(path)", headers: ["Content-Type": "application/json"], body: Self.validTask)
                expectError(answer, 405, "method_not_allowed", "\(method) \(path)")
                #expect(answer.headers.first(name: "Allow") == allow, "\(method) \(path)")
            }
            // HEAD gets the status and Allow, and no body (a body would be read as the next response).
            let head = try await http(.HEAD, "\(cluster.api)/tasks", headers: [:])
            #expect(head.status == 405 && head.headers.first(name: "Allow") == "GET, POST" && head.body.isEmpty, "HEAD: \(head.status) \(head.body)")
            #expect(try await http(.GET, "\(cluster.api)/healthz").status == 200, "the connection after HEAD still reads right")
            #expect(try await taskList(cluster) == before, "no method created or stopped anything")
        }
    }

    @Test func unknownRoutesStay404() async throws {
        try await ClusterProcesses.with { cluster in
            for (method, path) in [(HTTPMethod.GET, "/nope"), (.PUT, "/nope"), (.GET, "/tasks/a/b/c"), (.POST, "/nodes/a/b"), (.GET, "/"), (.GET, "/TASKS")] {
                let answer = try await http(method, "\(cluster.api)\(path)", headers: [:])
                expectError(answer, 404, "not_found", "\(method) \(path)")
                #expect(answer.headers.first(name: "Allow") == nil, "\(method) \(path): no Allow on a 404")
            }
        }
    }
}
