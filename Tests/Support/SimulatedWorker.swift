import OrchCore
import OrchWire
import Synchronization

/// A worker without Docker that speaks the real protocol over TCP: it "runs" an assigned
/// attempt at once (reporting it running), stops it on request, and reports what the test
/// tells it to. For the manager's tests and for benchmark clusters of many workers.
public final class SimulatedWorker: Sendable {
    public let node: NodeID
    public let name: String
    public let client: WireClient
    /// The attempts held, by task.
    public let held = Mutex<[TaskID: (attempt: UInt64, state: TaskState)]>([:])
    public let assignments = Mutex<[AssignTask]>([])
    public let stops = Mutex<[StopTask]>([])
    /// Report an assigned attempt running at once (otherwise it stays scheduled until `report`).
    public let autoRun: Bool

    public init(
        name: String, managerPort: Int, managerHost: String = "127.0.0.1", node: NodeID? = nil,
        millicores: UInt32 = 2000, memoryBytes: UInt64 = 4 << 30, labels: [String: String] = [:], autoRun: Bool = true
    ) {
        let node = node ?? NodeID(rawValue: "sim-\(name)")
        self.node = node
        self.name = name
        self.autoRun = autoRun
        client = WireClient(
            host: managerHost, port: managerPort,
            hello: Hello(nodeID: node, name: name, addresses: ["127.0.0.1:0"],
                         capacity: Capacity(millicores: millicores, memoryBytes: memoryBytes, diskBytes: 10 << 30), labels: labels),
            backoff: ReconnectBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)))
    }

    /// Connects and stays connected until the returned task is cancelled.
    public func start() -> Task<Void, any Error> {
        Task {
            try await client.run(WireClientHandlers(
                taskList: {
                    TaskList(entries: self.held.withLock { $0 }.sorted { $0.key < $1.key }.map { task, attempt in
                        .init(task: task, attempt: attempt.attempt, state: attempt.state, container: ContainerID(rawValue: "sim-\(task)-\(attempt.attempt)"))
                    })
                },
                metrics: { MachineMetrics(memoryTotalBytes: 4 << 30) },
                received: { message in await self.handle(message) }))
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
    public func report(_ task: TaskID, state: TaskState, exitCode: Int32? = nil, health: TaskHealth = .none) async {
        guard let current = held.withLock({ $0[task] }) else { return }
        held.withLock { $0[task] = (current.attempt, state) }
        await send(task, attempt: current.attempt, state: state, exitCode: exitCode, health: health)
    }

    private func send(_ task: TaskID, attempt: UInt64, state: TaskState, exitCode: Int32? = nil, health: TaskHealth = .none) async {
        await client.send(status: TaskStatus(
            statusID: 0, task: task, attempt: attempt, state: state, container: ContainerID(rawValue: "sim-\(task)-\(attempt)"),
            exitCode: exitCode, health: health))
    }

    /// The attempts of `task` this worker was assigned, in order.
    public func attempts(of task: TaskID) -> [UInt64] {
        assignments.withLock { $0.filter { $0.task == task }.map(\.attempt) }
    }
}
