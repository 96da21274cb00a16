import OrchCore

/// Placement: the queues of pending tasks and the scheduler's view of the nodes.
///
/// A pending task that is to run is always in exactly one of three places: `ready` (placed at
/// the end of the current input), `blocked` (fits nowhere; tried again when capacity may have
/// appeared) or `backoff` (a restart waiting for its moment; `timer` moves it to `ready`).
/// The simulator checks this after every step: a task in none of them would wait forever.
extension ManagerMachine {
    /// Places the tasks that are ready: new ones, those whose backoff has passed and, when
    /// capacity may have appeared, those found to fit nowhere before. A task that fits
    /// nowhere stays pending with the reason. A pass costs the ready tasks only.
    mutating func placePending() {
        if capacityChanged {
            capacityChanged = false
            if !blocked.isEmpty {
                ready = blocked + ready
                blocked = []
            }
        }
        guard !ready.isEmpty else { return }
        let batch = ready
        ready = []
        // The smallest request that fit nowhere in this pass: a plain task asking at least as
        // much cannot fit either, and is not scanned for.
        var smallestRefused: ResourceAmount?
        for id in batch {
            guard let record = tasks[id], record.state == .pending, record.desiredState == .run, backoff[id] == nil else { continue }
            let resources = record.spec.resources
            let plain = record.spec.constraints.isEmpty && record.spec.ports.allSatisfy { $0.hostPort == nil }
            if plain, let smallest = smallestRefused,
               resources.millicores >= smallest.millicores, resources.memoryBytes >= smallest.memoryBytes {
                let cpus = Double(resources.millicores) / 1000
                wait(id, reason: "no node has \(cpus.formatted()) CPUs and \(ByteCount.format(resources.memoryBytes)) free (nor room for a smaller task)")
                continue
            }
            switch scheduler.place(record.spec, on: schedulingNodes, avoiding: replicaNodes(besides: record)) {
            case .node(let node):
                assign(id, to: node)
            case .nowhere(let reason):
                let request = ResourceAmount(millicores: resources.millicores, memoryBytes: resources.memoryBytes)
                if plain, smallestRefused.map({ request.millicores <= $0.millicores && request.memoryBytes <= $0.memoryBytes }) ?? true {
                    smallestRefused = request
                }
                wait(id, reason: reason)
            }
        }
    }

    /// The nodes that hold a live replica of the task's service (none for a plain task): a
    /// replica goes elsewhere while another node fits. Read at placement, so that replicas
    /// placed earlier in the same pass count.
    private func replicaNodes(besides record: TaskRecord) -> Set<NodeID> {
        guard let service = record.replica?.service, let ids = serviceTasks[service] else { return [] }
        var nodes = Set<NodeID>()
        for id in ids where id != record.id {
            if let task = tasks[id], task.holdsReservation, task.desiredState == .run, let node = task.node { nodes.insert(node) }
        }
        return nodes
    }

    public static let nowherePrefix = "waiting for a node: "

    /// Keeps `id` pending with why, until capacity may have appeared.
    private mutating func wait(_ id: TaskID, reason: String) {
        blocked.append(id)
        let text = Self.nowherePrefix + reason
        guard tasks[id]?.error != text else { return }
        tasks[id]?.error = text
        save(id)
    }

    /// Puts a pending task in its queue: ready now, or after its backoff.
    mutating func enqueue(_ id: TaskID, after delay: Duration = .zero) {
        if delay > .zero {
            backoff[id] = now + delay
            wake(at: now + delay)
        } else {
            backoff[id] = nil
            ready.append(id)
        }
    }

    /// Restart backoffs that have passed: those tasks are ready.
    mutating func releaseDueBackoffs() {
        guard !backoff.isEmpty else { return }
        for (id, due) in backoff.sorted(by: { ($0.value, $0.key) < ($1.value, $1.key) }) where due <= now {
            backoff[id] = nil
            ready.append(id)
        }
    }

    /// Gives `id` a new attempt on `node` and sends it the assignment.
    private mutating func assign(_ id: TaskID, to node: NodeID) {
        guard change(id, .placed(on: node)), let record = tasks[id] else { return }
        reserve(id, on: node)
        note(.placed(id, on: node))
        // Sent once the placement is durable: a manager that crashed before would place the
        // task again under the same attempt number, and the fencing number would not be unique.
        guard let connection = nodes[node]?.connection else { return }
        afterCommit(.send(connection, .assignTask(AssignTask(task: id, attempt: UInt64(record.attempt), spec: record.spec, epoch: configuration.epoch))))
    }

    // MARK: - The scheduler's view of the nodes

    mutating func addSchedulingNode(_ id: NodeID) {
        guard let entry = nodes[id], schedulingIndex[id] == nil else { return }
        schedulingIndex[id] = schedulingNodes.count
        schedulingNodes.append(Self.schedulingNode(entry, tasks: tasks))
    }

    /// What the scheduler sees of a node: its capacity, and what its tasks reserve.
    static func schedulingNode(_ entry: NodeEntry, tasks: [TaskID: TaskRecord]) -> SchedulingNode {
        var reserved = ResourceAmount.zero
        var ports = Set<Int>()
        for task in entry.tasks {
            guard let spec = tasks[task]?.spec else { continue }
            reserved.millicores += spec.resources.millicores
            reserved.memoryBytes += spec.resources.memoryBytes
            ports.formUnion(spec.ports.compactMap(\.hostPort))
        }
        var node = SchedulingNode(
            id: entry.record.id, name: entry.record.name, isUp: entry.state == .up && entry.connection != nil, labels: entry.record.labels,
            capacity: ResourceAmount(millicores: entry.record.capacity.millicores, memoryBytes: entry.record.capacity.memoryBytes),
            reserved: reserved, usedHostPorts: ports, engineError: entry.engineError)
        node.drained = entry.record.drainedAt != nil
        return node
    }

    mutating func removeSchedulingNode(_ id: NodeID) {
        guard let index = schedulingIndex.removeValue(forKey: id) else { return }
        schedulingNodes.remove(at: index)
        for position in index..<schedulingNodes.count { schedulingIndex[schedulingNodes[position].id] = position }
    }

    /// Refreshes what the scheduler sees of a node's state and identity.
    mutating func refreshSchedulingNode(_ id: NodeID) {
        guard let entry = nodes[id], let index = schedulingIndex[id] else { return }
        let up = entry.state == .up && entry.connection != nil
        if up != schedulingNodes[index].isUp { nodeReachabilityChanged(id) }
        if (up && !schedulingNodes[index].isUp) || (entry.engineError == nil && schedulingNodes[index].engineError != nil) {
            capacityChanged = true
        }
        schedulingNodes[index].isUp = up
        schedulingNodes[index].engineError = entry.engineError
        if schedulingNodes[index].drained && entry.record.drainedAt == nil { capacityChanged = true }
        schedulingNodes[index].drained = entry.record.drainedAt != nil
        schedulingNodes[index].name = entry.record.name
        schedulingNodes[index].labels = entry.record.labels
        schedulingNodes[index].capacity = ResourceAmount(millicores: entry.record.capacity.millicores, memoryBytes: entry.record.capacity.memoryBytes)
    }

    mutating func recordMeasured(_ id: NodeID, _ metrics: MachineMetrics) {
        guard let index = schedulingIndex[id] else { return }
        // Memory is measured on the whole machine; a worker may offer only a share of it
        // (--memory), so the machine's used fraction is applied to what it offers.
        let offered = schedulingNodes[index].capacity.memoryBytes
        var memory = Int(clamping: metrics.memoryUsedBytes)
        if metrics.memoryTotalBytes > 0, offered > 0 {
            memory = Int(Double(metrics.memoryUsedBytes) / Double(metrics.memoryTotalBytes) * Double(offered))
        }
        schedulingNodes[index].measured = ResourceAmount(millicores: Int(metrics.cpuMillicoresUsed), memoryBytes: memory)
    }

    mutating func adjustReservation(_ id: NodeID, by spec: TaskSpec, sign: Int) {
        guard let index = schedulingIndex[id] else { return }
        schedulingNodes[index].reserved.millicores += sign * spec.resources.millicores
        schedulingNodes[index].reserved.memoryBytes += sign * spec.resources.memoryBytes
        // A measurement is a snapshot: what is placed after it is not in it yet, so it is
        // added on top until the next heartbeat measures again. Otherwise a burst of
        // placements between two heartbeats would all go to the node measured least busy.
        if sign > 0, var measured = schedulingNodes[index].measured {
            measured.millicores += spec.resources.millicores
            measured.memoryBytes += spec.resources.memoryBytes
            schedulingNodes[index].measured = measured
        }
        for port in spec.ports.compactMap(\.hostPort) {
            if sign > 0 { schedulingNodes[index].usedHostPorts.insert(port) } else { schedulingNodes[index].usedHostPorts.remove(port) }
        }
    }
}
