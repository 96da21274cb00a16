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

func handlers(received: @escaping @Sendable (WireMessage) async -> Void = { _ in }) -> WireClientHandlers {
    WireClientHandlers(received: received)
}

/// What a client's owner was told, in order.
enum Told: Sendable, Equatable {
    case connected(Welcome)
    case disconnected
    case received(WireMessage)
}

/// Records what the client tells its owner, with a deadline on every wait.
final class OwnerLog: Sendable {
    let log = Mutex<[Told]>([])
    let cursor = Mutex(0)

    var handlers: WireClientHandlers {
        WireClientHandlers(
            connected: { welcome in self.log.withLock { $0.append(.connected(welcome)) } },
            disconnected: { self.log.withLock { $0.append(.disconnected) } },
            received: { message in self.log.withLock { $0.append(.received(message)) } })
    }

    func next<T>(_ what: String, within timeout: Duration = .seconds(10), _ match: (Told) -> T?) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let found: T? = cursor.withLock { cursor in
                let told = log.withLock { $0 }
                while cursor < told.count {
                    cursor += 1
                    if let value = match(told[cursor - 1]) { return value }
                }
                return nil
            }
            if let found { return found }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw TestTimeout(what: what)
    }
}

func startListener(_ manager: ScriptedManager, port: Int = 0) async throws -> (port: Int, task: Task<Void, any Error>) {
    try await manager.listen(port: port)
}

let taskA = TaskID(rawValue: "task-a")

@Suite("Reconnecting client and delivery rules over loopback TCP", .serialized, .timeLimit(.minutes(2)))
struct ClientTests {
    @Test func afterTheWelcomeTheOwnerIsToldAndEveryMessageIsPassedOnInOrder() async throws {
        let manager = ScriptedManager(heartbeatInterval: .milliseconds(250))
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let client = makeClient(port: port)
        let owner = OwnerLog()
        let running = Task { try await client.run(owner.handlers) }
        defer { running.cancel() }

        var events = EventReader(manager)
        let hello = try await events.next("hello") { if case .connected(_, let hello) = $0 { hello } else { nil } }
        #expect(hello.nodeID.rawValue == "node-a")
        let welcome = try await owner.next("connected") { if case .connected(let welcome) = $0 { welcome } else { nil } }
        #expect(welcome.heartbeatInterval == .milliseconds(250), "the owner gets the manager's welcome")
        #expect(await client.isConnected)
        // The client sends nothing by itself: no task list, no heartbeat.
        try await Task.sleep(for: .milliseconds(400))
        #expect(manager.messages.isEmpty, "sent by the client on its own: \(manager.messages.map(\.kind))")

        // The owner writes; the manager's answers (ack and heartbeat included) are passed on, in order.
        try await client.send(.heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics(cpuMillicoresUsed: 250))))
        let beat = try await events.next("heartbeat") { if case .message(1, .heartbeat(let beat)) = $0 { beat } else { nil } }
        #expect(beat.sequence == 1 && beat.metrics.cpuMillicoresUsed == 250)
        let answer = try await owner.next("the manager's heartbeat") { if case .received(.heartbeat(let beat)) = $0 { beat } else { nil } }
        #expect(answer.sequence == 1)
        try await manager.send(.ack(Ack(statusID: 7)), on: 1)
        try await manager.send(.stopTask(StopTask(task: taskA, attempt: 2)), on: 1)
        let ack = try await owner.next("ack") { if case .received(.ack(let ack)) = $0 { ack } else { nil } }
        #expect(ack.statusID == 7)
        let stop = try await owner.next("stop after the ack") { if case .received(let message) = $0 { message } else { nil } }
        #expect(stop == .stopTask(StopTask(task: taskA, attempt: 2)))
    }

    @Test func dropConnectionClosesTheConnectionAndTheClientDialsAgain() async throws {
        let manager = ScriptedManager(heartbeatInterval: .seconds(5))
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let client = makeClient(port: port)
        let owner = OwnerLog()
        let running = Task { try await client.run(owner.handlers) }
        defer { running.cancel() }
        var events = EventReader(manager)
        _ = try await events.next("first connection") { if case .connected(1, _) = $0 { true } else { nil } }
        _ = try await owner.next("connected") { if case .connected = $0 { true } else { nil } }

        await client.dropConnection(reason: "the manager is silent")
        _ = try await events.next("first connection closed") { if case .closed(1) = $0 { true } else { nil } }
        _ = try await owner.next("disconnected") { if case .disconnected = $0 { true } else { nil } }
        _ = try await events.next("second connection") { if case .connected(2, _) = $0 { true } else { nil } }
        _ = try await owner.next("connected again") { if case .connected = $0 { true } else { nil } }
        #expect(await client.isConnected)
        try await client.send(.heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics())))
        _ = try await events.next("a write on the new connection") { if case .message(2, .heartbeat) = $0 { true } else { nil } }
    }

    @Test func aSessionSendsTheTaskListFirstThenHeartbeatsWithMetrics() async throws {
        let manager = ScriptedManager()
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let list = TaskList(entries: [.init(task: taskA, attempt: 3, state: .running)])
        let session = SimulatedSession(makeClient(port: port))
        let running = Task {
            try await session.run(taskList: { list }, metrics: { MachineMetrics(cpuMillicoresUsed: 250, runningTasks: 1) }, received: { _ in })
        }
        defer { running.cancel() }

        var events = EventReader(manager)
        _ = try await events.next("hello") { if case .connected = $0 { true } else { nil } }
        let first = try await events.next("first message") { if case .message(_, let message) = $0 { message } else { nil } }
        #expect(first == .taskList(list), "the task list comes first after the handshake")
        var sequences: [UInt64] = []
        while sequences.count < 3 {
            let beat = try await events.next("heartbeat") { if case .message(_, .heartbeat(let beat)) = $0 { beat } else { nil } }
            #expect(beat.metrics.cpuMillicoresUsed == 250)
            sequences.append(beat.sequence)
        }
        #expect(sequences == [1, 2, 3])
    }

    @Test func reconnectsWhenTheManagerComesBackOnTheSamePort() async throws {
        let manager = ScriptedManager()
        let (port, first) = try await startListener(manager)
        let client = makeClient(port: port)
        let states = StateRecorder(client)
        let owner = OwnerLog()
        let running = Task { try await client.run(owner.handlers) }
        defer { running.cancel() }
        _ = try await states.next("connected") { if case .connected = $0 { true } else { false } }

        first.cancel()
        await manager.dropAll()
        _ = try await states.next("disconnected") { if case .disconnected = $0 { true } else { false } }
        #expect(await !client.isConnected)
        _ = try await owner.next("the owner is told") { if case .disconnected = $0 { true } else { nil } }

        // Nobody listens for a while: the client keeps trying.
        try await Task.sleep(for: .milliseconds(300))
        let (_, second) = try await startListener(manager, port: port)
        defer { second.cancel() }
        _ = try await states.next("connected again") { if case .connected = $0 { true } else { false } }
        #expect(await client.isConnected)
    }

    /// The session of the simulated workers (the manager's tests rely on it); the real
    /// worker's is its machine's (WorkerMachineTests) over this client (WorkerDockerTests).
    @Test func aSimulatedSessionResendsAnUnacknowledgedTerminalStatusAfterAReconnect() async throws {
        let manager = ScriptedManager(heartbeatInterval: .seconds(5))
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let client = SimulatedSession(makeClient(port: port))
        let running = Task { try await client.run(taskList: { TaskList(entries: []) }, metrics: { MachineMetrics() }, received: { _ in }) }
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

    @Test func aWelcomeOutsideTheOfferedVersionsIsAProtocolErrorAndRetried() async throws {
        let manager = ScriptedManager()
        manager.welcomeVersion.withLock { $0 = 9 }
        let (port, listener) = try await startListener(manager)
        defer { listener.cancel() }
        let client = makeClient(port: port)
        let states = StateRecorder(client)
        let running = Task { try await client.run(handlers()) }
        defer { running.cancel() }
        let state = try await states.next("disconnected after a bad welcome") { if case .disconnected = $0 { true } else { false } }
        guard case .disconnected(let reason, _) = state else { return }
        #expect(reason.contains("protocol 9, outside"), "reason: \(reason)")
        #expect(!(await client.isConnected))
        manager.welcomeVersion.withLock { $0 = ProtocolVersion.newest }
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

    @Test func sendingWhileDisconnectedSaysSo() async throws {
        let client = makeClient(port: 9)
        await #expect(throws: WireClientError.notConnected) { try await client.send(.goodbye(Goodbye(reason: .draining, message: ""))) }
        await client.dropConnection(reason: "nothing to drop")   // harmless
        #expect(await !client.isConnected)
    }
}
