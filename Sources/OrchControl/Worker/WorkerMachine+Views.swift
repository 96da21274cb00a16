import OrchCore

/// What the shell reads of the machine: the task list, the worker API's listing, lookups for
/// logs. Reading changes nothing.
extension WorkerMachine {
    /// Every attempt held, by task id: what a new connection sends first.
    public var taskList: TaskList {
        TaskList(entries: tasks.sorted { $0.key < $1.key }.map { task, held in
            TaskList.Entry(task: task, attempt: held.attempt, state: held.state, container: held.container)
        })
    }

    /// Every attempt held, by task id, for the worker's own API.
    public var snapshot: [WorkerTaskDTO] {
        tasks.sorted { $0.key < $1.key }.map { task, held in
            WorkerTaskDTO(
                id: task, attempt: held.attempt, state: held.state, image: held.image, container: held.container,
                exitCode: held.exitCode, error: held.error, ports: held.ports, health: held.health)
        }
    }

    /// The container of the attempt held for `task` (for its logs), if it has one.
    public func container(of task: TaskID) -> ContainerID? { tasks[task]?.container }

    public func attempt(of task: TaskID) -> UInt64? { tasks[task]?.attempt }

    /// When the manager was last heard from: the shell keeps it across restarts (as
    /// `silentFor` for the next process), so that a disconnect policy's clock goes on.
    public var lastHeardFromManager: Moment { lastHeard }

    public var runningCount: Int { tasks.values.filter { $0.state == .running }.count }

    /// The containers of attempts started and not ended: what a listing must show, or they are gone.
    public var liveContainers: [ContainerID] {
        tasks.values.filter { !$0.starting && ($0.state == .running || $0.state == .stopping) }.compactMap(\.container)
    }

    /// Terminal statuses not yet acknowledged, oldest first: re-sent on every connection.
    public var unacknowledged: [TaskStatus] { outbox.resend }

    /// Whether a connection is up (welcomed, and not dropped since).
    public var isConnected: Bool { connected != nil }

    /// The earliest deadline: the next heartbeat, the moment a silent manager's connection
    /// is dropped, the nearest disconnect stop, or the end of a drain; nil when nothing is due ever. Every
    /// `handle` call ends with a `wake(at:)` for it.
    public var nextWake: Moment? {
        var next: Moment?
        if connected != nil {
            next = [nextHeartbeat, silenceDeadline].compactMap { $0 }.min()
        }
        for held in tasks.values {
            for deadline in [disconnectDeadline(of: held), held.drainUntil].compactMap({ $0 }) {
                next = min(next ?? deadline, deadline)
            }
        }
        return next
    }
}
