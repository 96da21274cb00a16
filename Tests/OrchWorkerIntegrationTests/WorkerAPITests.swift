import Foundation
import NIOHTTP1
import OrchCore
import OrchTestSupport
import OrchWire
import Testing

/// Decodes an error body of the shape every API here answers.
func errorBody(_ text: String) throws -> APIErrorBody {
    try JSONDecoder().decode(APIErrorBody.self, from: Data(text.utf8))
}

@Suite("Worker HTTP API (Docker)", .serialized, .timeLimit(.minutes(3)))
struct WorkerAPITests {
    @Test func tasksLogsAndStopThroughTheAPI() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let base = try await harness.httpBase()
            let task = TaskID(rawValue: "api-task")
            try await harness.assign(task, TaskSpec(image: testImage, command: ["sh", "-c", "echo said-by-the-container; sleep 300"]))
            let running = try await waitForStatus(&events, task, "running") { $0.state == .running }

            let list = try await http(.GET, "\(base)/tasks")
            #expect(list.status == 200)
            let tasks = try JSONDecoder().decode([WorkerTaskDTO].self, from: Data(list.body.utf8))
            #expect(tasks.map(\.id) == [task])
            #expect(tasks.first?.state == .running && tasks.first?.container == running.container)

            var logs = (status: 0, body: "")
            let deadline = ContinuousClock.now + .seconds(10)
            while !logs.body.contains("said-by-the-container"), ContinuousClock.now < deadline {
                logs = try await http(.GET, "\(base)/tasks/\(task)/logs?tail=10")
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(logs.status == 200)
            #expect(logs.body.contains("said-by-the-container"))

            let stop = try await http(.DELETE, "\(base)/tasks/\(task)")
            #expect(stop.status == 202)
            _ = try await waitForStatus(&events, task, "completed") { $0.state == .completed }
        }
    }

    @Test func theAPIAnswersNobodyWithoutItsToken() async throws {
        try await WorkerHarness.with { harness in
            let base = try await harness.httpBase()
            let path = harness.worker.configuration.apiTokenPath
            let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
            #expect(mode == 0o600, "api.token is the owner's only")
            let routes: [(HTTPMethod, String, String?)] = [
                (.GET, "/tasks", nil), (.POST, "/tasks", #"{"image": "orch-busybox:latest"}"#), (.DELETE, "/tasks/t1", nil),
                (.GET, "/tasks/t1/logs", nil), (.GET, "/stats", nil), (.GET, "/no/such/route", nil),
            ]
            for (method, route, body) in routes {
                for token in [TestToken.none, .bearer("orch_" + String(repeating: "y", count: 43))] {
                    let answer = try await http(method, base + route, body: body, token: token)
                    #expect(answer.status == 401, "\(method) \(route): \(answer.status) \(answer.body)")
                    #expect(try errorBody(answer.body).error.code == "unauthorized")
                }
            }
            let stats = try await http(.GET, base + "/stats", token: .bearer(harness.worker.apiToken))
            #expect(stats.status == 200, "its own token opens it: \(stats.body)")
            // orchctl on this host finds it by itself, as it finds a manager's.
            let hostPort = base.replacingOccurrences(of: "http://", with: "").split(separator: ":")
            #expect(LocalTokens.read(host: String(hostPort[0]), port: Int(hostPort[1]) ?? 0) == harness.worker.apiToken)
        }
    }

    @Test func unknownIdsAndRoutesAre404InTheErrorShape() async throws {
        try await WorkerHarness.with { harness in
            let base = try await harness.httpBase()
            for (method, path) in [(HTTPMethod.DELETE, "/tasks/nope"), (.GET, "/tasks/nope/logs"), (.GET, "/no/such/route")] {
                let answer = try await http(method, "\(base)\(path)")
                #expect(answer.status == 404, "\(path)")
                let body = try errorBody(answer.body)
                #expect(body.error.code == (path.hasPrefix("/tasks") ? "task_not_found" : "not_found"))
                #expect(!body.error.message.isEmpty)
            }
            let bad = try await http(.DELETE, "\(base)/tasks/bad%20id!")
            #expect(bad.status == 400)
            #expect(try errorBody(bad.body).error.code == "invalid_task_id")
        }
    }

    @Test func postForwardsTheTaskPinnedToThisNodeAndAnswersItsID() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let base = try await harness.httpBase()
            let file = try String(contentsOf: repositoryRoot.appendingPathComponent("data/task1.json"), encoding: .utf8)
            // The peer answers the submission the way a manager does.
            let answering = Task {
                var reader = EventReader(harness.peer)
                let submit = try await reader.next("submission") { if case .message(_, .submitTask(let s)) = $0 { s } else { nil } }
                #expect(submit.spec.constraints.node == harness.worker.node.rawValue, "pinned to this node")
                #expect(submit.spec.image == "orch-busybox:latest")
                try await harness.peer.send(
                    .submitResult(SubmitResult(requestID: submit.requestID, task: TaskID(rawValue: "from-manager"), error: nil)), on: 1)
                let second = try await reader.next("second submission") { if case .message(_, .submitTask(let s)) = $0 { s } else { nil } }
                try await harness.peer.send(
                    .submitResult(SubmitResult(requestID: second.requestID, task: nil, error: "no node has 64 CPUs")), on: 1)
            }
            let created = try await http(.POST, "\(base)/tasks", body: file)
            #expect(created.status == 201)
            #expect(created.body.contains("\"from-manager\""))
            let refused = try await http(.POST, "\(base)/tasks", body: file)
            #expect(refused.status == 400)
            #expect(try errorBody(refused.body).error.message.contains("no node has 64 CPUs"))
            try await answering.value
        }
    }

    @Test func badTaskFilesAre400WithEveryProblemAndNothingIsSent() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let base = try await harness.httpBase()
            let notJSON = try await http(.POST, "\(base)/tasks", body: "{not json")
            #expect(notJSON.status == 400)
            #expect(try errorBody(notJSON.body).error.code == "invalid_task")
            let invalid = try await http(.POST, "\(base)/tasks", body: #"{"image": "", "resources": {"memory": "1KiB"}}"#)
            #expect(invalid.status == 400)
            let details = try errorBody(invalid.body).error.details ?? []
            #expect(Set(details.map(\.path)).isSuperset(of: ["image", "resources.memory"]), "details: \(details)")
            #expect(!harness.peer.messages.contains { if case .submitTask = $0 { true } else { false } })
        }
    }

    @Test func postWhileTheManagerIsAwayIs503() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let base = try await harness.httpBase()
            harness.listener.cancel()
            await harness.peer.dropAll()
            let deadline = ContinuousClock.now + .seconds(10)
            var stats = try await http(.GET, "\(base)/stats")
            while stats.body.contains("\"connected\":true"), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
                stats = try await http(.GET, "\(base)/stats")
            }
            let answer = try await http(.POST, "\(base)/tasks", body: #"{"image": "orch-busybox:latest"}"#)
            #expect(answer.status == 503)
            #expect(try errorBody(answer.body).error.code == "manager_unavailable")
        }
    }

    @Test func statsShowTheNodeItsCapacityAndItsMachine() async throws {
        try await WorkerHarness.with { harness in
            let base = try await harness.httpBase()
            let answer = try await http(.GET, "\(base)/stats")
            #expect(answer.status == 200)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])
            #expect(json["node"] as? String == harness.worker.node.rawValue)
            let capacity = try #require(json["capacity"] as? [String: Any])
            #expect((capacity["millicores"] as? Int ?? 0) >= 1000)
            let metrics = try #require(json["metrics"] as? [String: Any])
            #expect((metrics["memoryTotalBytes"] as? Int ?? 0) > 0)
            #expect((metrics["diskTotalBytes"] as? Int ?? 0) > 0)
        }
    }
}
