import Foundation
import Hummingbird
import OrchCore
import OrchHTTP
import OrchRuntime
import OrchWire

/// The worker's HTTP API, for operators on its host:
///
/// | route | meaning |
/// |---|---|
/// | GET /tasks | this worker's tasks |
/// | POST /tasks | a task file, forwarded to the manager pinned to this node (503 while not connected) |
/// | DELETE /tasks/{taskID} | stops the task's container here |
/// | GET /tasks/{taskID}/logs?tail=N | the task's output, as text |
/// | GET /stats | the machine metrics and the worker's identity |
///
/// Errors, 405s and path rules are the manager's gateway's (OrchHTTP's ``APIRoutes``); the
/// server it runs on should be `.http1WithAPIErrors()`, for 431 in the same shape.
struct WorkerAPI: Sendable {
    let worker: Worker

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        let routes = APIRoutes(router)
        let token = worker.apiToken
        routes.add(middleware: BearerAuthMiddleware(
            hint: "the worker's token is in api.token in its state directory"
        ) { presented in
            LocalTokens.equalInConstantTime(presented, token) ? ("worker", .admin) : nil
        })
        routes.get("tasks") { _, _ in
            JSONBody(await worker.supervisor.snapshot())
        }
        routes.post("tasks") { request, _ in
            try await submit(request)
        }
        routes.delete("tasks/:taskID") { _, context in
            let task = try taskID(context)
            guard let attempt = await worker.supervisor.attempt(of: task) else { throw unknownTask(task) }
            await worker.supervisor.stop(task, attempt: attempt)
            return JSONBody(["id": task.rawValue, "state": "stopping"], status: .accepted)
        }
        routes.get("tasks/:taskID/logs") { request, context in
            let task = try taskID(context)
            guard let container = await worker.supervisor.container(of: task) else { throw unknownTask(task) }
            let tail = request.uri.queryParameters.get("tail", as: Int.self)
            var text = ByteBuffer()
            for try await chunk in try await worker.runtime.logs(container, tail: tail, follow: false) {
                text.writeBytes(chunk.bytes)
                if text.readableBytes > 16 << 20 { break }
            }
            return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: text))
        }
        routes.get("stats") { _, _ in
            let metrics = await worker.machineMetrics()
            return JSONBody(WorkerStatsDTO(
                node: worker.node.rawValue, name: worker.configuration.name, connected: await worker.client.isConnected,
                capacity: .init(millicores: Int(worker.capacity.millicores), memoryBytes: Int(worker.capacity.memoryBytes), diskBytes: Int(worker.capacity.diskBytes)),
                metrics: .init(metrics), engineError: await worker.supervisor.engineError))
        }
        return router
    }

    private func submit(_ request: Request) async throws -> JSONBody<[String: String]> {
        let submission = try await request.taskSubmission()
        if submission.intent == .stop {
            guard let id = submission.spec.id, let attempt = await worker.supervisor.attempt(of: id) else {
                throw APIError(.notFound, code: "task_not_found", message: "no task \(submission.spec.id?.rawValue ?? "(no id)") on this worker")
            }
            await worker.supervisor.stop(id, attempt: attempt)
            return JSONBody(["id": id.rawValue, "state": "stopping"], status: .accepted)
        }
        do {
            let id = try await worker.submit(submission.spec)
            return JSONBody(["id": id.rawValue], status: .created)
        } catch let error as WorkerError {
            switch error {
            case .submitRefused: throw APIError(.badRequest, code: "task_refused", message: error.description)
            default: throw APIError(.serviceUnavailable, code: "manager_unavailable", message: error.description)
            }
        }
    }

    /// The task the path names, percent-decoded; 400 `invalid_task_id` when no task can have it.
    private func taskID(_ context: BasicRequestContext) throws -> TaskID {
        TaskID(rawValue: try context.parameters.taskID())
    }

    private func unknownTask(_ task: TaskID) -> APIError {
        APIError(.notFound, code: "task_not_found", message: "no task with id \(task) on this worker")
    }
}

/// What GET /stats answers.
struct WorkerStatsDTO: Codable, Sendable {
    struct CapacityDTO: Codable, Sendable {
        var millicores: Int
        var memoryBytes: Int
        var diskBytes: Int
    }
    struct MetricsDTO: Codable, Sendable {
        var cpuMillicoresUsed: Int
        var memoryUsedBytes: Int
        var memoryTotalBytes: Int
        var diskUsedBytes: Int
        var diskTotalBytes: Int
        var load1: Double
        var load5: Double
        var load15: Double
        var runningTasks: Int

        init(_ metrics: MachineMetrics) {
            cpuMillicoresUsed = Int(metrics.cpuMillicoresUsed)
            memoryUsedBytes = Int(metrics.memoryUsedBytes)
            memoryTotalBytes = Int(metrics.memoryTotalBytes)
            diskUsedBytes = Int(metrics.diskUsedBytes)
            diskTotalBytes = Int(metrics.diskTotalBytes)
            load1 = Double(metrics.load1Hundredths) / 100
            load5 = Double(metrics.load5Hundredths) / 100
            load15 = Double(metrics.load15Hundredths) / 100
            runningTasks = Int(metrics.runningTasks)
        }
    }
    var node: String
    var name: String
    var connected: Bool
    var capacity: CapacityDTO
    var metrics: MetricsDTO
    /// Set while the container engine does not answer.
    var engineError: String?
}
