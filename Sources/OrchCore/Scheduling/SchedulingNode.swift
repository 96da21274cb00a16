/// Resources as the scheduler counts them: bytes and millicores throughout.
///
/// One unit per resource, everywhere: Cube mixed bytes, kB and MiB for memory, which made
/// its scores compare numbers that did not mean the same thing.
public struct ResourceAmount: Sendable, Hashable {
    /// Thousandths of a CPU.
    public var millicores: Int
    public var memoryBytes: Int

    public init(millicores: Int, memoryBytes: Int) {
        self.millicores = millicores
        self.memoryBytes = memoryBytes
    }

    /// No CPU and no memory.
    public static let zero = ResourceAmount(millicores: 0, memoryBytes: 0)

    /// What a task with `resources` reserves.
    init(_ resources: Resources) {
        self.init(millicores: resources.millicores, memoryBytes: resources.memoryBytes)
    }
}

/// A node as the scheduler sees it.
public struct SchedulingNode: Sendable, Hashable {
    public var id: NodeID
    /// The name people gave it; `constraints.node` may name it instead of its id.
    public var name: String
    /// False once it missed its heartbeats; a node that is down gets nothing.
    public var isUp: Bool
    public var labels: [String: String]
    /// What it offers in all; a capacity of 0 (not reported yet) fits nothing.
    public var capacity: ResourceAmount
    /// What the tasks placed on it reserve (their Resources), summed.
    public var reserved: ResourceAmount
    /// What its heartbeats measured (CPU millicores busy, memory bytes used), if any yet.
    public var measured: ResourceAmount?
    /// Host ports taken on it by fixed `hostPort`s of its tasks.
    public var usedHostPorts: Set<Int>
    /// Why its container engine does not answer; a node whose engine is down gets nothing.
    public var engineError: String?
    /// Drained by a user: what runs there stays, nothing new goes there.
    public var drained = false

    public init(
        id: NodeID, name: String, isUp: Bool = true, labels: [String: String] = [:],
        capacity: ResourceAmount, reserved: ResourceAmount = .zero, measured: ResourceAmount? = nil,
        usedHostPorts: Set<Int> = [], engineError: String? = nil
    ) {
        self.engineError = engineError
        self.id = id
        self.name = name
        self.isUp = isUp
        self.labels = labels
        self.capacity = capacity
        self.reserved = reserved
        self.measured = measured
        self.usedHostPorts = usedHostPorts
    }

    /// What is left to reserve: capacity minus reserved, floored at 0 in each resource.
    public var free: ResourceAmount {
        ResourceAmount(
            millicores: Self.remainder(capacity.millicores, minus: reserved.millicores),
            memoryBytes: Self.remainder(capacity.memoryBytes, minus: reserved.memoryBytes)
        )
    }

    /// `total - used` floored at 0, without trapping on absurd (negative, huge) inputs.
    private static func remainder(_ total: Int, minus used: Int) -> Int {
        let (difference, overflow) = total.subtractingReportingOverflow(used)
        if overflow { return used < 0 ? Int.max : 0 }
        return max(0, difference)
    }
}

/// The placement strategies; the raw values are what configuration and the API spell.
public enum SchedulerKind: String, Sendable, Hashable, CaseIterable {
    /// The lowest marginal opportunity cost (MOSIX's E-PVM), from reservations and measured load.
    case epvm
    /// The next node that fits, in turn.
    case roundrobin
    /// The node left least full by the task, so that load spreads out.
    case spread
    /// The node left fullest by the task, so that whole nodes stay free.
    case binpack
}

/// Where a task goes, or why it can go nowhere.
public enum PlacementDecision: Sendable, Hashable {
    case node(NodeID)
    /// No node fits; `reason` is one sentence for people, e.g. "no node is up".
    case nowhere(reason: String)
}
