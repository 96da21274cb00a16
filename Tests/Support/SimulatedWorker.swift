import Logging
import OrchCore
import OrchSecurity
import OrchWire
import Synchronization

/// A worker without Docker that speaks the real protocol over TCP: it "runs" an assigned
/// attempt at once (reporting it running), stops it on request, and reports what the test
/// tells it to. For the manager's tests and for benchmark clusters of many workers.
public final class SimulatedWorker: Sendable {
    public let node: NodeID
    public let name: String
    public let client: SimulatedSession
    /// Its certificate (kept in memory), got by joining with `joinToken`.
    public let membership: ClusterMembership
    let joinToken: String
    /// The attempts held, by task.
    public let held = Mutex<[TaskID: (attempt: UInt64, state: TaskState)]>([:])
    public let assignments = Mutex<[AssignTask]>([])
    public let stops = Mutex<[StopTask]>([])
    /// Report an assigned attempt running at once (otherwise it stays scheduled until `report`).
    public let autoRun: Bool

    /// `joinToken` is the manager's (its `join.token`): the worker joins with it first,
    /// unless given the `membership` (the certificate) of another for the same node.
    public init(
        name: String, managerPort: Int, managerHost: String = "127.0.0.1", node: NodeID? = nil, joinToken: String,
        membership: ClusterMembership? = nil,
        millicores: UInt32 = 2000, memoryBytes: UInt64 = 4 << 30, labels: [String: String] = [:], autoRun: Bool = true
    ) {
        let node = node ?? NodeID(rawValue: "sim-\(name)")
        self.node = node
        self.name = name
        self.autoRun = autoRun
        self.joinToken = joinToken
        let membership = membership ?? ClusterMembership(node: node, host: managerHost, port: managerPort)
        self.membership = membership
        client = SimulatedSession(WireClient(
            host: managerHost, port: managerPort,
            hello: Hello(nodeID: node, name: name, addresses: ["127.0.0.1:0"],
                         capacity: Capacity(millicores: millicores, memoryBytes: memoryBytes, diskBytes: 10 << 30), labels: labels),
            backoff: ReconnectBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)), tls: membership.tlsHandler))
    }

    /// Joins, then connects and stays connected until the returned task is cancelled.
    public func start() -> Task<Void, any Error> {
        Task {
            try await membership.ensureJoined(
                token: try JoinToken(parsing: joinToken), logger: Logger(label: "orch.sim.\(name)"),
                backoff: ReconnectBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)))
            try await client.run(
                taskList: {
                    TaskList(entries: self.held.withLock { $0 }.sorted { $0.key < $1.key }.map { task, attempt in
                        .init(task: task, attempt: attempt.attempt, state: attempt.state, container: ContainerID(rawValue: "sim-\(task)-\(attempt.attempt)"))
                    })
                },
                metrics: { MachineMetrics(memoryTotalBytes: 4 << 30) },
                received: { message in await self.handle(message) })
        }
    }

    private func handle(_ message: WireMessage) async {
        switch message {
        case .assignTask(let assign):
            assignments.withLock { $0.append(assign) }
            let current = held.withLock { $0[assign.task] }
            if let current, current.attempt >= assign.attempt {
                await send(assign.task, attempt: current.attempt, state: current.state)
                return
            }
            let state: TaskState = autoRun ? .running : .scheduled
            held.withLock { $0[assign.task] = (assign.attempt, state) }
            if autoRun { await send(assign.task, attempt: assign.attempt, state: .running) }
        case .stopTask(let stop):
            stops.withLock { $0.append(stop) }
            guard let current = held.withLock({ $0[stop.task] }), current.attempt == stop.attempt, !current.state.isTerminal else { return }
            held.withLock { $0[stop.task] = (stop.attempt, .completed) }
            await send(stop.task, attempt: stop.attempt, state: .completed, exitCode: 143)
        default:
            break
        }
    }

    /// Reports the held attempt of `task` in `state`.
    public func report(_ task: TaskID, state: TaskState, exitCode: Int32? = nil, health: TaskHealth = .none, error: String? = nil) async {
        guard let current = held.withLock({ $0[task] }) else { return }
        held.withLock { $0[task] = (current.attempt, state) }
        await send(task, attempt: current.attempt, state: state, exitCode: exitCode, health: health, error: error)
    }

    private func send(_ task: TaskID, attempt: UInt64, state: TaskState, exitCode: Int32? = nil, health: TaskHealth = .none, error: String? = nil) async {
        await client.send(status: TaskStatus(
            statusID: 0, task: task, attempt: attempt, state: state, container: ContainerID(rawValue: "sim-\(task)-\(attempt)"),
            exitCode: exitCode, error: error, health: health))
    }

    /// The attempts of `task` this worker was assigned, in order.
    public func attempts(of task: TaskID) -> [UInt64] {
        assignments.withLock { $0.filter { $0.task == task }.map(\.attempt) }
    }
}

/// A simple worker session on a `WireClient` (which only connects, reads and writes), for
/// simulated workers: after every welcome it sends the task list, then the terminal statuses
/// not yet acknowledged (under their ids), then heartbeats on the manager's interval.
public actor SimulatedSession {
    public let wire: WireClient
    private var outbox = StatusOutbox()
    private var connection = 0
    private var heartbeats: Task<Void, Never>?

    public init(_ wire: WireClient) { self.wire = wire }

    public var isConnected: Bool { get async { await wire.isConnected } }

    /// Terminal statuses not yet acknowledged, oldest first.
    public var unacknowledged: [TaskStatus] { outbox.resend }

    public nonisolated var states: AsyncStream<ConnectionState> { wire.states }

    public func run(
        taskList: @escaping @Sendable () async -> TaskList, metrics: @escaping @Sendable () async -> MachineMetrics,
        received: @escaping @Sendable (WireMessage) async -> Void
    ) async throws {
        defer { heartbeats?.cancel() }
        try await wire.run(WireClientHandlers(
            connected: { welcome in await self.welcomed(welcome, taskList: taskList, metrics: metrics) },
            disconnected: { await self.lost() },
            received: { message in
                if case .ack(let ack) = message {
                    await self.acknowledge(ack.statusID)
                } else {
                    await received(message)
                }
            }))
    }

    private func welcomed(_ welcome: Welcome, taskList: @Sendable () async -> TaskList, metrics: @escaping @Sendable () async -> MachineMetrics) async {
        connection += 1
        try? await wire.send(.taskList(await taskList()))
        for status in outbox.resend { try? await wire.send(.taskStatus(status)) }
        let wire = wire
        let interval = max(welcome.heartbeatInterval, .milliseconds(10))
        heartbeats?.cancel()
        heartbeats = Task {
            var sequence: UInt64 = 0
            while !Task.isCancelled {
                sequence += 1
                do { try await wire.send(.heartbeat(Heartbeat(sequence: sequence, metrics: await metrics()))) } catch { return }
                try? await Task.sleep(for: interval)
            }
        }
    }

    private func lost() {
        heartbeats?.cancel()
        heartbeats = nil
    }

    private func acknowledge(_ id: UInt64) { outbox.acknowledge(id) }

    /// Sends a task status, numbered; a terminal one is kept until acknowledged.
    @discardableResult
    public func send(status: TaskStatus) async -> TaskStatus {
        let numbered = outbox.enqueue(status)
        try? await wire.send(.taskStatus(numbered))
        return numbered
    }

    /// Sends any other message; throws when no connection is up.
    public func send(_ message: WireMessage) async throws { try await wire.send(message) }
}
