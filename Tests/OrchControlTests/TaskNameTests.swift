import Foundation
import OrchControl
import OrchCore
import Testing

/// A task's name is an identity while the task lives: the same file again is the same task,
/// another spec under a live name is refused, and every route that takes an id takes the
/// name too. Ended tasks are removed on request (purge) or after the retention.
@Suite struct TaskNameTests {
    typealias Harness = ManagerMachineTests.Harness

    static func named(_ name: String, _ seconds: String = "60") -> TaskSpec {
        TaskSpec(name: name, image: "orch-busybox:latest", command: ["sleep", seconds])
    }

    /// Submits and commits; the answer.
    static func submit(_ h: inout Harness, _ spec: TaskSpec) -> ManagerMachine.Answer? {
        let request = h.request()
        h.feed(.submit(request, spec, by: nil))
        if let answer = ManagerMachineTests.answers(h.effects)[request] { return answer }
        return ManagerMachineTests.answers(h.commitAll())[request]
    }

    static func submitted(_ answer: ManagerMachine.Answer?) -> (TaskRecord, Bool)? {
        if case .submitted(let record, let created, _)? = answer { return (record, created) }
        return nil
    }

    /// Runs the task's assignment to its end on `connection`.
    static func end(_ h: inout Harness, _ id: TaskID, on connection: ConnectionID, status: UInt64) {
        guard let record = h.machine.task(id) else { return }
        let container = ContainerID(rawValue: "c-\(id)")
        h.feed(.received(connection, .taskStatus(TaskStatus(statusID: status, task: id, attempt: UInt64(record.attempt), state: .running, container: container))))
        h.feed(.received(connection, .taskStatus(TaskStatus(
            statusID: status + 1, task: id, attempt: UInt64(record.attempt), state: .completed, container: container, exitCode: 0))))
        h.commitAll()
    }

    @Test func theSameFileAgainIsTheSameTaskAndAnotherSpecUnderALiveNameIsRefused() throws {
        var h = Harness()
        _ = h.join("w1", connection: 1)
        h.commitAll()
        let (first, created) = try #require(Self.submitted(Self.submit(&h, Self.named("web"))))
        #expect(created)
        let (again, createdAgain) = try #require(Self.submitted(Self.submit(&h, Self.named("web"))))
        #expect(again.id == first.id && !createdAgain, "the same spec under the same name: the same task")

        let before = h.machine.taskTable.order.count
        let refused = Self.submit(&h, Self.named("web", "120"))
        guard case .refused(.nameTaken(let name, let holder, _))? = refused else {
            Issue.record("expected nameTaken, got \(String(describing: refused))")
            return
        }
        #expect(name == "web" && holder == first.id)
        #expect(ClusterError.nameTaken("web", first.id, .pending).description.contains("orchctl stop web"))
        #expect(h.machine.taskTable.order.count == before, "nothing was added")
        // Another name is another task.
        #expect(Self.submitted(Self.submit(&h, Self.named("api")))?.1 == true)
    }

    @Test func anEndedTasksNameIsFreeAgainAndTheNameFindsTheLiveOneFirst() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.commitAll()
        let (first, _) = try #require(Self.submitted(Self.submit(&h, Self.named("job"))))
        Self.end(&h, first.id, on: c1, status: 1)
        #expect(h.machine.task(first.id)?.state == .completed)
        #expect(try h.machine.resolveTask("job") == first.id, "an ended task is found by its name")

        let (second, created) = try #require(Self.submitted(Self.submit(&h, Self.named("job", "5"))))
        #expect(created && second.id != first.id, "the name of an ended task is free")
        #expect(try h.machine.resolveTask("job") == second.id, "the live task first")
        Self.end(&h, second.id, on: c1, status: 10)
        #expect(try h.machine.resolveTask("job") == second.id, "then the newest ended one")
        #expect(throws: ClusterError.taskNotFound("nope")) { try h.machine.resolveTask("nope") }
    }

    @Test func aShortIdWithoutDashesAndAPrefixFindTheTask() throws {
        var h = Harness()
        _ = h.join("w1", connection: 1)
        h.commitAll()
        let (record, _) = try #require(Self.submitted(Self.submit(&h, Self.named("web"))))
        let plain = record.id.rawValue.replacingOccurrences(of: "-", with: "")
        #expect(try h.machine.resolveTask(String(plain.prefix(12))) == record.id)
        #expect(try h.machine.resolveTask(String(record.id.rawValue.prefix(8))) == record.id)
        #expect(record.id.short == String(plain.prefix(12)), "a short id: 12 hex digits, no dash")
    }

    @Test func purgeRemovesAnEndedTaskWithItsHistoryAndRefusesALiveOne() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.commitAll()
        let (record, _) = try #require(Self.submitted(Self.submit(&h, Self.named("job"))))
        let live = h.request()
        h.feed(.purge(live, record.id, by: nil))
        guard case .refused(.taskNotEnded(let id, _))? = ManagerMachineTests.answers(h.effects)[live] else {
            Issue.record("expected taskNotEnded, got \(h.effects)")
            return
        }
        #expect(id == record.id && h.machine.task(record.id) != nil, "a live task is kept")

        Self.end(&h, record.id, on: c1, status: 1)
        let purge = h.request()
        h.feed(.purge(purge, record.id, by: nil))
        #expect(ManagerMachineTests.answers(h.effects)[purge] == nil, "answered once the removal is durable")
        let committed = h.commitAll()
        guard case .purged(let purged, _)? = ManagerMachineTests.answers(committed)[purge] else {
            Issue.record("expected purged, got \(committed)")
            return
        }
        #expect(purged == record.id)
        #expect(h.machine.task(record.id) == nil && !h.machine.taskTable.order.contains(record.id))
        #expect(h.store.contains { $0.changes.contains(.deleteTask(record.id)) }, "the store deletes it, history and all")
        #expect(throws: ClusterError.taskNotFound("job")) { try h.machine.resolveTask("job") }
    }

    /// `orch-sim run --operators`, seed 38: a task removed and submitted again under its id
    /// started its attempts at 1 again, below the attempt its worker had held: the worker
    /// refused the new one as stale, and the task stayed scheduled for good. Attempts (the
    /// fencing numbers) go on above the old ones; users still see the new task's first
    /// attempt as attempt 1. A manager started from a store with a past, which cannot know
    /// what was removed before it, goes on from its revision.
    @Test func anIdGivenAgainAfterARemovalGoesOnAboveItsOldAttempts() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.commitAll()
        let id = TaskID(rawValue: "again")
        var spec = TaskSpec(id: id, image: "orch-busybox:latest", command: ["sleep", "1"], restartPolicy: RestartPolicy(mode: .always))
        h.feed(.submit(h.request(), spec))
        h.commitAll()
        for status in stride(from: UInt64(10), to: 40, by: 10) {   // three attempts: two restarts
            Self.end(&h, id, on: c1, status: status)
            h.advance(.seconds(3))
            h.feed(.received(c1, .heartbeat(Heartbeat(sequence: status, metrics: MachineMetrics()))))
            h.feed(.timer)
            h.commitAll()
        }
        h.feed(.stop(h.request(), id))
        h.commitAll()
        Self.end(&h, id, on: c1, status: 50)
        let old = try #require(h.machine.task(id))
        #expect(old.attempt >= 3 && old.state.isTerminal, "\(old.attempt) \(old.state)")
        h.feed(.purge(h.request(), id, by: nil))
        h.commitAll()

        spec.command = ["sleep", "2"]
        h.feed(.submit(h.request(), spec))
        let assign = try #require(ManagerMachineTests.assignment(h.commitAll(), on: c1))
        #expect(Int(assign.attempt) == old.attempt + 1, "above the old attempts: \(assign.attempt) after \(old.attempt)")
        let record = try #require(h.machine.task(id))
        #expect(TaskDTO(record, nodeName: nil).attempt == 1, "its own first attempt, as users see it")

        // A manager that starts from the store knows of no removal before it.
        var restarted = Harness(snapshot: h.snapshot)
        _ = restarted.join("w1", connection: 1)
        restarted.commitAll()
        let fresh = TaskID(rawValue: "given")
        restarted.feed(.submit(restarted.request(), TaskSpec(id: fresh, image: "orch-busybox:latest", command: ["sleep", "1"])))
        let first = try #require(ManagerMachineTests.assignment(restarted.commitAll(), on: c1))
        #expect(first.attempt > UInt64(old.attempt), "above every attempt the store's past could hold: \(first.attempt)")
        #expect(TaskDTO(try #require(restarted.machine.task(fresh)), nodeName: nil).attempt == 1)
    }

    @Test func endedTasksAreCollectedAfterTheRetentionAndBeyondTheCount() throws {
        var configuration = ManagerMachine.Configuration(scheduler: .spread)
        configuration.retention = .seconds(3600)
        configuration.retainedEndedTasks = 2
        var h = Harness(configuration: configuration)
        let c1 = h.join("w1", connection: 1)
        h.commitAll()
        var ended: [TaskID] = []
        for index in 0..<4 {
            let (record, _) = try #require(Self.submitted(Self.submit(&h, Self.named("job-\(index)"))))
            Self.end(&h, record.id, on: c1, status: UInt64(10 * index + 1))
            ended.append(record.id)
            h.advance(.seconds(1))
        }
        // The worker leaves: a task submitted now waits for a node, live however long it waits.
        h.feed(.disconnected(c1))
        h.commitAll()
        let (live, _) = try #require(Self.submitted(Self.submit(&h, Self.named("live"))))
        h.advance(.seconds(60))
        h.feed(.timer)
        h.commitAll()
        #expect(h.machine.task(ended[0]) == nil && h.machine.task(ended[1]) == nil, "beyond the count: the oldest ended go")
        #expect(h.machine.task(ended[2]) != nil && h.machine.task(ended[3]) != nil)
        #expect(h.machine.task(live.id)?.state == .pending, "a live task is never collected")

        h.advance(.seconds(3600))
        h.feed(.timer)
        h.commitAll()
        #expect(h.machine.task(ended[2]) == nil && h.machine.task(ended[3]) == nil, "past the retention")
        #expect(h.machine.task(live.id) != nil)
        #expect(h.store.contains { $0.changes.contains(.deleteTask(ended[3])) })
    }

    @Test func theHistoryNamesTheNodeItWasPlacedOnWithItsId() throws {
        var h = Harness()
        _ = h.join("w1", connection: 1)
        h.commitAll()
        let (record, _) = try #require(Self.submitted(Self.submit(&h, Self.named("job"))))
        let messages = h.store.flatMap(\.changes).compactMap { change -> String? in
            if case .appendHistory(let entry) = change, entry.task == record.id { return entry.message }
            return nil
        }
        #expect(messages.contains("placed on w1 (w1)"), "\(messages)")
    }
}
