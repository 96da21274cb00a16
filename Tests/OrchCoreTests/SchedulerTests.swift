@testable import OrchCore
import Testing

private let GiB = 1 << 30

private func node(
    _ id: String, name: String? = nil, isUp: Bool = true, labels: [String: String] = [:],
    millicores: Int = 4000, memory: Int = 8 * GiB, reservedMillicores: Int = 0, reservedMemory: Int = 0,
    measured: ResourceAmount? = nil, usedHostPorts: Set<Int> = []
) -> SchedulingNode {
    SchedulingNode(
        id: NodeID(rawValue: id), name: name ?? "name-\(id)", isUp: isUp, labels: labels,
        capacity: ResourceAmount(millicores: millicores, memoryBytes: memory),
        reserved: ResourceAmount(millicores: reservedMillicores, memoryBytes: reservedMemory),
        measured: measured, usedHostPorts: usedHostPorts
    )
}

private func task(
    millicores: Int = 1000, memory: Int = GiB, hostPorts: [Int?] = [], pinnedTo: String? = nil,
    labels: [String: String] = [:]
) -> TaskSpec {
    TaskSpec(
        image: "orch-busybox:latest",
        ports: hostPorts.enumerated().map { PortSpec(containerPort: 8000 + $0.offset, hostPort: $0.element) },
        resources: Resources(millicores: millicores, memoryBytes: memory),
        constraints: PlacementConstraints(node: pinnedTo, labels: labels)
    )
}

private func placed(_ id: String) -> PlacementDecision { .node(NodeID(rawValue: id)) }

/// What the manager does after each placement: the chosen node now reserves the task.
private func reserve(_ spec: TaskSpec, on id: NodeID, in nodes: inout [SchedulingNode]) {
    guard let index = nodes.firstIndex(where: { $0.id == id }) else { return }
    nodes[index].reserved.millicores += spec.resources.millicores
    nodes[index].reserved.memoryBytes += spec.resources.memoryBytes
    nodes[index].usedHostPorts.formUnion(spec.ports.compactMap(\.hostPort))
}

/// Places `spec` again and again, reserving each time, until nothing fits; returns the ids chosen
/// in order and the final refusal. Stops after `limit` placements so that a bug cannot loop forever.
private func placeUntilFull(
    _ spec: TaskSpec, on nodes: inout [SchedulingNode], with scheduler: inout Scheduler, limit: Int = 1_000
) -> (placements: [NodeID], refusal: String?) {
    var placements: [NodeID] = []
    while placements.count < limit {
        switch scheduler.place(spec, on: nodes) {
        case .node(let id):
            placements.append(id)
            reserve(spec, on: id, in: &nodes)
        case .nowhere(let reason):
            return (placements, reason)
        }
    }
    return (placements, nil)
}

private let scoringKinds: [SchedulerKind] = [.epvm, .spread, .binpack]

@Suite struct SchedulerTests {
    // MARK: - Feasibility

    @Test("Equal scores go to the smallest node id, whatever the order and the cursor", arguments: scoringKinds)
    func tiesGoToTheSmallestID(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        let nodes = [node("c"), node("a"), node("b")]
        for _ in 0..<4 {
            #expect(scheduler.place(task(), on: nodes) == placed("a"))
        }
    }

    @Test("A service's replicas spread: nodes that run one already are taken only when nothing else fits", arguments: SchedulerKind.allCases)
    func replicasAvoidNodesThatRunOne(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        // Binpack would pick the fullest (a) and E-PVM and spread the emptiest (c): both avoided.
        let nodes = [node("a", reservedMillicores: 2000), node("b", reservedMillicores: 1000), node("c")]
        let avoid: Set = [NodeID(rawValue: "a"), NodeID(rawValue: "c")]
        for _ in 0..<3 { #expect(scheduler.place(task(), on: nodes, avoiding: avoid) == placed("b")) }
        // Every fitting node runs one: the best of them by score, as without the rule.
        var plain = Scheduler(kind: kind), avoiding = Scheduler(kind: kind)
        let everyNode = Set(nodes.map(\.id))
        #expect(avoiding.place(task(), on: nodes, avoiding: everyNode) == plain.place(task(), on: nodes))
        // The one node that does not run one is full: an avoided node takes it.
        let full = [node("a"), node("b", reservedMillicores: 4000)]
        #expect(scheduler.place(task(), on: full, avoiding: [NodeID(rawValue: "a")]) == placed("a"))
    }

    @Test("A node whose reservations leave too little is skipped", arguments: SchedulerKind.allCases)
    func fullNodesAreSkipped(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        let nodes = [
            node("a", reservedMillicores: 4000),
            node("b", reservedMemory: 8 * GiB),
            node("c", reservedMillicores: 3500, reservedMemory: 7 * GiB),
            node("d", reservedMillicores: 3000, reservedMemory: 7 * GiB),
        ]
        for _ in 0..<3 {
            #expect(scheduler.place(task(), on: nodes) == placed("d"))
        }
    }

    @Test("A node that is down gets nothing", arguments: SchedulerKind.allCases)
    func downNodesAreSkipped(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        let nodes = [node("a", isUp: false), node("b"), node("c", isUp: false)]
        for _ in 0..<3 {
            #expect(scheduler.place(task(), on: nodes) == placed("b"))
        }
    }

    @Test("A fixed host port taken on a node keeps the task off it; a port Docker picks does not", arguments: SchedulerKind.allCases)
    func fixedHostPorts(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        let nodes = [node("a", usedHostPorts: [8080]), node("b", usedHostPorts: [9090])]
        #expect(scheduler.place(task(hostPorts: [8080]), on: nodes) == placed("b"))
        #expect(scheduler.place(task(hostPorts: [nil, 9090]), on: nodes) == placed("a"))
        #expect(!Scheduler.isFeasible(task(hostPorts: [8080, 9090]), on: nodes[0]))
        #expect(!Scheduler.isFeasible(task(hostPorts: [8080, 9090]), on: nodes[1]))
        #expect(Scheduler.isFeasible(task(hostPorts: [nil, 8081]), on: nodes[0]))
    }

    @Test("constraints.node names a node by id or by name; every label must match", arguments: SchedulerKind.allCases)
    func constraints(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        let nodes = [
            node("a", name: "web-1", labels: ["zone": "eu", "disk": "hdd"]),
            node("b", name: "web-2", labels: ["zone": "eu", "disk": "ssd"]),
            node("c", name: "db-1", labels: ["zone": "us", "disk": "ssd"]),
        ]
        #expect(scheduler.place(task(pinnedTo: "web-2"), on: nodes) == placed("b"))
        #expect(scheduler.place(task(pinnedTo: "c"), on: nodes) == placed("c"))
        #expect(scheduler.place(task(labels: ["disk": "ssd", "zone": "us"]), on: nodes) == placed("c"))
        #expect(scheduler.place(task(labels: ["disk": "hdd"]), on: nodes) == placed("a"))
        #expect(scheduler.place(task(pinnedTo: "web-1", labels: ["disk": "hdd"]), on: nodes) == placed("a"))
        #expect(!Scheduler.isFeasible(task(pinnedTo: "web-1", labels: ["disk": "ssd"]), on: nodes[0]))
        #expect(!Scheduler.isFeasible(task(labels: ["rack": "1"]), on: nodes[0]))
    }

    @Test("A node without capacity fits nothing, and nothing traps on it", arguments: SchedulerKind.allCases)
    func zeroCapacity(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        let empty = node("a", millicores: 0, memory: 0)
        let noCPU = node("b", millicores: 0)
        let noMemory = node("c", memory: 0)
        let tiny = task(millicores: 0, memory: 0)
        for candidate in [empty, noCPU, noMemory] {
            #expect(!Scheduler.isFeasible(tiny, on: candidate))
        }
        #expect(scheduler.place(tiny, on: [empty, noCPU, noMemory, node("d")]) == placed("d"))
        #expect(scheduler.place(task(), on: [empty]) == .nowhere(reason: "no node has reported its capacity yet (1 up)"))
    }

    // MARK: - Refusals

    struct RefusalCase: Sendable, CustomTestStringConvertible {
        var nodes: [SchedulingNode]
        var spec: TaskSpec
        var reason: String
        var testDescription: String { reason }
    }

    static let refusals: [RefusalCase] = [
        RefusalCase(nodes: [], spec: task(), reason: "no node has joined the cluster"),
        RefusalCase(nodes: [node("a", isUp: false), node("b", isUp: false)], spec: task(), reason: "no node is up"),
        RefusalCase(nodes: [node("a", name: "web-1")], spec: task(pinnedTo: "web-3"), reason: "no node matches node=web-3"),
        RefusalCase(
            nodes: [node("a", labels: ["zone": "eu"]), node("b", labels: ["disk": "ssd"])],
            spec: task(labels: ["zone": "eu", "disk": "ssd"]), reason: "no node matches disk=ssd, zone=eu"
        ),
        RefusalCase(
            nodes: [node("a", name: "web-3", labels: ["zone": "eu"])],
            spec: task(pinnedTo: "web-3", labels: ["zone": "us"]), reason: "no node matches node=web-3, zone=us"
        ),
        RefusalCase(
            nodes: [node("a", name: "web-3", isUp: false), node("b")],
            spec: task(pinnedTo: "web-3"), reason: "no node that matches node=web-3 is up"
        ),
        RefusalCase(
            nodes: [
                node("a", reservedMillicores: 2500, reservedMemory: 7 * GiB),
                node("b", millicores: 2000, memory: 2 * GiB, reservedMillicores: 1000, reservedMemory: GiB),
                node("c", reservedMillicores: 4000, reservedMemory: 8 * GiB),
            ],
            spec: task(millicores: 4000, memory: 2 * GiB),
            reason: "no node has 4 CPUs and 2 GiB free (3 up; the most free: 1.5 CPUs, 1 GiB)"
        ),
        RefusalCase(
            nodes: [
                node("a", labels: ["zone": "eu"], reservedMillicores: 3750),
                node("b", labels: ["zone": "eu"], reservedMillicores: 3766, reservedMemory: 7 * GiB + 512 << 20),
                node("c", labels: ["zone": "us"]),
            ],
            spec: task(millicores: 1000, memory: GiB, labels: ["zone": "eu"]),
            reason: "no node has 1 CPU and 1 GiB free (2 up and matching; the most free: 0.25 CPUs, 8 GiB)"
        ),
        RefusalCase(
            nodes: [node("a", reservedMillicores: 3000), node("b", reservedMemory: 7 * GiB)],
            spec: task(millicores: 2000, memory: 2 * GiB),
            reason: "no node has 2 CPUs and 2 GiB free together (2 up; some have the CPU free, others the memory)"
        ),
        RefusalCase(
            nodes: [node("a", millicores: 0, memory: 0), node("b", isUp: false)],
            spec: task(), reason: "no node has reported its capacity yet (1 up)"
        ),
        RefusalCase(
            nodes: [
                node("a", usedHostPorts: [8080]),
                node("b", usedHostPorts: [8080, 9090]),
                node("c", reservedMillicores: 4000),
            ],
            spec: task(hostPorts: [9090, 8080]), reason: "host port 8080 is taken on every node that fits otherwise"
        ),
        RefusalCase(
            nodes: [node("a", usedHostPorts: [8080]), node("b", usedHostPorts: [9090])],
            spec: task(hostPorts: [9090, 8080]),
            reason: "no node that fits otherwise has all of host ports 8080, 9090 free"
        ),
    ]

    @Test("No feasible node gives .nowhere with the reason that names the rule", arguments: refusals)
    func refusalReasons(refusal: RefusalCase) {
        for kind in SchedulerKind.allCases {
            var scheduler = Scheduler(kind: kind)
            #expect(scheduler.place(refusal.spec, on: refusal.nodes) == .nowhere(reason: refusal.reason), "\(kind)")
        }
    }

    @Test func cpusArePrintedWithAtMostTwoDecimals() {
        let printed = [0, 4, 5, 10, 100, 1000, 1004, 1234, 1235, 1500, 2050, 4000, Int.max].map { Scheduler.cpus($0) }
        #expect(printed == [
            "0 CPUs", "0 CPUs", "0.01 CPUs", "0.01 CPUs", "0.1 CPUs", "1 CPU", "1 CPU", "1.23 CPUs", "1.24 CPUs",
            "1.5 CPUs", "2.05 CPUs", "4 CPUs", "9223372036854775.81 CPUs",
        ])
        #expect([1004, 1000, 1230].map { Scheduler.cpus($0, decimals: 3) } == ["1.004 CPUs", "1 CPU", "1.23 CPUs"])
    }

    @Test("Amounts that round alike but differ are printed exactly")
    func closeAmountsArePrintedExactly() {
        var scheduler = Scheduler(kind: .epvm)
        let nodes = [node("a", millicores: 1000, reservedMillicores: 0)]
        #expect(scheduler.place(task(millicores: 1004, memory: GiB), on: nodes)
            == .nowhere(reason: "no node has 1.004 CPUs and 1 GiB free (1 up; the most free: 1 CPU, 8 GiB)"))
    }

    // MARK: - Round robin

    @Test func roundRobinCyclesOverThreeNodes() {
        var scheduler = Scheduler(kind: .roundrobin)
        let nodes = [node("n2"), node("n3"), node("n1")]
        let chosen = (0..<7).map { _ in scheduler.place(task(), on: nodes) }
        #expect(chosen == ["n2", "n3", "n1", "n2", "n3", "n1", "n2"].map(placed))
    }

    @Test func roundRobinPassesOverNodesThatDoNotFit() {
        var scheduler = Scheduler(kind: .roundrobin)
        let nodes = [node("a"), node("b", isUp: false), node("c")]
        let chosen = (0..<4).map { _ in scheduler.place(task(), on: nodes) }
        #expect(chosen == ["a", "c", "a", "c"].map(placed))
    }

    // MARK: - Cube's mistakes

    /// Cube's CPU terms were equal before and after, so they cancelled: with equal memory its
    /// E-PVM could not tell an idle node from a busy one and took the first (here "a", the busy one).
    @Test("E-PVM picks the node with less CPU reserved when memory is equal")
    func epvmCountsReservedCPU() {
        var scheduler = Scheduler(kind: .epvm)
        let nodes = [
            node("a", reservedMillicores: 3000, reservedMemory: 2 * GiB),
            node("b", reservedMillicores: 500, reservedMemory: 2 * GiB),
        ]
        #expect(scheduler.place(task(), on: nodes) == placed("b"))
    }

    @Test("E-PVM picks the node with less CPU measured when reservations and memory are equal")
    func epvmCountsMeasuredCPU() {
        var scheduler = Scheduler(kind: .epvm)
        let nodes = [
            node("a", reservedMillicores: 500, reservedMemory: 2 * GiB,
                 measured: ResourceAmount(millicores: 3500, memoryBytes: GiB)),
            node("b", reservedMillicores: 500, reservedMemory: 2 * GiB,
                 measured: ResourceAmount(millicores: 200, memoryBytes: GiB)),
        ]
        #expect(scheduler.place(task(), on: nodes) == placed("b"))
        // A measurement below the reservation does not make a node look emptier than it is reserved.
        let quiet = [
            node("a", reservedMillicores: 3000, measured: ResourceAmount(millicores: 0, memoryBytes: 0)),
            node("b", reservedMillicores: 1000),
        ]
        #expect(scheduler.place(task(), on: quiet) == placed("b"))
    }

    @Test("E-PVM's cost is a^after − a^before per resource, summed")
    func epvmCostFormula() {
        let subject = node(
            "a", millicores: 4000, memory: 8 * GiB, reservedMillicores: 1000, reservedMemory: 4 * GiB,
            measured: ResourceAmount(millicores: 2000, memoryBytes: 2 * GiB)
        )
        let cost = Scheduler.opportunityCost(of: ResourceAmount(millicores: 1000, memoryBytes: 2 * GiB), on: subject)
        // CPU: measured 0.5 -> 0.75 (the measurement beats the reservation); memory: reserved 0.5 -> 0.75.
        // a^0.75 and a^0.5 for a = 1.53960071783900203869, written out.
        let expected = 2 * (1.38215286617077 - 1.2408064788027995)
        #expect(abs(cost - expected) < 1e-12, "cost \(cost)")
    }

    /// Cube never counted what placed tasks reserve, so it would place on a node forever.
    @Test("Reservations add up until every node is full, and then nothing more is placed", arguments: SchedulerKind.allCases)
    func reservationsAddUp(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        var nodes = [
            node("a", millicores: 4000, memory: 8 * GiB),  // 8 by CPU, 8 by memory
            node("b", millicores: 2000, memory: 2 * GiB),  // 4 by CPU, 2 by memory
            node("c", millicores: 1000, memory: 4 * GiB),  // 2 by CPU, 4 by memory
            node("d", isUp: false),
        ]
        let spec = task(millicores: 500, memory: GiB)
        let (placements, refusal) = placeUntilFull(spec, on: &nodes, with: &scheduler)
        #expect(placements.count == 12)
        #expect(placements.filter { $0.rawValue == "a" }.count == 8)
        #expect(placements.filter { $0.rawValue == "b" }.count == 2)
        #expect(placements.filter { $0.rawValue == "c" }.count == 2)
        #expect(refusal == "no node has 0.5 CPUs and 1 GiB free together (3 up; some have the CPU free, others the memory)")
        for node in nodes {
            #expect(node.reserved.millicores <= node.capacity.millicores || !node.isUp)
            #expect(node.reserved.memoryBytes <= node.capacity.memoryBytes || !node.isUp)
        }
    }

    @Test("Memory is bytes throughout: 1 GiB free fits 1 GiB and not one byte more", arguments: SchedulerKind.allCases)
    func memoryIsBytes(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        let nodes = [node("a", memory: 2 * GiB, reservedMemory: GiB)]
        #expect(nodes[0].free.memoryBytes == 1_073_741_824)
        #expect(scheduler.place(task(memory: 1_073_741_824), on: nodes) == placed("a"))
        #expect(scheduler.place(task(memory: 1_073_741_825), on: nodes)
            == .nowhere(reason: "no node has 1 CPU and 1073741825 B free (1 up; the most free: 4 CPUs, 1073741824 B)"))
    }

    // MARK: - Spread and binpack

    @Test("Spread and E-PVM put 4 equal tasks on 4 equal nodes, one each", arguments: [SchedulerKind.spread, .epvm])
    func spreadSpreads(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind)
        var nodes = ["a", "b", "c", "d"].map { node($0) }
        let spec = task()
        var chosen: [NodeID] = []
        for _ in 0..<4 {
            guard case .node(let id) = scheduler.place(spec, on: nodes) else { Issue.record("refused"); return }
            chosen.append(id)
            reserve(spec, on: id, in: &nodes)
        }
        #expect(Set(chosen).count == 4)
    }

    @Test func binpackFillsOneNodeWhileItFits() {
        var scheduler = Scheduler(kind: .binpack)
        var nodes = ["a", "b", "c", "d"].map { node($0) }
        let spec = task()
        var chosen: [String] = []
        for _ in 0..<6 {
            guard case .node(let id) = scheduler.place(spec, on: nodes) else { Issue.record("refused"); return }
            chosen.append(id.rawValue)
            reserve(spec, on: id, in: &nodes)
        }
        #expect(chosen == ["a", "a", "a", "a", "b", "b"])
    }

    @Test func binpackPrefersTheFullerNode() {
        var scheduler = Scheduler(kind: .binpack)
        let nodes = [node("a", reservedMillicores: 1000), node("b", reservedMillicores: 2000, reservedMemory: 6 * GiB)]
        #expect(scheduler.place(task(), on: nodes) == placed("b"))
    }

    // MARK: - Bounded sample

    private static func cluster(_ count: Int, fits: (Int) -> Bool = { _ in true }) -> [SchedulingNode] {
        (0..<count).map { index in
            let id = "n" + String(repeating: "0", count: 4 - String(index).count) + String(index)
            // The later a node in the list, the emptier: a full scan would always pick the last.
            return node(id, isUp: fits(index), reservedMillicores: 3000 - 3 * index)
        }
    }

    @Test("With 1,000 feasible nodes only a window of sampleSize is scored, and the window moves", arguments: [SchedulerKind.spread, .epvm])
    func sampleIsBounded(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind, sampleSize: 32)
        let nodes = Self.cluster(1_000)
        let first = scheduler.place(task(), on: nodes)
        #expect(first == placed("n0031"))
        let second = scheduler.place(task(), on: nodes)
        #expect(second == placed("n0063"))

        var everything = Scheduler(kind: kind, sampleSize: 1_000)
        #expect(everything.place(task(), on: nodes) == placed("n0999"))
    }

    @Test("With 1,000 feasible nodes the choice is feasible", arguments: SchedulerKind.allCases)
    func sampleChoiceIsFeasible(kind: SchedulerKind) throws {
        var scheduler = Scheduler(kind: kind, sampleSize: 32)
        var nodes = Self.cluster(1_000)
        for _ in 0..<100 {
            guard case .node(let id) = scheduler.place(task(), on: nodes) else { Issue.record("refused"); return }
            let chosen = try #require(nodes.first { $0.id == id })
            #expect(Scheduler.isFeasible(task(), on: chosen))
            reserve(task(), on: id, in: &nodes)
        }
    }

    @Test("The one feasible node at the end of 1,000 is found, wherever the cursor stands", arguments: SchedulerKind.allCases)
    func fullPassBeforeNowhere(kind: SchedulerKind) {
        var scheduler = Scheduler(kind: kind, sampleSize: 32)
        let lastOnly = Self.cluster(1_000) { $0 == 999 }
        let firstOnly = Self.cluster(1_000) { $0 == 0 }
        #expect(scheduler.place(task(), on: lastOnly) == placed("n0999"))
        // The cursor now stands past n0999, at the start; move it into the middle.
        for _ in 0..<10 { _ = scheduler.place(task(), on: Self.cluster(1_000)) }
        #expect(scheduler.place(task(), on: firstOnly) == placed("n0000"))
        #expect(scheduler.place(task(), on: lastOnly) == placed("n0999"))
        #expect(scheduler.place(task(), on: Self.cluster(1_000) { _ in false }) == .nowhere(reason: "no node is up"))
    }
}
