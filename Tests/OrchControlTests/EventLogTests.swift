import Foundation
import OrchControl
import OrchCore
import Testing

/// The events stream of the control core: a task's change shows once it is durable and never
/// before one made earlier; node changes show at once; the oldest go beyond the capacity and
/// a reader asking from before them, or from a manager run before this one, is told of a gap.
@Suite struct EventLogTests {
    typealias Harness = ManagerMachineTests.Harness

    @Test func aTaskChangeShowsOnceDurableWithTheNodeByName() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.commitAll()
        let joined = h.machine.events(after: 0, limit: 100)
        #expect(joined.events.map(\.kind) == [.node] && joined.events[0].nodeName == "w1" && joined.events[0].message.contains("joined"), "\(joined)")

        let request = h.request()
        h.feed(.submit(request, TaskNameTests.named("web"), by: "admin"))
        let before = h.machine.events(after: joined.last, limit: 100)
        #expect(before.events.isEmpty && before.last == joined.last, "not durable yet: nothing shows, \(before)")
        // A node's change meanwhile waits behind it: a reader never skips the earlier one.
        h.feed(.received(c1, .goodbye(Goodbye(reason: .restarting, message: "upgrade"))))
        #expect(h.machine.events(after: joined.last, limit: 100).events.isEmpty)

        h.commitAll()
        let after = h.machine.events(after: joined.last, limit: 100)
        let messages = after.events.map(\.message)
        #expect(messages.first == "accepted from token admin", "\(messages)")
        #expect(after.events.first?.name == "web" && after.events.first?.state == "pending")
        #expect(after.events.contains { $0.kind == .node && $0.state == "restarting" }, "\(messages)")
        #expect(after.events.map(\.id) == after.events.map(\.id).sorted() && Set(after.events.map(\.id)).count == after.events.count)
        #expect(after.last == after.events.last?.id && h.machine.lastEvent == after.last)

        // One task's events only; the same page again from its end is empty.
        let id = try #require(after.events.first?.task)
        #expect(h.machine.events(after: 0, limit: 100, task: id).events.allSatisfy { $0.task == id })
        #expect(h.machine.events(after: 0, limit: 100, node: NodeID(rawValue: "w1")).events.allSatisfy { $0.node?.rawValue == "w1" })
        #expect(h.machine.events(after: after.last, limit: 100).events.isEmpty)
    }

    @Test func placedAndStartedNameTheNode() throws {
        var h = Harness()
        _ = h.join("w1", connection: 1)
        h.commitAll()
        _ = try #require(TaskNameTests.submitted(TaskNameTests.submit(&h, TaskNameTests.named("web"))))
        h.commitAll()
        let placed = try #require(h.machine.events(after: 0, limit: 100).events.first { $0.state == "scheduled" })
        #expect(placed.nodeName == "w1" && placed.message.hasPrefix("placed on w1 ("), "\(placed)")
    }

    static func event(_ message: String) -> ClusterEventDTO {
        ClusterEventDTO(id: 0, at: Date(timeIntervalSince1970: 0), kind: .node, state: "up", message: message)
    }

    @Test func theOldestGoBeyondTheCapacityAndAGapIsSaid() {
        var log = EventLog(capacity: 4)
        for index in 1...12 { log.append(Self.event("e\(index)"), revision: 0) }
        let all = log.page(after: 0, limit: 100, committed: 0)
        #expect(all.events.count >= 4 && all.events.count <= 5, "\(all.events.map(\.message))")
        #expect(all.events.last?.message == "e12" && all.last == 12)
        #expect(all.gap, "e1 is gone: asking from the start is told")
        let recent = log.page(after: 10, limit: 100, committed: 0)
        #expect(recent.events.map(\.message) == ["e11", "e12"] && !recent.gap)
        // An id this run never gave (the manager restarted): from the oldest kept, with a gap.
        let restarted = log.page(after: 500, limit: 100, committed: 0)
        #expect(restarted.gap && restarted.events.first?.message == all.events.first?.message)
        // A limit cuts the page; `last` is where to go on.
        let two = log.page(after: 10, limit: 1, committed: 0)
        #expect(two.events.map(\.message) == ["e11"] && two.last == 11)
    }

    @Test func anEventNotYetDurableHoldsBackThoseAfterIt() {
        var log = EventLog()
        log.append(Self.event("a"), revision: 0)
        log.append(Self.event("b"), revision: 5)
        log.append(Self.event("c"), revision: 0)
        #expect(log.page(after: 0, limit: 10, committed: 4).events.map(\.message) == ["a"])
        #expect(log.lastVisible(committed: 4) == 1)
        #expect(log.page(after: 0, limit: 10, committed: 5).events.map(\.message) == ["a", "b", "c"])
    }
}
