import NIOCore
import NIOPosix
import OrchCore
@testable import OrchWire
import Synchronization
import OrchTestSupport
import Testing

func makeClient(port: Int, handshakeTimeout: Duration = .seconds(5)) -> WireClient {
    WireClient(
        host: "127.0.0.1", port: port,
        hello: Hello(nodeID: NodeID(rawValue: "node-a"), name: "a", addresses: ["127.0.0.1:5557"],
                     capacity: Capacity(millicores: 2000, memoryBytes: 1 << 30, diskBytes: 1 << 30)),
        backoff: ReconnectBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)),
        handshakeTimeout: handshakeTimeout)
}

func handlers(
    tasks: TaskList = TaskList(entries: []), received: @escaping @Sendable (WireMessage) async -> Void = { _ in }
) -> WireClientHandlers {
    WireClientHandlers(
        taskList: { tasks }, metrics: { MachineMetrics(cpuMillicoresUsed: 250, runningTasks: 1) }, received: received)
}

func startListener(_ manager: ScriptedManager, port: Int = 0) async throws -> (port: Int, task: Task<Void, any Error>) {
    try await manager.listen(port: port)
}

let taskA = TaskID(rawValue: "task-a")

@Suite("Reconnecting client and delivery rules over loopback TCP", .serialized, .timeLimit(.minutes(2)))
struct ClientTests {
    @Test func handshakeThenTaskListThenHeartbeatsWithMetrics() async throws {
        let manager = ScriptedManager()
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let list = TaskList(entries: [.init(task: taskA, attempt: 3, state: .running)])
        let client = makeClient(port: port)
        let running = Task { try await client.run(handlers(tasks: list)) }
        defer { running.cancel() }

        var events = EventReader(manager)
        let hello = try await events.next("hello") { if case .connected(_, let hello) = $0 { hello } else { nil } }
        #expect(hello.nodeID.rawValue == "node-a")
        let first = try await events.next("first message") { if case .message(_, let message) = $0 { message } else { nil } }
        #expect(first == .taskList(list), "the task list comes first after the handshake")
        var sequences: [UInt64] = []
        while sequences.count < 3 {
            let beat = try await events.next("heartbeat") { if case .message(_, .heartbeat(let beat)) = $0 { beat } else { nil } }
            #expect(beat.metrics.cpuMillicoresUsed == 250)
            sequences.append(beat.sequence)
        }
        #expect(sequences == [1, 2, 3])
        #expect(await client.isConnected)
    }

    @Test func reconnectsWhenTheManagerComesBackOnTheSamePort() async throws {
        let manager = ScriptedManager()
        let (port, first) = try await startListener(manager)
        let client = makeClient(port: port)
        let states = StateRecorder(client)
        let running = Task { try await client.run(handlers()) }
        defer { running.cancel() }
        _ = try await states.next("connected") { if case .connected = $0 { true } else { false } }

        first.cancel()
        await manager.dropAll()
        _ = try await states.next("disconnected") { if case .disconnected = $0 { true } else { false } }
        #expect(await !client.isConnected)

        // Nobody listens for a while: the client keeps trying.
        try await Task.sleep(for: .milliseconds(300))
        let (_, second) = try await startListener(manager, port: port)
        defer { second.cancel() }
        _ = try await states.next("connected again") { if case .connected = $0 { true } else { false } }
        #expect(await client.isConnected)
    }

    @Test func anUnacknowledgedTerminalStatusIsResentAfterAReconnect() async throws {
        let manager = ScriptedManager(heartbeatInterval: .seconds(5))
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let client = makeClient(port: port)
        let running = Task { try await client.run(handlers()) }
        defer { running.cancel() }
        var events = EventReader(manager)
        _ = try await events.next("first connection") { if case .connected(1, _) = $0 { true } else { nil } }

        await client.send(status: TaskStatus(statusID: 0, task: taskA, attempt: 1, state: .running))
        let done = await client.send(status: TaskStatus(statusID: 0, task: taskA, attempt: 1, state: .completed, exitCode: 0))
        let seen = try await events.next("completed status") {
            if case .message(1, .taskStatus(let status)) = $0, status.state == .completed { status } else { nil }
        }
        #expect(seen == done)

        // The manager goes away before acknowledging it.
        await manager.dropAll()
        _ = try await events.next("second connection") { if case .connected(2, _) = $0 { true } else { nil } }
        var resent: [TaskStatus] = []
        let list = try await events.next("task list", skipped: { if case .message(2, .taskStatus(let s)) = $0 { resent.append(s) } }) {
            if case .message(2, .taskList(let list)) = $0 { list } else { nil }
        }
        #expect(list.entries.isEmpty)
        let again = try await events.next("resent status") { if case .message(2, .taskStatus(let s)) = $0 { s } else { nil } }
        #expect(resent.isEmpty, "the task list comes before the re-sent statuses")
        #expect(again == done, "the same status, with the same id; the running one is not re-sent")

        // Acknowledged now: a later reconnect does not send it again.
        try await manager.send(.ack(Ack(statusID: done.statusID)), on: 2)
        let deadline = ContinuousClock.now + .seconds(5)
        while await !client.unacknowledged.isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await client.unacknowledged.isEmpty)
        await manager.dropAll()
        _ = try await events.next("third connection") { if case .connected(3, _) = $0 { true } else { nil } }
        _ = try await events.next("task list") { if case .message(3, .taskList) = $0 { true } else { nil } }
        // The heartbeat comes right after the list; no status before it.
        let next = try await events.next("heartbeat") { if case .message(3, let message) = $0 { message } else { nil } }
        guard case .heartbeat = next else {
            Issue.record("expected a heartbeat after the task list, got \(next.kind)")
            return
        }
    }

    @Test func aResentAssignmentIsAppliedOnce() async throws {
        let manager = ScriptedManager(heartbeatInterval: .seconds(5))
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let ledger = Mutex((ledger: AssignmentLedger(), starts: 0, received: 0, stops: 0))
        let client = makeClient(port: port)
        let running = Task {
            try await client.run(handlers { message in
                ledger.withLock { state in
                    switch message {
                    case .assignTask(let assign):
                        state.received += 1
                        if case .start = state.ledger.assign(assign.task, attempt: assign.attempt) { state.starts += 1 }
                    case .stopTask(let stop):
                        if state.ledger.shouldStop(stop.task, attempt: stop.attempt) { state.stops += 1 }
                    default: break
                    }
                }
            })
        }
        defer { running.cancel() }
        var events = EventReader(manager)
        let spec = TaskSpec(name: "web", image: "orch-busybox:latest")
        let assign = WireMessage.assignTask(AssignTask(task: taskA, attempt: 1, spec: spec))
        _ = try await events.next("first connection") { if case .connected(1, _) = $0 { true } else { nil } }
        try await manager.send(assign, on: 1)
        try await manager.send(assign, on: 1)
        await manager.dropAll()
        _ = try await events.next("second connection") { if case .connected(2, _) = $0 { true } else { nil } }
        try await manager.send(assign, on: 2)
        try await manager.send(.stopTask(StopTask(task: taskA, attempt: 0)), on: 2)

        let deadline = ContinuousClock.now + .seconds(5)
        while ledger.withLock({ $0.received }) < 3, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        let (received, starts, stops) = ledger.withLock { ($0.received, $0.starts, $0.stops) }
        #expect(received == 3, "all three assignments arrived")
        #expect(starts == 1, "one start for (task, attempt 1), however often it is sent")
        #expect(stops == 0, "a stop for an attempt that is not current stops nothing")
    }

    @Test func aPermanentRefusalEndsTheClientWithTheReason() async throws {
        let manager = ScriptedManager()
        manager.refusals.withLock { $0 = [Refused(code: .duplicateNode, permanent: true, reason: "node-a is connected already")] }
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let client = makeClient(port: port)
        let running = Task { try await client.run(handlers()) }
        let outcome = await withDeadline(ContinuousClock.now + .seconds(10)) { await running.result }
        guard case .failure(let error as WireClientError)? = outcome else {
            running.cancel()
            Issue.record("the client should have stopped with a refusal, got \(String(describing: outcome))")
            return
        }
        #expect(error == .refused(Refused(code: .duplicateNode, permanent: true, reason: "node-a is connected already")))
        #expect("\(error)".contains("node-a is connected already"))
        #expect(await client.state == .refused(Refused(code: .duplicateNode, permanent: true, reason: "node-a is connected already")))
    }

    @Test func aTransientRefusalIsRetried() async throws {
        let manager = ScriptedManager()
        manager.refusals.withLock { $0 = [Refused(code: .shuttingDown, permanent: false, reason: "restarting")] }
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let client = makeClient(port: port)
        let states = StateRecorder(client)
        let running = Task { try await client.run(handlers()) }
        defer { running.cancel() }
        let refused = try await states.next("disconnected after refusal") { if case .disconnected = $0 { true } else { false } }
        guard case .disconnected(let reason, _) = refused else { return }
        #expect(reason.contains("restarting"))
        _ = try await states.next("connected on retry") { if case .connected = $0 { true } else { false } }
    }

    @Test func aManagerThatNeverAnswersIsDroppedAfterTheHandshakeTimeout() async throws {
        let manager = ScriptedManager()
        manager.silent.withLock { $0 = true }
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let client = makeClient(port: port, handshakeTimeout: .milliseconds(200))
        let states = StateRecorder(client)
        let running = Task { try await client.run(handlers()) }
        defer { running.cancel() }
        let state = try await states.next("handshake timeout") { if case .disconnected = $0 { true } else { false } }
        guard case .disconnected(let reason, _) = state else { return }
        #expect(reason.contains("no welcome"), "reason: \(reason)")
    }

    @Test func sendingWhileDisconnectedSaysSoAndKeepsTerminalStatuses() async throws {
        let client = makeClient(port: 9)
        await #expect(throws: WireClientError.notConnected) { try await client.send(.goodbye(Goodbye(reason: .draining, message: ""))) }
        await client.send(status: TaskStatus(statusID: 0, task: taskA, attempt: 1, state: .running))
        let failed = await client.send(status: TaskStatus(statusID: 0, task: taskA, attempt: 1, state: .failed, exitCode: 1))
        #expect(await client.unacknowledged == [failed])
    }
}
