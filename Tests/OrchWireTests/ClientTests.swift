import NIOCore
import NIOPosix
import OrchCore
@testable import OrchWire
import Synchronization
import Testing

/// What the scripted manager saw, in order.
enum ManagerEvent: Sendable {
    case connected(Int, Hello)
    case message(Int, WireMessage)
    case closed(Int)
}

/// A manager side for the client's tests, over real loopback TCP: answers hello as told,
/// reports every message, and lets the test write to or drop each connection.
final class ScriptedManager: Sendable {
    let log = Mutex<[ManagerEvent]>([])
    private let state = Mutex<(count: Int, writers: [Int: NIOAsyncChannelOutboundWriter<WireMessage>], channels: [Int: any Channel])>(
        (0, [:], [:]))
    /// The answer to the next hellos: nil = welcome; a refusal otherwise.
    let refusals = Mutex<[Refused]>([])
    /// Read hello and never answer it.
    let silent = Mutex(false)
    let heartbeatInterval: Duration

    init(heartbeatInterval: Duration = .milliseconds(50)) { self.heartbeatInterval = heartbeatInterval }

    func serve(_ connection: WireChannel) async {
        let index = state.withLock { $0.count += 1; return $0.count }
        state.withLock { $0.channels[index] = connection.channel }
        defer {
            state.withLock { $0.writers[index] = nil; $0.channels[index] = nil }
            record(.closed(index))
        }
        try? await connection.executeThenClose { inbound, outbound in
            var messages = inbound.makeAsyncIterator()
            guard case .hello(let hello)? = try await messages.next() else { return }
            if silent.withLock({ $0 }) {
                while try await messages.next() != nil {}
                return
            }
            let refusal = refusals.withLock { $0.isEmpty ? nil : $0.removeFirst() }
            if let refusal {
                try await outbound.write(.refused(refusal))
                return
            }
            try await outbound.write(.welcome(Welcome(version: ProtocolVersion.newest, heartbeatInterval: heartbeatInterval)))
            state.withLock { $0.writers[index] = outbound }
            record(.connected(index, hello))
            while let message = try await messages.next() {
                record(.message(index, message))
            }
        }
    }

    private func record(_ event: ManagerEvent) { log.withLock { $0.append(event) } }

    func send(_ message: WireMessage, on connection: Int) async throws {
        let writer = try #require(state.withLock { $0.writers[connection] })
        try await writer.write(message)
    }

    /// Closes every open connection, as a manager that restarts would.
    func dropAll() async {
        let channels = state.withLock { Array($0.channels.values) }
        for channel in channels { try? await channel.close() }
    }
}

/// Reads the manager's events in order, with a deadline on every wait.
struct EventReader {
    let manager: ScriptedManager
    var cursor = 0

    init(_ manager: ScriptedManager) { self.manager = manager }

    /// The next event that `match` accepts; earlier ones are passed to `skipped`.
    mutating func next<T>(
        within timeout: Duration = .seconds(10), _ what: String,
        skipped: (ManagerEvent) -> Void = { _ in }, _ match: (ManagerEvent) -> T?
    ) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let cursor = self.cursor
            let fresh = manager.log.withLock { Array($0[cursor...]) }
            for event in fresh {
                self.cursor += 1
                if let value = match(event) { return value }
                skipped(event)
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw TestTimeout(what: what)
    }
}

struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Records a client's states so that tests can wait for one, with a deadline.
final class StateRecorder: Sendable {
    let log = Mutex<[ConnectionState]>([])
    let cursor = Mutex(0)

    init(_ client: WireClient) {
        let states = client.states
        Task { [self] in for await state in states { log.withLock { $0.append(state) } } }
    }

    /// The next state (after those already returned) that `match` accepts.
    func next(_ what: String, within timeout: Duration = .seconds(10), _ match: (ConnectionState) -> Bool) async throws -> ConnectionState {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let found: ConnectionState? = cursor.withLock { cursor in
                let states = log.withLock { $0 }
                while cursor < states.count {
                    cursor += 1
                    if match(states[cursor - 1]) { return states[cursor - 1] }
                }
                return nil
            }
            if let found { return found }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw TestTimeout(what: what)
    }
}

/// Runs `body` until `deadline`; nil if it did not finish in time.
func withDeadline<T: Sendable>(_ deadline: ContinuousClock.Instant, _ body: @escaping @Sendable () async -> T) async -> T? {
    await withTaskGroup(of: T?.self) { group in
        group.addTask { await body() }
        group.addTask { try? await Task.sleep(until: deadline); return nil }
        defer { group.cancelAll() }
        return await group.next() ?? nil
    }
}

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

/// A listener serving `manager` on `port` (0 = any), run until the returned task is cancelled.
func startListener(_ manager: ScriptedManager, port: Int = 0) async throws -> (port: Int, task: Task<Void, any Error>) {
    let listener = try await WireListener.bind(host: "127.0.0.1", port: port)
    let task = Task { try await listener.run { await manager.serve($0) } }
    return (try #require(listener.localAddress.port), task)
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
