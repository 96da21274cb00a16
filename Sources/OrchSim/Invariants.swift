import OrchControl
import OrchCore

/// The invariants, checked after every step (and the end-state ones when the quiet phase
/// ends). Exactly what each one checks:
///
/// - `one-current-attempt`, two parts, over the engine's running containers:
///   (a) on one node, at most one running container per task (a worker stops and removes
///   the older attempt before it starts a newer one, and never starts a second container for
///   an attempt); since an attempt is current only on the node the manager placed it on,
///   this also means at most one running container carries the manager's current
///   (task, attempt, node);
///   (b) a running container is *stale* when the manager (while it is up) has no record of
///   its task, or the record names another attempt or another node, or the record is
///   pending, completed or failed (no attempt of it is live). A stale container may run on
///   while its worker cannot hear from the manager (disconnected, partitioned, the manager
///   down: at-least-once), but not once the worker has heard: it is a violation when a
///   container has been stale for longer than L while its worker process has been in
///   contact with the running manager (welcomed on a connection open at both ends, no
///   partition) for longer than L too, where L = max(the task's stop grace period, the
///   default 10 s) + 3 s. That covers the task list and the manager's stop_task in flight,
///   the stop itself (SIGKILL at the end of the grace period the worker applies: an adopted
///   container's spec is unknown to a restarted worker, which then uses the default) and
///   margin.
/// - `no-duplicate-with-stopAfter`: for a task whose spec has `disconnect.stopAfter`, at no
///   moment do two running containers of it exist anywhere (any attempts, any nodes).
/// - `acknowledged-task-kept`: every task answered `submitted` exists, with the spec it was
///   accepted with, in the committed store, and in the manager machine whenever one runs
///   (after any number of restarts).
/// - `reservations-within-capacity`: for every node in `ManagerMachine.reservations`, the
///   CPU and memory its tasks reserve are within its capacity.
/// - `stopped-stays-stopped`: once a stop was answered `stopped`, the task's desired state is
///   stop and its attempt number no higher than in that answer, in the running manager and
///   in the store; no worker is ever told to start an attempt of it newer than that one (an
///   assignment of that same attempt still in flight is a race the stop then wins). The
///   answer itself must say desired state stop.
/// - `no-forgotten-pending`: `ManagerMachine.forgottenPendingTasks` is empty.
/// - `submission-answers-consistent` (extra): a `submitted` answer carries the spec sent; a
///   task acknowledged with one spec is never accepted with another; the spec it was
///   acknowledged with is never refused as a conflict.
/// - `store-batches-in-order` (extra): every persisted batch is numbered one more than the
///   one before (after a restart, one more than the revision it resumed from).
/// - `valid-workers-admitted`: no worker is refused for good (every simulated worker speaks
///   the protocol with a valid hello; a permanent refusal makes a real worker exit for a
///   person to look at), whatever connection of it the manager still holds.
/// - `engine-down-gets-nothing`: no task is placed on a node whose latest heartbeat (as the
///   manager holds it) says its container engine does not answer (the simulated worker says
///   so while its runtime's event stream is lost).
/// - `one-task-per-slot-version`: no service has two live tasks (pending, scheduled or
///   running, to run) of one version in one slot, in the running manager
///   (`ManagerMachine.liveReplicas(of:)`) or in the committed store (what a restarted
///   manager would start from).
///
/// At the end of the quiet phase:
/// - `terminal-statuses-acknowledged`: every worker machine's `unacknowledged` is empty.
/// - `converged`: the manager and every worker process run, every worker is in contact
///   and up; every task reached what it should: desired stop -> completed or failed (a task
///   that had failed stays failed) with no container of it running anywhere; desired run ->
///   running on an up, connected node whose engine runs its current attempt's container
///   (the one the record names), or completed/failed where its restart policy, judged at
///   the moment it ended, leaves it so (never, on-failure after exit 0, restarts used up),
///   or pending only while no up node has room for it; nothing scheduled, stopping or lost;
///   and no container runs that is not the current attempt of a running task. A service's
///   replica is not judged by its restart policy (its service replaces it, whatever the
///   policy says): `service-replicas-kept` judges it.
/// - `service-replicas-kept`: no service is still being removed, and no deploy is still
///   running or rolling back (the quiet phase runs on while one is, up to `maximumQuiet`:
///   a deploy that does not end within it is a violation); every other service whose current
///   version's template runs until stopped (one made to fail cannot be kept running) has
///   live tasks of its current version only, in slots 1...replicas, exactly one per slot,
///   and each is running, or pending only while no up node has room for it (as `converged`
///   judges a pending task). `converged` checks, for every running task, that its container
///   runs on an up node.
extension Simulation {
    func violate(_ invariant: Invariant, _ message: String) {
        guard violations.isEmpty, !ignoring.contains(invariant) else { return }   // the run stops at the first one
        violations.append(Violation(seed: seed, step: step, time: now, invariant: invariant, message: message, trace: recentLines))
    }

    /// Every invariant that holds after each step.
    func checkAfterStep() {
        guard violations.isEmpty else { return }
        if manager != nil {
            let forgotten = manager!.machine.forgottenPendingTasks
            if !forgotten.isEmpty {
                violate(.noForgottenPending, "pending tasks in no queue: \(forgotten.map(\.short).joined(separator: ", "))")
            }
            for entry in manager!.machine.reservations {
                if entry.reserved.millicores > entry.capacity.millicores || entry.reserved.memoryBytes > entry.capacity.memoryBytes {
                    violate(.reservationsWithinCapacity,
                                   "\(entry.node) reserves \(entry.reserved.millicores)m/\(entry.reserved.memoryBytes >> 20)MiB of \(entry.capacity.millicores)m/\(entry.capacity.memoryBytes >> 20)MiB")
                }
            }
        }
        for id in clients.acknowledged.keys.sorted() {
            let spec = clients.acknowledged[id]!
            guard let stored = store.tasks[id] else { violate(.acknowledgedTaskKept, "\(id.short) was acknowledged but is not in the store"); continue }
            if stored.spec != spec { violate(.acknowledgedTaskKept, "\(id.short) is in the store with another spec") }
            if manager != nil {
                guard let record = manager!.machine.task(id) else {
                    violate(.acknowledgedTaskKept, "\(id.short) was acknowledged but the manager (incarnation \(managerIncarnation)) does not have it")
                    continue
                }
                if record.spec != spec { violate(.acknowledgedTaskKept, "\(id.short) is in the manager with another spec") }
            }
        }
        for id in clients.stopped.keys.sorted() {
            let stop = clients.stopped[id]!
            if let stored = store.tasks[id], stored.desiredState != .stop || stored.attempt > stop.attempt {
                violate(.stoppedStaysStopped, "\(id.short) stopped at \(stop.at) is in the store as desired \(stored.desiredState.rawValue), attempt \(stored.attempt) (was \(stop.attempt))")
            }
            if store.tasks[id] == nil { violate(.stoppedStaysStopped, "\(id.short) stopped at \(stop.at) is not in the store") }
            if manager != nil, let record = manager!.machine.task(id), record.desiredState != .stop || record.attempt > stop.attempt {
                violate(.stoppedStaysStopped, "\(id.short) stopped at \(stop.at) is desired \(record.desiredState.rawValue), attempt \(record.attempt) (was \(stop.attempt)) in the manager")
            }
        }
        checkContainers()
        checkSlots()
    }

    /// `one-task-per-slot-version`, in the running manager and in the committed store.
    func checkSlots() {
        if let machine = manager?.machine {
            for name in machine.serviceNames {
                var seen: [Int: [ServiceVersion: TaskID]] = [:]
                for replica in machine.liveReplicas(of: name) {
                    if let other = seen[replica.slot]?[replica.version] {
                        violate(.oneTaskPerSlotVersion,
                                "service \(name) has two live tasks of version \(replica.version) in slot \(replica.slot): \(other.short) and \(replica.task.short)")
                    }
                    seen[replica.slot, default: [:]][replica.version] = replica.task
                }
            }
        }
        guard !store.services.isEmpty else { return }
        var stored: [String: [Int: [ServiceVersion: TaskID]]] = [:]
        for id in store.tasks.keys.sorted() {
            guard let record = store.tasks[id], let replica = record.replica, record.desiredState == .run,
                  record.state == .pending || record.state == .scheduled || record.state == .running else { continue }
            if let other = stored[replica.service]?[replica.slot]?[replica.version] {
                violate(.oneTaskPerSlotVersion,
                        "the store holds two live tasks of service \(replica.service), version \(replica.version), slot \(replica.slot): \(other.short) and \(id.short)")
            }
            stored[replica.service, default: [:]][replica.slot, default: [:]][replica.version] = id
        }
    }

    /// `one-current-attempt` and `no-duplicate-with-stopAfter`, over the running containers.
    func checkContainers() {
        var runningByTask: [TaskID: [(node: Int, container: SimContainer)]] = [:]
        for index in nodes.indices {
            var seen: [TaskID: ContainerID] = [:]
            let contact = contactSince(index)
            for serial in nodes[index].containers.keys.sorted() {
                guard var container = nodes[index].containers[serial], container.isRunning else { continue }
                if let other = seen[container.task] {
                    violate(.oneCurrentAttempt, "\(nodeName(index)) runs two containers of \(container.task.short): \(other) and \(container.id) (#\(container.attempt))")
                }
                seen[container.task] = container.id
                runningByTask[container.task, default: []].append((index, container))
                // Staleness, judged against the running manager only.
                guard manager != nil else { continue }
                let stale: Bool
                let record = manager!.machine.task(container.task)
                if let record {
                    stale = record.attempt != Int(container.attempt) || record.node != nodes[index].id
                        || record.state == .pending || record.state.isTerminal
                } else {
                    stale = true
                }
                if stale {
                    let since = container.staleSince ?? now
                    if container.staleSince == nil {
                        container.staleSince = now
                        nodes[index].containers[serial] = container
                    }
                    // The worker knows the task's grace period from the container's labels, so
                    // an adopted container is stopped with its own grace too.
                    let bound = container.spec.stopGracePeriod + .seconds(3)
                    if let contact, now - since > bound, now - contact > bound {
                        let what = record.map { "the manager has attempt \($0.attempt) \($0.state.rawValue) on \($0.node?.rawValue ?? "no node")" } ?? "the manager has no such task"
                        violate(.oneCurrentAttempt,
                                       "\(nodeName(index)) still runs stale \(container.id) of \(container.task.short)#\(container.attempt) (grace \(DurationText.format(container.spec.stopGracePeriod)), stale since \(since), in contact since \(contact)); \(what)")
                    }
                } else if container.staleSince != nil {
                    container.staleSince = nil
                    nodes[index].containers[serial] = container
                }
            }
        }
        for task in runningByTask.keys.sorted() where !ignoring.contains(.noDuplicateWithStopAfter) {
            guard let found = runningByTask[task], let policy = found.first?.container.spec.disconnect else { continue }
            // The policy is the worker process's to carry out: a copy whose worker process has
            // been down longer than `stopAfter` (or is back since less than its grace, the
            // time it takes to stop it) cannot be stopped by anyone, and is not counted.
            // docs/RELIABILITY.md, "What the disconnect policy cannot do".
            let running = found.filter { !unenforceable($0.node, stopAfter: policy.stopAfter, grace: $0.container.spec.stopGracePeriod) }
            guard running.count > 1 else { continue }
            let list = running.map { "\(nodeName($0.node)):\($0.container.id)#\($0.container.attempt) [\(situation($0.node))]" }.joined(separator: ", ")
            violate(.noDuplicateWithStopAfter, "\(task.short) (stopAfter \(DurationText.format(running[0].container.spec.disconnect!.stopAfter))) runs twice: \(list)")
        }
    }

    /// Whether the worker process of `index` was down when a task's `stopAfter` ran out (its
    /// silence counts from the last contact of the process before): nothing could enforce the
    /// policy then, until the process is back and has had its grace to stop the copy.
    func unenforceable(_ index: Int, stopAfter: Duration, grace: Duration) -> Bool {
        if nodes[index].process == nil {
            let since = nodes[index].lastContact ?? nodes[index].downSince ?? now
            if now - since > stopAfter { return true }
            // Down again within the grace of a return that began the late stop: that stop
            // still runs on the engine, and is still within its grace.
        }
        // A return that began a late stop (the silence ran past `stopAfter` while the process
        // was down): that stop runs on the engine for its grace, even through another downtime.
        for downtime in [nodes[index].lastDowntime, nodes[index].earlierDowntime].compactMap({ $0 }) where downtime.to - downtime.from > .zero {
            if downtime.to - (downtime.contact ?? downtime.from) > stopAfter, now - downtime.to <= grace + .seconds(1) { return true }
        }
        return false
    }

    /// Where a worker stands, for messages.
    func situation(_ index: Int) -> String {
        var parts: [String] = []
        if nodes[index].process == nil { parts.append("process down since \(nodes[index].downSince.map(\.description) ?? "?")") }
        if let partition = nodes[index].partition { parts.append("partitioned (\(partition.mode.rawValue)) until \(partition.until)") }
        if let contact = contactSince(index) { parts.append("in contact since \(contact)") } else if nodes[index].process != nil { parts.append("not in contact") }
        return parts.joined(separator: ", ")
    }

    // MARK: - The end state

    /// What is wrong with the end state; empty when the cluster converged.
    func finalViolations() -> [(Invariant, String)] {
        var problems: [(Invariant, String)] = []
        for node in nodes {
            guard let process = node.process else { continue }
            let unacknowledged = process.machine.unacknowledged
            if !unacknowledged.isEmpty {
                let list = unacknowledged.prefix(4).map { "#\($0.statusID) \($0.task.short)#\($0.attempt) \($0.state.rawValue)" }.joined(separator: ", ")
                problems.append((.terminalStatusesAcknowledged, "\(node.name) holds \(unacknowledged.count) unacknowledged terminal statuses: \(list)"))
            }
        }
        guard let machine = manager?.machine else { return problems + [(.converged, "the manager is not running")] }
        let listed = Dictionary(uniqueKeysWithValues: machine.listNodes().map { ($0.id, $0) })
        var upNodes: Set<NodeID> = []
        for node in nodes {
            if node.process == nil { problems.append((.converged, "\(node.name) has no process")); continue }
            if contactSince(node.index) == nil { problems.append((.converged, "\(node.name) is not in contact with the manager")); continue }
            guard let entry = listed[node.id], entry.state == .up, machine.isConnected(node.id) else {
                problems.append((.converged, "the manager does not see \(node.name) up and connected (\(listed[node.id]?.state.rawValue ?? "unknown"))"))
                continue
            }
            upNodes.insert(node.id)
        }
        problems += meshProblems(machine, up: upNodes)
        let table = machine.taskTable
        let reservations = Dictionary(uniqueKeysWithValues: machine.reservations.map { ($0.node, $0) })
        /// An up node with room for the spec (CPU, memory, its fixed host ports), if any.
        func room(for spec: TaskSpec) -> NodeID? {
            let need = spec.resources
            let wanted = Set(spec.ports.compactMap(\.hostPort))
            for node in upNodes.sorted() {
                guard let entry = reservations[node] else { continue }
                let cpu = entry.capacity.millicores - entry.reserved.millicores >= need.millicores
                let memory = entry.capacity.memoryBytes - entry.reserved.memoryBytes >= need.memoryBytes
                let used = Set(table.tasks.values.filter { $0.node == node && $0.holdsReservation }.flatMap { $0.spec.ports.compactMap(\.hostPort) })
                if cpu, memory, used.isDisjoint(with: wanted) { return node }
            }
            return nil
        }
        problems += serviceProblems(machine, table: table, room: room)
        var running: [TaskID: [(node: Int, container: SimContainer)]] = [:]
        for node in nodes {
            for serial in node.containers.keys.sorted() where node.containers[serial]!.isRunning {
                running[node.containers[serial]!.task, default: []].append((node.index, node.containers[serial]!))
            }
        }
        for task in running.keys.sorted() where table.tasks[task] == nil {
            for (index, container) in running[task]! {
                problems.append((.converged, "\(nodes[index].name) runs \(container.id) of \(task.short)#\(container.attempt), a task the manager does not have"))
            }
        }
        for id in table.order {
            guard let record = table.tasks[id] else { continue }
            let name = id.short
            let containers = running[id] ?? []
            // Nothing runs but the current attempt of a running task.
            for (index, container) in containers {
                let current = record.state == .running && record.node == nodes[index].id && record.attempt == Int(container.attempt)
                if !current {
                    problems.append((.converged, "\(nodes[index].name) runs \(container.id) of \(name)#\(container.attempt), which is not current (\(record.state.rawValue) #\(record.attempt) on \(record.node?.rawValue ?? "no node"))"))
                }
            }
            if record.desiredState == .stop {
                if !record.state.isTerminal { problems.append((.converged, "\(name) is to stop but is \(record.state.rawValue)")) }
                continue
            }
            switch record.state {
            case .scheduled, .stopping, .lost:
                problems.append((.converged, "\(name) is still \(record.state.rawValue) (#\(record.attempt) on \(record.node?.rawValue ?? "no node"))"))
            case .running:
                guard let node = record.node, upNodes.contains(node), let index = nodes.firstIndex(where: { $0.id == node }) else {
                    problems.append((.converged, "\(name) is running on \(record.node?.rawValue ?? "no node"), which is not up"))
                    continue
                }
                let here = containers.first { $0.node == index && Int($0.container.attempt) == record.attempt }
                if here == nil || here?.container.id != record.containerID {
                    problems.append((.converged, "\(name) is running #\(record.attempt) on \(nodes[index].name) as \(record.containerID?.rawValue ?? "nil"), but its engine runs \(here.map { $0.container.id.rawValue } ?? "no container of it")"))
                }
            case .completed, .failed:
                guard record.replica == nil else { continue }   // its service replaces it
                let ended = record.finishedAt ?? record.updatedAt
                if case .restart = RestartDecision.decide(for: record, now: ended) {
                    problems.append((.converged, "\(name) is \(record.state.rawValue) though its policy restarts it (\(record.restartCount) restarts)"))
                }
            case .pending:
                // Only while no up node has room for it.
                if let node = room(for: record.spec) {
                    problems.append((.converged, "\(name) is pending (\(record.error ?? "")) though \(node) has room"))
                }
            }
        }
        return problems
    }

    /// A service's tasks as the manager keeps them, slot by slot, for messages:
    /// `slot.version id state` (with `!stop` for those to stop).
    func replicaSummary(_ name: String, _ table: TaskTable) -> String {
        let tasks = table.tasks.values.filter { $0.replica?.service == name }
            .sorted { ($0.replica!.slot, $0.replica!.version, $0.createdAt, $0.id) < ($1.replica!.slot, $1.replica!.version, $1.createdAt, $1.id) }
        return "tasks: " + tasks.map { "\($0.replica!.slot).v\($0.replica!.version) \($0.id.short) \($0.state.rawValue)\($0.desiredState == .stop ? " !stop" : "")" }
            .joined(separator: ", ")
    }

    /// Part of `converged`: the manager's last table of each service that publishes a port
    /// lists the catalog's endpoints, and every up worker's load balancer holds exactly those
    /// tables (none of a service removed or no longer publishing).
    func meshProblems(_ machine: ManagerMachine, up: Set<NodeID>) -> [(Invariant, String)] {
        var problems: [(Invariant, String)] = []
        let sent = machine.sentMeshTables
        for name in sent.keys.sorted() {
            let catalog = (try? machine.endpoints(of: name))?.endpoints.map(\.task) ?? []
            if Set(sent[name]!.endpoints.map(\.task)) != Set(catalog) {
                problems.append((.converged, "the manager's table of \(name) lists \(sent[name]!.endpoints.count) endpoints, its catalog \(catalog.count)"))
            }
        }
        for node in nodes where up.contains(node.id) {
            guard let held = node.process?.mesh.tables else { continue }
            if held != sent {
                let differing = Set(held.keys).union(sent.keys).filter { held[$0] != sent[$0] }.sorted()
                problems.append((.converged, "\(node.name)'s load balancer holds other tables than the manager sent: \(differing.joined(separator: ", "))"))
            }
        }
        return problems
    }

    /// `service-replicas-kept`, at the end: see the list above.
    func serviceProblems(_ machine: ManagerMachine, table: TaskTable, room: (TaskSpec) -> NodeID?) -> [(Invariant, String)] {
        var problems: [(Invariant, String)] = []
        for name in machine.serviceNames {
            guard let service = machine.service(name) else { continue }
            if service.removing {
                problems.append((.serviceReplicasKept, "service \(name) is still being removed; \(replicaSummary(name, table))"))
                continue
            }
            if let deploy = service.deploy, deploy.isActive {
                problems.append((.serviceReplicasKept,
                                 "service \(name): the deploy of version \(deploy.to) (from \(deploy.from)) is still \(deploy.state.rawValue) (started \(deploy.startedAt)); \(replicaSummary(name, table))"))
                continue
            }
            // A template made to fail: no replica of it can be kept running.
            guard Behaviour(service.template) == .forever else { continue }
            let version = service.version
            // A deploy that failed (without a rollback, or whose rollback failed too) stops where
            // it is: a slot may keep an older task beside (or instead of) the new one; each slot
            // still has a live task, and never two of one version.
            let stopped = service.deploy?.state == .failed
            let what = "service \(name) (version \(version), \(service.replicas) replicas\(service.deploy.map { ", its deploy of version \($0.to) \($0.state.rawValue)" } ?? ""))"
            let live = machine.liveReplicas(of: name)
            for replica in live where (!stopped && replica.version != version) || replica.slot < 1 || replica.slot > service.replicas {
                problems.append((.serviceReplicasKept, "\(what) has \(replica.task.short) of version \(replica.version) live in slot \(replica.slot); \(replicaSummary(name, table))"))
            }
            for slot in stride(from: 1, through: service.replicas, by: 1) {
                let here = live.filter { $0.slot == slot && (stopped || $0.version == version) }
                    .sorted { ($0.version == version ? 0 : 1, $0.task) < ($1.version == version ? 0 : 1, $1.task) }
                guard let first = here.first, let record = table.tasks[first.task] else {
                    problems.append((.serviceReplicasKept, "\(what) has no live task in slot \(slot); \(replicaSummary(name, table))"))
                    continue
                }
                if here.count > Set(here.map(\.version)).count {
                    problems.append((.serviceReplicasKept, "\(what) has \(here.count) live tasks in slot \(slot)"))
                }
                switch record.state {
                case .running:
                    break
                case .pending:
                    if let node = room(record.spec) {
                        problems.append((.serviceReplicasKept, "\(what): slot \(slot)'s \(first.task.short) is pending (\(record.error ?? "")) though \(node) has room"))
                    }
                default:
                    problems.append((.serviceReplicasKept, "\(what): slot \(slot)'s \(first.task.short) is \(record.state.rawValue), not running"))
                }
            }
        }
        return problems
    }
}
