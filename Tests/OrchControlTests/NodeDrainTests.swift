import Foundation
import OrchControl
import OrchCore
import Testing

/// A drained node takes nothing new; `move` stops its tasks there and places them elsewhere;
/// undrained, it takes tasks again; the state is durable.
@Suite struct NodeDrainTests {
    typealias Harness = ManagerMachineTests.Harness

    static func drain(_ h: inout Harness, _ node: String, drain: Bool = true, move: Bool = false) -> ManagerMachine.Answer? {
        let request = h.request()
        let effects = h.feed(.drainNode(request, NodeID(rawValue: node), drain: drain, move: move)) + h.commitAll()
        return ManagerMachineTests.answers(effects)[request]
    }

    static func drainEffects(_ h: inout Harness, _ node: String, move: Bool) -> (ManagerMachine.Answer?, [ManagerMachine.Effect]) {
        let request = h.request()
        let effects = h.feed(.drainNode(request, NodeID(rawValue: node), drain: true, move: move)) + h.commitAll()
        return (ManagerMachineTests.answers(effects)[request], effects)
    }

    @Test func aDrainedNodeTakesNothingNewAndMoveSendsItsTasksElsewhere() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        let c2 = h.join("w2", connection: 2)
        h.commitAll()
        // w2 drained: a task goes to w1.
        guard case .nodeDrained? = Self.drain(&h, "w2") else { Issue.record("w2 not drained"); return }
        let first = try #require(TaskNameTests.submitted(TaskNameTests.submit(&h, TaskNameTests.named("one")))).0
        #expect(h.machine.task(first.id)?.node == NodeID(rawValue: "w1"), "the drained w2 got nothing")
        #expect(h.machine.listNodes().first { $0.name == "w2" }?.drained == true)
        #expect(h.store.contains { $0.changes.contains { if case .saveNode(let node) = $0 { node.id.rawValue == "w2" && node.drainedAt != nil } else { false } } },
                "the drain is durable")

        // Everything drained: a new task waits, saying why.
        _ = Self.drain(&h, "w1")
        let waiting = try #require(TaskNameTests.submitted(TaskNameTests.submit(&h, TaskNameTests.named("two")))).0
        let pending = try #require(h.machine.task(waiting.id))
        #expect(pending.state == .pending && (pending.error ?? "").contains("drained"), "\(String(describing: pending.error))")
        #expect(h.machine.task(first.id)?.node == NodeID(rawValue: "w1"), "a drain without move keeps what runs there")

        // w2 undrained: the waiting task goes there; w1 drained with move: its task follows.
        _ = Self.drain(&h, "w2", drain: false)
        #expect(h.machine.task(waiting.id)?.node == NodeID(rawValue: "w2"))
        let attempt = try #require(h.machine.task(first.id)?.attempt)
        let (answer, effects) = Self.drainEffects(&h, "w1", move: true)
        guard case .nodeDrained? = answer else { Issue.record("w1 not drained with move"); return }
        let stops = ManagerMachineTests.sent(effects, on: c1).filter { if case .stopTask(let stop) = $0 { stop.task == first.id } else { false } }
        #expect(!stops.isEmpty, "the old attempt is stopped on w1")
        let moved = try #require(h.machine.task(first.id))
        #expect(moved.node == NodeID(rawValue: "w2") && moved.attempt > attempt, "moved: \(moved.state) on \(String(describing: moved.node))")
        _ = c2

        guard case .refused(.nodeNotFound)? = Self.drain(&h, "nope") else { Issue.record("an unknown node is refused"); return }
    }
}
