/// Why a task fits nowhere, in one sentence for people.
///
/// The rules of ``Scheduler/isFeasible(_:on:)`` are applied one after the other, in the order
/// a person would check them (is anything up, does anything match, is there room, are the
/// ports free), and the first rule that leaves no node is the one reported, with numbers.
extension Scheduler {
    static func reasonNothingFits(_ spec: TaskSpec, among nodes: [SchedulingNode]) -> String {
        let live = nodes.filter(\.isUp)
        if live.isEmpty { return nodes.isEmpty ? "no node has joined the cluster" : "no node is up" }
        let answering = live.filter { $0.engineError == nil }
        if answering.isEmpty, let down = live.first(where: { $0.engineError != nil }) {
            return live.count == 1
                ? "the container engine of node \(down.name) does not answer"
                : "the container engine of every node that is up does not answer (\(down.name): \(down.engineError ?? ""))"
        }
        let up = answering.filter { !$0.drained }
        if up.isEmpty {
            let names = answering.map(\.name).sorted().joined(separator: ", ")
            return "every node that is up is drained (\(names)): orchctl node undrain NAME"
        }

        let constraints = spec.constraints
        let matching = up.filter { $0.matches(constraints) }
        if matching.isEmpty {
            let text = describe(constraints)
            return nodes.contains { $0.matches(constraints) }
                ? "no node that matches \(text) is up"
                : "no node matches \(text)"
        }

        let demand = ResourceAmount(spec.resources)
        let roomy = matching.filter { $0.hasRoom(for: demand) }
        if roomy.isEmpty { return reasonNoRoom(for: demand, among: matching, constrained: !constraints.isEmpty) }

        // Every node left has some of the task's fixed host ports taken. One port taken
        // everywhere says the most; otherwise each node lacks a different one.
        let wanted = Set(spec.ports.compactMap(\.hostPort)).sorted()
        if let port = wanted.first(where: { port in roomy.allSatisfy { $0.usedHostPorts.contains(port) } }) {
            return "host port \(port) is taken on every node that fits otherwise"
        }
        let list = wanted.map(String.init).joined(separator: ", ")
        return "no node that fits otherwise has all of host ports \(list) free"
    }

    private static func reasonNoRoom(
        for demand: ResourceAmount, among nodes: [SchedulingNode], constrained: Bool
    ) -> String {
        let counted = "\(nodes.count) up\(constrained ? " and matching" : "")"
        let reporting = nodes.filter { $0.capacity.millicores > 0 && $0.capacity.memoryBytes > 0 }
        if reporting.isEmpty { return "no node has reported its capacity yet (\(counted))" }

        let mostCPU = reporting.map(\.free.millicores).max() ?? 0
        let mostMemory = reporting.map(\.free.memoryBytes).max() ?? 0
        let (wantedCPU, freeCPU) = distinct(demand.millicores, mostCPU, rounded: { cpus($0) }, exact: { cpus($0, decimals: 3) })
        let (wantedMemory, freeMemory) = distinct(
            demand.memoryBytes, mostMemory, rounded: ByteCount.format, exact: { "\($0) B" }
        )
        if mostCPU >= demand.millicores, mostMemory >= demand.memoryBytes {
            return "no node has \(wantedCPU) and \(wantedMemory) free together"
                + " (\(counted); some have the CPU free, others the memory)"
        }
        return "no node has \(wantedCPU) and \(wantedMemory) free (\(counted); the most free: \(freeCPU), \(freeMemory))"
    }

    /// Both amounts printed for people, or exactly when rounding would make two different
    /// amounts read the same ("no node has 1 GiB free; the most free: 1 GiB").
    private static func distinct(
        _ first: Int, _ second: Int, rounded: (Int) -> String, exact: (Int) -> String
    ) -> (String, String) {
        let (roundedFirst, roundedSecond) = (rounded(first), rounded(second))
        if first != second, roundedFirst == roundedSecond { return (exact(first), exact(second)) }
        return (roundedFirst, roundedSecond)
    }

    /// `node=web-3, disk=ssd, zone=a`: the pinned node, then the labels sorted by name.
    private static func describe(_ constraints: PlacementConstraints) -> String {
        let node = constraints.node.map { ["node=\($0)"] } ?? []
        let labels = constraints.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return (node + labels).joined(separator: ", ")
    }

    /// Millicores as CPUs with at most `decimals` decimals (0 to 3): with 2, 4000 is "4 CPUs",
    /// 1500 "1.5 CPUs", 1234 "1.23 CPUs" and 1000 "1 CPU".
    static func cpus(_ millicores: Int, decimals: Int = 2) -> String {
        let decimals = min(3, max(0, decimals))
        let step = [1000, 100, 10, 1][decimals]
        let millicores = max(0, millicores)
        // Rounded to a multiple of `step` without overflowing near Int.max.
        let steps = millicores / step + (millicores % step * 2 >= step ? 1 : 0)
        let perCPU = 1000 / step
        var number = String(steps / perCPU)
        if decimals > 0, steps % perCPU != 0 {
            var digits = String(steps % perCPU)
            digits = String(repeating: "0", count: decimals - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            number += "." + digits
        }
        return number == "1" ? "1 CPU" : "\(number) CPUs"
    }
}
