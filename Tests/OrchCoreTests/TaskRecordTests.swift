import Foundation
import OrchCore
import Testing

@Suite struct TaskRecordTests {
    let node = NodeID(rawValue: "node-1")
    let container = ContainerID(rawValue: "c0ffee0000000000")
    let now = Date(timeIntervalSince1970: 1_700_000_000)

    func running(spec: TaskSpec = TaskSpec(image: "i")) throws -> TaskRecord {
        var record = TaskRecord(id: TaskID(rawValue: "t1"), spec: spec, now: now)
        try record.apply(.placed(on: node), at: now)
        try record.apply(.started(container: container, hostPorts: []), at: now)
        return record
    }

    @Test func aNewTaskIsPendingWithNoAttempt() {
        let record = TaskRecord(id: TaskID(rawValue: "t1"), spec: TaskSpec(image: "i"), now: now)
        #expect(record.state == .pending && record.desiredState == .run && record.attempt == 0)
        #expect(record.spec.id == TaskID(rawValue: "t1"))
    }

    @Test func everyPlacementIsANewAttempt() throws {
        var record = try running()
        #expect(record.attempt == 1)
        try record.apply(.exited(code: 1), at: now)
        try record.apply(.requeued(reason: "restart"), at: now)
        try record.apply(.placed(on: node), at: now)
        #expect(record.attempt == 2)
        #expect(record.restartCount == 1)
        #expect(record.containerID == nil && record.exitCode == nil)
    }

    /// Where `logs --previous` reads: the newest attempt that ended on its node, kept through
    /// the requeue and the next placement, replaced when that one ends; a lost attempt or a
    /// pending task stopped is none.
    @Test func theLastEndedAttemptIsRememberedAcrossRestarts() throws {
        var record = try running()
        #expect(record.lastEnded == nil, "nothing ended yet")
        try record.apply(.exited(code: 3), at: now)
        #expect(record.lastEnded == TaskRecord.EndedAttempt(node: node, attempt: 1))
        try record.apply(.requeued(reason: "restart"), at: now)
        let other = NodeID(rawValue: "node-2")
        try record.apply(.placed(on: other), at: now)
        #expect(record.lastEnded == TaskRecord.EndedAttempt(node: node, attempt: 1), "the new attempt has not ended")
        try record.apply(.started(container: container, hostPorts: []), at: now)
        try record.apply(.healthFailed(reason: "GET / answered 500"), at: now)
        #expect(record.lastEnded == TaskRecord.EndedAttempt(node: other, attempt: 2))
        try record.apply(.requeued(reason: "restart"), at: now)
        try record.apply(.placed(on: node), at: now)
        try record.apply(.startFailed(reason: "no such image"), at: now)
        #expect(record.lastEnded == TaskRecord.EndedAttempt(node: node, attempt: 3))
        try record.apply(.requeued(reason: "restart"), at: now)
        try record.apply(.placed(on: other), at: now)
        try record.apply(.started(container: container, hostPorts: []), at: now)
        try record.apply(.nodeLost, at: now)
        #expect(record.lastEnded?.attempt == 3, "a lost attempt did not end on its node")

        let decoded = try JSONDecoder().decode(TaskRecord.self, from: JSONEncoder().encode(record))
        #expect(decoded.lastEnded == record.lastEnded, "it is stored with the record")
        var old = try JSONSerialization.jsonObject(with: JSONEncoder().encode(record)) as? [String: Any] ?? [:]
        old["lastEnded"] = nil
        #expect(try JSONDecoder().decode(TaskRecord.self, from: JSONSerialization.data(withJSONObject: old)).lastEnded == nil,
                "a row written before it existed still decodes")
    }

    @Test("The exit code decides the end", arguments: [(0, TaskState.completed), (1, .failed), (137, .failed)])
    func exitCodeDecidesTheEnd(code: Int, expected: TaskState) throws {
        var record = try running()
        try record.apply(.exited(code: code), at: now)
        #expect(record.state == expected)
        #expect(record.exitCode == code)
    }

    @Test("A stop asked by a user ends completed whatever the exit code", arguments: [0, 1, 137, 143])
    func userStopEndsCompleted(code: Int) throws {
        var record = try running()
        try record.apply(.stopRequested, at: now)
        #expect(record.state == .stopping)
        try record.apply(.exited(code: code), at: now)
        #expect(record.state == .completed)
        #expect(record.desiredState == .stop)
    }

    @Test func aStoppedTaskIsNeverRequeued() throws {
        var record = try running()
        try record.apply(.stopRequested, at: now)
        try record.apply(.exited(code: 0), at: now)
        let before = record
        #expect(throws: TaskTransitionError.self) { try record.apply(.requeued(reason: "always"), at: now) }
        #expect(record == before)
    }

    @Test func stoppingAPendingTaskCompletesIt() throws {
        var record = TaskRecord(id: TaskID(rawValue: "t1"), spec: TaskSpec(image: "i"), now: now)
        try record.apply(.stopRequested, at: now)
        #expect(record.state == .completed)
    }

    @Test func stoppingAnEndedTaskChangesNothingButTheWish() throws {
        var record = try running()
        try record.apply(.exited(code: 2), at: now)
        try record.apply(.stopRequested, at: now)
        #expect(record.state == .failed)
    }

    @Test func anIllegalEventIsRefusedAndChangesNothing() throws {
        var record = TaskRecord(id: TaskID(rawValue: "t1"), spec: TaskSpec(image: "i"), now: now)
        let before = record
        #expect(throws: TaskTransitionError(task: record.id, from: .pending, event: .started(container: container, hostPorts: []))) {
            try record.apply(.started(container: container, hostPorts: []), at: now.addingTimeInterval(5))
        }
        #expect(record == before)
    }

    @Test func aLostTaskMayComeBackRunningOrBePlacedAgain() throws {
        var record = try running()
        try record.apply(.nodeLost, at: now)
        #expect(record.state == .lost)
        var recovered = record
        try recovered.apply(.started(container: container, hostPorts: []), at: now)
        #expect(recovered.state == .running)
        try record.apply(.requeued(reason: "node lost"), at: now)
        #expect(record.state == .pending && record.node == nil)
    }

    @Test func healthChangesOnlyForARunningTaskWithACheck() throws {
        let spec = TaskSpec(image: "i", ports: [PortSpec(containerPort: 80)], healthCheck: HealthCheck(path: "/", port: 80))
        var record = try running(spec: spec)
        #expect(record.health == .starting)
        try record.apply(.healthChanged(.unhealthy), at: now)
        #expect(record.health == .unhealthy && record.state == .running)
        var unchecked = try running()
        #expect(throws: TaskTransitionError.self) { try unchecked.apply(.healthChanged(.healthy), at: now) }
    }
}
