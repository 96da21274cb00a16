import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import OrchCore
import OrchRuntime
import OrchTestSupport
import OrchWire
import OrchWorker
import Testing

/// The local image that tools/setup.sh builds from busybox-static.
let testImage = ProcessInfo.processInfo.environment["ORCH_TEST_IMAGE"] ?? "orch-busybox:latest"

/// Connects to the real engine; fails loudly (never skips) when Docker does not answer.
func connectDocker() async throws -> DockerRuntime {
    do {
        let endpoint = try DockerEndpoint(dockerHost: ProcessInfo.processInfo.environment["DOCKER_HOST"])
        return try await DockerRuntime.connect(endpoint: endpoint, logger: Logger(label: "test"))
    } catch {
        Issue.record("These tests need a running Docker engine (tools/test.sh starts one): \(error)")
        throw error
    }
}

/// Removes every container of `node`.
func removeContainers(of node: NodeID, _ runtime: DockerRuntime) async {
    for container in (try? await runtime.list(labels: [ContainerLabel.node: node.rawValue])) ?? [] {
        try? await runtime.remove(container.id)
    }
}

/// An in-process worker on the real Docker engine, connected to a scripted manager over
/// loopback TCP. Everything it started is removed afterwards, also when the test fails.
final class WorkerHarness: Sendable {
    let peer: ScriptedManager
    let peerPort: Int
    let listener: Task<Void, any Error>
    let runtime: DockerRuntime
    let worker: Worker
    let running: Task<Void, any Error>

    init(peer: ScriptedManager, peerPort: Int, listener: Task<Void, any Error>, runtime: DockerRuntime, worker: Worker, running: Task<Void, any Error>) {
        self.peer = peer
        self.peerPort = peerPort
        self.listener = listener
        self.runtime = runtime
        self.worker = worker
        self.running = running
    }

    static func with(
        autoAck: Bool = true, name: String = "w", peer: ScriptedManager? = nil, managerSilence: Duration = .seconds(5),
        _ body: (WorkerHarness) async throws -> Void
    ) async throws {
        let peer = peer ?? ScriptedManager(heartbeatInterval: .milliseconds(100))
        peer.autoAck.withLock { $0 = autoAck }
        let (port, listener) = try await peer.listen(tls: true)
        let runtime = try await connectDocker()
        var configuration = WorkerConfiguration(name: name, stateDirectory: temporaryDirectory(name))
        configuration.managerPort = port
        configuration.joinToken = peer.joinToken.description
        configuration.httpPort = 0
        configuration.managerSilence = managerSilence
        let worker = try Worker(configuration: configuration, runtime: runtime, logger: Logger(label: "test.worker"))
        let running = Task { try await worker.run() }
        let harness = WorkerHarness(peer: peer, peerPort: port, listener: listener, runtime: runtime, worker: worker, running: running)
        defer { listener.cancel() }
        do {
            try await body(harness)
        } catch {
            await harness.tearDown()
            throw error
        }
        await harness.tearDown()
    }

    func tearDown() async {
        running.cancel()
        _ = await withDeadline(ContinuousClock.now + .seconds(10)) { [running] in _ = await running.result }
        await removeContainers(of: worker.node, runtime)
        try? await runtime.shutdown()
    }

    /// Waits until the worker has connected `count` times in all.
    @discardableResult
    func waitForConnection(_ count: Int = 1, _ events: inout EventReader) async throws -> Hello {
        try await events.next("connection \(count)") { if case .connected(count, let hello) = $0 { hello } else { nil } }
    }

    func assign(_ task: TaskID, attempt: UInt64 = 1, _ spec: TaskSpec) async throws {
        let connection = try #require(peer.currentConnection, "the worker is connected")
        try await peer.send(.assignTask(AssignTask(task: task, attempt: attempt, spec: spec)), on: connection)
    }

    func stop(_ task: TaskID, attempt: UInt64 = 1) async throws {
        let connection = try #require(peer.currentConnection, "the worker is connected")
        try await peer.send(.stopTask(StopTask(task: task, attempt: attempt)), on: connection)
    }

    /// Every status received for `task`, in order.
    func statuses(of task: TaskID) -> [TaskStatus] {
        peer.messages.compactMap { if case .taskStatus(let status) = $0, status.task == task { status } else { nil } }
    }

    /// The worker's containers for `task`.
    func containers(of task: TaskID) async throws -> [ContainerSummary] {
        try await runtime.list(labels: [ContainerLabel.node: worker.node.rawValue, ContainerLabel.task: task.rawValue])
    }

    /// The base URL of the worker's HTTP API once it listens.
    func httpBase() async throws -> String {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if let address = worker.httpAddress.withLock({ $0 }) { return "http://\(address)" }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestTimeout(what: "the worker's HTTP API")
    }
}

/// Waits for a status of `task` that `match` accepts.
func waitForStatus(
    _ events: inout EventReader, _ task: TaskID, _ what: String, within timeout: Duration = .seconds(20),
    _ match: (TaskStatus) -> Bool = { _ in true }
) async throws -> TaskStatus {
    try await events.next(within: timeout, "\(task): \(what)") {
        if case .message(_, .taskStatus(let status)) = $0, status.task == task, match(status) { status } else { nil }
    }
}

func sleeper(_ seconds: Int = 300) -> TaskSpec {
    TaskSpec(name: "sleeper", image: testImage, command: ["sleep", "\(seconds)"], stopGracePeriod: .seconds(5))
}

/// Waits for a status of `task` that `match` accepts among everything received so far
/// (unlike an `EventReader`, it does not consume: statuses of several tasks can be awaited in any order).
func awaitStatus(
    _ peer: ScriptedManager, _ task: TaskID, _ what: String, within timeout: Duration = .seconds(20),
    _ match: (TaskStatus) -> Bool = { _ in true }
) async throws -> TaskStatus {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        for message in peer.messages {
            if case .taskStatus(let status) = message, status.task == task, match(status) { return status }
        }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TestTimeout(what: "\(task): \(what)")
}
