// FoundationEssentials has no `pow` for Double; the C library does, on every platform.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#elseif canImport(ucrt)
import ucrt
#endif

/// Chooses a node for each task, by one strategy.
///
/// Every strategy looks only at feasible nodes (``isFeasible(_:on:)``). So that a placement
/// costs the same on 10 nodes and on 10,000, nodes are not all scored: the scan starts at a
/// cursor that moves on with every placement and stops once ``sampleSize`` feasible nodes are
/// found (Nomad scores a bounded sample the same way). A placement is refused only after a full
/// pass found no feasible node, and the refusal says why in words.
///
/// The scheduler reads nodes and never changes them: the caller adds the task's resources to
/// the chosen node's `reserved` (and its fixed host ports to `usedHostPorts`) before the next
/// placement. Cube never counted what it placed, so its scores did not move between tasks.
public struct Scheduler: Sendable {
    public let kind: SchedulerKind
    /// At most this many feasible nodes are scored per placement (a bounded sample, as Nomad does).
    public let sampleSize: Int
    /// Where the next scan starts, as an index into the node list (taken modulo its length).
    private var cursor = 0

    /// E-PVM's base: the opportunity cost of a resource at load `x` is `a^x`.
    static let epvmBase = 1.53960071783900203869

    /// - Parameters:
    ///   - kind: the strategy.
    ///   - sampleSize: how many feasible nodes are scored at most per placement; at least 1.
    public init(kind: SchedulerKind, sampleSize: Int = 32) {
        self.kind = kind
        self.sampleSize = max(1, sampleSize)
    }

    // MARK: - Placing

    /// Chooses a node for `spec` among `nodes`. Pure, apart from the scheduler's own cursor.
    ///
    /// Ties in score go to the smallest node id, so the same inputs give the same choice.
    /// Nodes in `avoiding` (those that run a replica of the same service already) are taken
    /// only when no other node fits: replicas spread while they can.
    public mutating func place(_ spec: TaskSpec, on nodes: [SchedulingNode], avoiding: Set<NodeID> = []) -> PlacementDecision {
        guard !nodes.isEmpty else { return .nowhere(reason: "no node has joined the cluster") }
        let start = cursor % nodes.count
        // Round robin takes the first feasible node, so its sample is that one node.
        let wanted = kind == .roundrobin ? 1 : sampleSize
        var sample: [Int] = []
        // Feasible nodes to avoid, taken only when the scan finds no other.
        var fallback: [Int] = []
        var looked = 0
        while looked < nodes.count, sample.count < wanted {
            let index = (start + looked) % nodes.count
            looked += 1
            guard Self.isFeasible(spec, on: nodes[index]) else { continue }
            if avoiding.contains(nodes[index].id) {
                if fallback.count < wanted { fallback.append(index) }
            } else {
                sample.append(index)
            }
        }
        if sample.isEmpty { sample = fallback }
        // The next scan starts just past this one, so successive samples cover the cluster.
        cursor = (start + looked) % nodes.count
        guard !sample.isEmpty else { return .nowhere(reason: Self.reasonNothingFits(spec, among: nodes)) }
        if kind == .roundrobin { return .node(nodes[sample[0]].id) }

        let demand = ResourceAmount(spec.resources)
        var best = sample[0]
        var bestScore = score(nodes[best], adding: demand)
        for index in sample.dropFirst() {
            let candidate = score(nodes[index], adding: demand)
            if candidate < bestScore || (candidate == bestScore && nodes[index].id < nodes[best].id) {
                best = index
                bestScore = candidate
            }
        }
        return .node(nodes[best].id)
    }

    /// Whether `spec` fits on `node` (up with its engine answering, free CPU and memory,
    /// fixed host ports free, constraints met).
    public static func isFeasible(_ spec: TaskSpec, on node: SchedulingNode) -> Bool {
        node.isUp && node.engineError == nil && !node.drained
            && node.matches(spec.constraints)
            && node.hasRoom(for: ResourceAmount(spec.resources))
            && node.takenHostPorts(of: spec).isEmpty
    }

    // MARK: - Scoring

    /// The node's score for taking `demand`; the lowest wins. Only called on feasible nodes,
    /// whose capacities are positive.
    private func score(_ node: SchedulingNode, adding demand: ResourceAmount) -> Double {
        switch kind {
        case .epvm: return Self.opportunityCost(of: demand, on: node)
        case .spread: return Self.reservedFraction(of: node, adding: demand)
        case .binpack: return -Self.reservedFraction(of: node, adding: demand)
        case .roundrobin: return 0
        }
    }

    /// E-PVM's marginal cost, summed over CPU and memory: `a^after − a^before` per resource.
    ///
    /// The load before is what is reserved or what was measured, whichever is more, so that a
    /// busy node costs more even when its tasks reserved little. The load after adds the task's
    /// own reservation; Cube's CPU terms were the same before and after, so they cancelled out.
    static func opportunityCost(of demand: ResourceAmount, on node: SchedulingNode) -> Double {
        func cost(reserved: Int, measured: Int?, adding amount: Int, capacity: Int) -> Double {
            let before = Double(max(reserved, measured ?? 0)) / Double(capacity)
            let after = before + Double(amount) / Double(capacity)
            return pow(epvmBase, after) - pow(epvmBase, before)
        }
        return cost(
            reserved: node.reserved.millicores, measured: node.measured?.millicores,
            adding: demand.millicores, capacity: node.capacity.millicores
        ) + cost(
            reserved: node.reserved.memoryBytes, measured: node.measured?.memoryBytes,
            adding: demand.memoryBytes, capacity: node.capacity.memoryBytes
        )
    }

    /// How full the node's reservations are once `demand` is added: the larger of the CPU and
    /// memory fractions, since the fuller resource is the one that runs out.
    static func reservedFraction(of node: SchedulingNode, adding demand: ResourceAmount) -> Double {
        let cpu = (Double(node.reserved.millicores) + Double(demand.millicores)) / Double(node.capacity.millicores)
        let memory = (Double(node.reserved.memoryBytes) + Double(demand.memoryBytes)) / Double(node.capacity.memoryBytes)
        return max(cpu, memory)
    }
}

// MARK: - Feasibility, one rule at a time

extension SchedulingNode {
    /// Whether the node is the one pinned (by id or by name) and carries every required label.
    func matches(_ constraints: PlacementConstraints) -> Bool {
        if let pinned = constraints.node, pinned != id.rawValue, pinned != name { return false }
        return constraints.labels.allSatisfy { labels[$0.key] == $0.value }
    }

    /// Whether `demand` fits in what is free. A node without capacity (0, not reported yet)
    /// fits nothing, which also keeps every score free of a division by zero.
    func hasRoom(for demand: ResourceAmount) -> Bool {
        guard capacity.millicores > 0, capacity.memoryBytes > 0 else { return false }
        let free = self.free
        return free.millicores >= demand.millicores && free.memoryBytes >= demand.memoryBytes
    }

    /// The fixed host ports of `spec` already taken here, in ascending order.
    func takenHostPorts(of spec: TaskSpec) -> [Int] {
        Set(spec.ports.compactMap(\.hostPort)).filter(usedHostPorts.contains).sorted()
    }
}
