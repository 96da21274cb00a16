import OrchCore
import OrchWire
import Testing

@Suite struct DeliveryStateTests {
    let task = TaskID(rawValue: "t1")

    func status(_ state: TaskState) -> TaskStatus {
        TaskStatus(statusID: 0, task: task, attempt: 1, state: state)
    }

    @Test func terminalStatusesAreKeptUntilAcknowledgedAndResentInOrder() {
        var outbox = StatusOutbox()
        let running = outbox.enqueue(status(.running))
        let failed = outbox.enqueue(status(.failed))
        let completed = outbox.enqueue(TaskStatus(statusID: 0, task: TaskID(rawValue: "t2"), attempt: 3, state: .completed))
        #expect([running.statusID, failed.statusID, completed.statusID] == [1, 2, 3])
        #expect(outbox.resend == [failed, completed], "running is superseded by the task list; terminal ones wait")
        outbox.acknowledge(2)
        outbox.acknowledge(2)
        outbox.acknowledge(99)
        #expect(outbox.resend == [completed])
        outbox.acknowledge(3)
        #expect(outbox.resend.isEmpty)
    }

    @Test func aResentAssignmentIsAppliedOnce() {
        var ledger = AssignmentLedger()
        #expect(ledger.assign(task, attempt: 1) == .start(replacing: nil))
        #expect(ledger.assign(task, attempt: 1) == .duplicate)
        #expect(ledger.assign(task, attempt: 2) == .start(replacing: 1))
        #expect(ledger.assign(task, attempt: 1) == .stale(current: 2))
    }

    @Test func aStopForAnAttemptThatIsNotCurrentIsHarmless() {
        var ledger = AssignmentLedger()
        _ = ledger.assign(task, attempt: 2)
        #expect(!ledger.shouldStop(task, attempt: 1))
        #expect(ledger.shouldStop(task, attempt: 2))
        #expect(!ledger.shouldStop(TaskID(rawValue: "other"), attempt: 2))
        ledger.release(task, attempt: 1)
        #expect(ledger.current[task] == 2)
        ledger.release(task, attempt: 2)
        #expect(ledger.current[task] == nil)
        // An assignment of the attempt let go, arriving late, does not start it again.
        #expect(ledger.assign(task, attempt: 2) == .stale(current: 2))
        #expect(ledger.assign(task, attempt: 3) == .start(replacing: nil))
    }
}
