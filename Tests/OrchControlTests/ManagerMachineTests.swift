import Foundation
import OrchControl
import OrchCore
import Testing

/// The manager's machine driven input by input, with the time given: no sockets, no store,
/// no sleeps. Each test names the rule it holds the machine to.
@Suite struct ManagerMachineTests {
    /// A machine and the effects it returned last, with a clock the test moves.
    struct Harness {
        var machine: ManagerMachine
        var now = Moment.zero
        var effects: [ManagerMachine.Effect] = []
        var nextRequest: UInt64 = 1
        /// Batches handed out and not yet committed, in order.
        var uncommitted: [StoreBatch] = []
        /// Every batch committed, in order: what a store would hold.
        var store: [StoreBatch] = []

        init(snapshot: StoreSnapshot = StoreSnapshot(tasks: [], nodes: []), configuration: ManagerMachine.Configuration = .init(scheduler: .spread)) {
            machine = ManagerMachine(configuration: configuration, snapshot: snapshot, now: .zero, wallOrigin: Date(timeIntervalSince1970: 1_800_000_000), seed: 7)
        }

        @discardableResult
        mutating func feed(_ input: ManagerMachine.Input) -> [ManagerMachine.Effect] {
            effects = machine.handle(input, now: now)
            for case .persist(let batch) in effects { uncommitted.append(batch) }
            return effects
        }

        mutating func advance(_ duration: Duration) { now = now + duration }

        mutating func request() -> RequestID {
            defer { nextRequest += 1 }
            return RequestID(rawValue: nextRequest)
        }

        /// Commits every batch handed out.
        @discardableResult
        mutating func commitAll() -> [ManagerMachine.Effect] {
            guard let last = uncommitted.last else { return feed(.committed(through: machine.revision)) }
            store += uncommitted
            uncommitted = []
            return feed(.committed(through: last.sequence))
        }

        /// Connects a worker and says hello for it; returns its connection.
        mutating func join(_ name: String, connection: UInt64, millicores: UInt32 = 2000, labels: [String: String] = [:]) -> ConnectionID {
            let id = ConnectionID(rawValue: connection)
            feed(.connected(id))
            feed(.authenticated(id, NodeID(rawValue: name)))
            feed(.received(id, .hello(Hello(
                nodeID: NodeID(rawValue: name), name: name, addresses: ["127.0.0.1:0"],
                capacity: Capacity(millicores: millicores, memoryBytes: 4 << 30, diskBytes: 0), labels: labels))))
            return id
        }

        /// What a store holding the committed batches would load.
        var snapshot: StoreSnapshot {
            var tasks: [TaskID: TaskRecord] = [:]
            var order: [TaskID] = []
            var nodes: [NodeID: NodeRecord] = [:]
            var removed: Set<NodeID> = []
            var services: [String: ServiceRecord] = [:]
            for batch in store {
                for change in batch.changes {
                    switch change {
                    case .insertTask(let record):
                        if tasks[record.id] == nil { order.append(record.id) }
                        tasks[record.id] = record
                    case .saveTask(let record): if tasks[record.id] != nil { tasks[record.id] = record }
                    case .appendHistory: break
                    case .saveNode(let node): nodes[node.id] = node
                    case .deleteNode(let id): nodes[id] = nil; removed.insert(id)
                    case .deleteTask(let id): tasks[id] = nil; order.removeAll { $0 == id }
                    case .saveService(let record): services[record.name] = record
                    case .deleteService(let name): services[name] = nil
                    }
                }
            }
            return StoreSnapshot(
                tasks: order.compactMap { tasks[$0] }, nodes: nodes.values.sorted { $0.id < $1.id }, revision: store.last?.sequence ?? 0,
                removedNodes: removed, services: services.values.sorted { $0.name < $1.name })
        }
    }

    static func spec(_ id: String, image: String = "orch-busybox:latest", policy: RestartPolicy = .never, disconnect: DisconnectPolicy? = nil) -> TaskSpec {
        TaskSpec(id: TaskID(rawValue: id), image: image, command: ["sleep", "60"], restartPolicy: policy, disconnect: disconnect)
    }

    static func answers(_ effects: [ManagerMachine.Effect]) -> [RequestID: ManagerMachine.Answer] {
        var result: [RequestID: ManagerMachine.Answer] = [:]
        for case .answer(let request, let answer) in effects { result[request] = answer }
        return result
    }

    static func sent(_ effects: [ManagerMachine.Effect], on connection: ConnectionID) -> [WireMessage] {
        effects.compactMap { effect in
            if case .send(connection, let message) = effect { return message }
            return nil
        }
    }

    static func assignment(_ effects: [ManagerMachine.Effect], on connection: ConnectionID) -> AssignTask? {
        for case .assignTask(let assign) in sent(effects, on: connection) { return assign }
        return nil
    }

    // MARK: - Epochs

    @Test func theWelcomeEveryAssignmentAndEveryStopCarryTheLeadersEpoch() throws {
        var configuration = ManagerMachine.Configuration(scheduler: .spread)
        configuration.epoch = 12
        var h = Harness(configuration: configuration)
        let c1 = h.join("w1", connection: 1)
        guard case .welcome(let welcome)? = Self.sent(h.effects, on: c1).first else {
            Issue.record("no welcome: \(h.effects)")
            return
        }
        #expect(welcome.epoch == 12)
        h.commitAll()
        let submit = h.request()
        h.feed(.submit(submit, Self.spec("t1")))
        let assign = try #require(Self.assignment(h.commitAll(), on: c1))
        #expect(assign.epoch == 12)
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: assign.task, attempt: assign.attempt, state: .running, container: ContainerID(rawValue: "c")))))
        h.commitAll()
        h.feed(.stop(h.request(), assign.task))
        let stops = (h.effects + h.commitAll()).compactMap { effect -> StopTask? in
            if case .send(c1, .stopTask(let stop)) = effect { return stop }
            return nil
        }
        #expect(!stops.isEmpty && stops.allSatisfy { $0.epoch == 12 }, "\(stops)")
    }

    // MARK: - Acknowledgements

    @Test func aResentTerminalStatusIsAcknowledgedAgainAndTheConnectionStillServed() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.commitAll()
        let submit = h.request()
        h.feed(.submit(submit, Self.spec("t1")))
        #expect(Self.assignment(h.effects, on: c1) == nil, "an assignment leaves only once its placement is durable")
        let assign = try #require(Self.assignment(h.commitAll(), on: c1))
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: assign.task, attempt: assign.attempt, state: .running, container: ContainerID(rawValue: "c")))))
        let exited = TaskStatus(statusID: 2, task: assign.task, attempt: assign.attempt, state: .completed, container: ContainerID(rawValue: "c"), exitCode: 0)
        h.feed(.received(c1, .taskStatus(exited)))
        #expect(!Self.sent(h.effects, on: c1).contains(.ack(Ack(statusID: 2))), "a terminal status is acknowledged only once durable")
        let committed = h.commitAll()
        #expect(Self.sent(committed, on: c1).contains(.ack(Ack(statusID: 2))))
        #expect(h.machine.task(assign.task)?.state == .completed)

        // The ack was lost: the worker sends it again (same id) after a reconnect.
        h.feed(.received(c1, .taskStatus(exited)))
        #expect(Self.sent(h.effects, on: c1).contains(.ack(Ack(statusID: 2))), "acknowledged again, at once: nothing new to store")
        // And the connection is still served: heartbeats are applied and answered.
        h.advance(.seconds(3))
        h.feed(.received(c1, .heartbeat(Heartbeat(sequence: 9, metrics: MachineMetrics()))))
        #expect(Self.sent(h.effects, on: c1).contains(.heartbeat(Heartbeat(sequence: 9, metrics: .none))))
        h.advance(.seconds(3))
        h.feed(.timer)
        #expect(h.machine.isConnected(NodeID(rawValue: "w1")), "heard 3 s ago: not down after 6 s")
    }

    @Test func aStatusForAnAttemptThatIsNotCurrentStopsItAndIsAcknowledged() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 5, task: TaskID(rawValue: "ghost"), attempt: 3, state: .running))))
        let sent = Self.sent(h.effects, on: c1)
        #expect(sent.contains(.stopTask(StopTask(task: TaskID(rawValue: "ghost"), attempt: 3))))
        h.commitAll()
        #expect(Self.sent(h.effects, on: c1).contains(.ack(Ack(statusID: 5))) || sent.contains(.ack(Ack(statusID: 5))))
    }

    // MARK: - The commit path

    @Test func aSubmissionIsAnsweredOnlyOnceDurable() {
        var h = Harness()
        let request = h.request()
        h.feed(.submit(request, Self.spec("t1")))
        #expect(Self.answers(h.effects).isEmpty, "not before its commit")
        let answers = Self.answers(h.commitAll())
        guard case .submitted(let record, true, let revision)? = answers[request] else {
            Issue.record("expected created, got \(answers)")
            return
        }
        #expect(record.id == TaskID(rawValue: "t1"))
        #expect(revision == 1 && record.revision == 1, "the first change is revision 1")
    }

    @Test func aFailedCommitIsRetriedAndMeanwhileAnswered503() throws {
        var h = Harness()
        let first = h.request()
        h.feed(.submit(first, Self.spec("t1")))
        let batch = try #require(h.uncommitted.last)
        // The store refuses: the waiting submission is told so, and new ones are refused.
        let failed = h.feed(.commitFailed(through: batch.sequence, reason: "disk I/O error"))
        guard case .refused(.unavailable(let reason))? = Self.answers(failed)[first] else {
            Issue.record("expected 503 for the waiting submission, got \(Self.answers(failed))")
            return
        }
        #expect(reason == "disk I/O error")
        #expect(h.machine.storeProblem == "disk I/O error")
        let second = h.request()
        h.feed(.submit(second, Self.spec("t2")))
        guard case .refused(.unavailable)? = Self.answers(h.effects)[second] else {
            Issue.record("expected 503 while the store refuses, got \(Self.answers(h.effects))")
            return
        }
        #expect(h.machine.task(TaskID(rawValue: "t2")) == nil, "a refused submission changes nothing")
        #expect(h.uncommitted.count == 1, "nothing new to write")

        // The shell's retry succeeds: the batch was kept, nothing is lost, submissions are taken again.
        h.commitAll()
        #expect(h.machine.storeProblem == nil)
        #expect(h.snapshot.tasks.map(\.id) == [TaskID(rawValue: "t1")], "the failed batch reached the store on the retry")
        let third = h.request()
        h.feed(.submit(third, Self.spec("t1")))
        guard case .submitted(_, false, _)? = Self.answers(h.effects)[third] else {
            Issue.record("a retry of the same id is the same task, got \(Self.answers(h.effects))")
            return
        }
    }

    @Test func twoConcurrentSubmissionsOfOneIDWithDifferentSpecsAreOneCreatedAndOneConflict() throws {
        var h = Harness()
        let a = h.request(), b = h.request()
        h.feed(.submit(a, Self.spec("same", image: "one:1")))
        let afterA = h.effects
        h.feed(.submit(b, Self.spec("same", image: "two:2")))
        guard case .refused(.taskConflict)? = Self.answers(h.effects)[b] else {
            Issue.record("expected a conflict for the second, got \(Self.answers(h.effects))")
            return
        }
        #expect(Self.answers(afterA).isEmpty)
        guard case .submitted(let record, true, _)? = Self.answers(h.commitAll())[a] else {
            Issue.record("expected the first created")
            return
        }
        #expect(record.spec.image == "one:1")
        // Memory and store agree after a restart.
        let restarted = ManagerMachine(configuration: .init(), snapshot: h.snapshot, now: h.now, wallOrigin: Date(), seed: 1)
        #expect(restarted.task(TaskID(rawValue: "same"))?.spec.image == "one:1")
        #expect(h.machine.task(TaskID(rawValue: "same"))?.spec.image == "one:1")
        #expect(restarted.revision == h.machine.revision)
    }

    @Test func aSubmissionFromAWorkerIsValidatedAsAPostIs() {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        var bad = Self.spec("bad")
        bad.resources.memoryBytes = 1
        h.feed(.received(c1, .submitTask(SubmitTask(requestID: 4, spec: bad))))
        guard case .submitResult(let result)? = Self.sent(h.effects, on: c1).last else {
            Issue.record("expected a submit_result")
            return
        }
        #expect(result.task == nil && result.error?.contains("resources.memory") == true)
        #expect(h.machine.task(TaskID(rawValue: "bad")) == nil)
    }

    @Test func aWorkerSubmitsToItselfOnlyAndIsNamedInTheEvents() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        _ = h.join("w2", connection: 2)
        h.commitAll()
        for (request, pinned) in [(5, "w2"), (6, "someone-else")] {
            var elsewhere = Self.spec("elsewhere-\(request)")
            elsewhere.constraints.node = pinned
            h.feed(.received(c1, .submitTask(SubmitTask(requestID: UInt64(request), spec: elsewhere))))
            guard case .submitResult(let refused)? = Self.sent(h.effects, on: c1).last else {
                Issue.record("expected a submit_result")
                return
            }
            #expect(refused.task == nil && refused.error?.contains("pinned to \(pinned)") == true, "\(refused)")
            #expect(h.machine.task(TaskID(rawValue: "elsewhere-\(request)")) == nil)
        }
        // Pinned to itself, by id or by name, or not pinned: accepted, pinned to this node.
        for (request, pinned) in [(7, "w1"), (8, nil)] as [(Int, String?)] {
            var mine = Self.spec("mine-\(request)")
            mine.constraints.node = pinned
            h.feed(.received(c1, .submitTask(SubmitTask(requestID: UInt64(request), spec: mine))))
            let effects = h.commitAll()
            guard case .submitResult(let accepted)? = Self.sent(effects, on: c1).first(where: { if case .submitResult = $0 { true } else { false } }) else {
                Issue.record("expected a submit_result after the commit")
                return
            }
            #expect(accepted.task == TaskID(rawValue: "mine-\(request)") && accepted.error == nil)
            #expect(h.machine.task(TaskID(rawValue: "mine-\(request)"))?.spec.constraints.node == "w1")
        }
        let accepted = h.store.flatMap(\.changes).compactMap { change -> String? in
            if case .appendHistory(let entry) = change, entry.task == TaskID(rawValue: "mine-8") { return entry.message }
            return nil
        }
        #expect(accepted.first == "accepted from node w1", "who submitted it: \(accepted)")
    }

    // MARK: - Membership

    @Test func heartbeatsAreAnsweredTheFirstAndThenOneInThreeSoTheWorkerHearsEveryThreeIntervals() {
        var h = Harness()   // heartbeat interval 1 s
        let c1 = h.join("w1", connection: 1)
        var answered: [UInt64] = []
        for sequence in UInt64(1)...10 {
            h.feed(.received(c1, .heartbeat(Heartbeat(sequence: sequence, metrics: MachineMetrics()))))
            if Self.sent(h.effects, on: c1).contains(.heartbeat(Heartbeat(sequence: sequence, metrics: .none))) { answered.append(sequence) }
            h.advance(.seconds(1))
        }
        #expect(answered == [1, 4, 7, 10])
        // A late beat is answered at once: never more than 3 intervals without a word.
        h.advance(.seconds(2))
        h.feed(.received(c1, .heartbeat(Heartbeat(sequence: 11, metrics: MachineMetrics()))))
        #expect(Self.sent(h.effects, on: c1).contains(.heartbeat(Heartbeat(sequence: 11, metrics: .none))))
        // A new connection answers its first beat whatever the old one did.
        h.feed(.disconnected(c1))
        let c2 = h.join("w1", connection: 2)
        h.feed(.received(c2, .heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics()))))
        #expect(Self.sent(h.effects, on: c2).contains(.heartbeat(Heartbeat(sequence: 1, metrics: .none))))
    }

    @Test func aDialAgainReplacesAHalfOpenConnectionButALiveTwinIsRefusedForNow() {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.advance(.milliseconds(500))
        // Heard 0.5 s ago (less than two heartbeat intervals): another process claims the id.
        let c2 = h.join("w1", connection: 2)
        guard case .refused(let refused)? = Self.sent(h.effects, on: c2).first else {
            Issue.record("expected a refusal, got \(h.effects)")
            return
        }
        #expect(refused.code == .duplicateNode && !refused.permanent)
        #expect(h.machine.isConnected(NodeID(rawValue: "w1")))
        // Silent for 3 s: the old connection is half-open; the new one takes over.
        h.advance(.seconds(3))
        let c3 = h.join("w1", connection: 3)
        #expect(h.effects.contains { if case .close(c1) = $0 { return true } else { return false } }, "the old connection is closed")
        guard case .welcome? = Self.sent(h.effects, on: c3).first else {
            Issue.record("expected a welcome, got \(h.effects)")
            return
        }
    }

    // MARK: - Identity

    static func hello(_ node: String) -> WireMessage {
        .hello(Hello(nodeID: NodeID(rawValue: node), name: node, addresses: [], capacity: Capacity(millicores: 1000, memoryBytes: 1 << 30, diskBytes: 0)))
    }

    @Test func aHelloWithoutACertificateGetsNothingButAClosedConnection() {
        for peer: NodeID?? in [.none, .some(nil)] {   // the shell has not said, or said: no certificate
            var h = Harness()
            let c = ConnectionID(rawValue: 1)
            h.feed(.connected(c))
            if case .some(let node) = peer { h.feed(.authenticated(c, node)) }
            h.feed(.received(c, Self.hello("w1")))
            #expect(Self.sent(h.effects, on: c).isEmpty, "not a frame to a client without a certificate")
            #expect(h.effects.contains { if case .close(c) = $0 { return true } else { return false } })
            #expect(h.machine.listNodes().isEmpty)
        }
    }

    @Test func aNodeIsTheOneItsCertificateNamesNotWhatItsHelloClaims() {
        var h = Harness()
        _ = h.join("w1", connection: 1)
        let c = ConnectionID(rawValue: 2)
        h.feed(.connected(c))
        h.feed(.authenticated(c, NodeID(rawValue: "w2")))
        h.feed(.received(c, Self.hello("w1")))
        guard case .refused(let refused)? = Self.sent(h.effects, on: c).first else {
            Issue.record("expected a refusal, got \(h.effects)")
            return
        }
        #expect(refused.code == .invalidHello && refused.permanent && refused.reason.contains("w2"))
        #expect(h.machine.listNodes().map(\.id) == [NodeID(rawValue: "w1")])
    }

    @Test func aJoinerMayNotTakeTheIdOfAConnectedNodeButItsOwnRenewalMay() {
        var h = Harness()
        _ = h.join("w1", connection: 1)
        let join = h.request(), renewal = h.request(), fresh = h.request()
        h.feed(.admit(join, NodeID(rawValue: "w1"), renewing: false))
        #expect(Self.answers(h.effects)[join] == .refused(.nodeConnected("w1")))
        h.feed(.admit(renewal, NodeID(rawValue: "w1"), renewing: true))
        #expect(Self.answers(h.effects)[renewal] == .admitted)
        h.feed(.admit(fresh, NodeID(rawValue: "w9"), renewing: false))
        #expect(Self.answers(h.effects)[fresh] == .admitted)
    }

    @Test func aRemovedNodesCertificateIsRefusedAndItsIdNeverGivenAgainAcrossARestart() {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.feed(.disconnected(c1))
        h.advance(.seconds(10))
        h.feed(.timer)
        let remove = h.request()
        h.feed(.removeNode(remove, NodeID(rawValue: "w1")))
        h.commitAll()
        // The manager restarts from what it stored.
        var restarted = Harness(snapshot: h.snapshot)
        for renewing in [false, true] {
            let admit = restarted.request()
            restarted.feed(.admit(admit, NodeID(rawValue: "w1"), renewing: renewing))
            #expect(Self.answers(restarted.effects)[admit] == .refused(.nodeRemoved("w1")))
        }
        let c2 = restarted.join("w1", connection: 2)
        guard case .refused(let refused)? = Self.sent(restarted.effects, on: c2).first else {
            Issue.record("expected a refusal, got \(restarted.effects)")
            return
        }
        #expect(refused.code == .nodeRemoved && refused.permanent)
        #expect(!restarted.machine.isConnected(NodeID(rawValue: "w1")))
    }

    @Test func unexpectedMessagesAfterTheHandshakeCloseTheConnection() {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.feed(.received(c1, .welcome(Welcome(version: ProtocolVersion.newest, heartbeatInterval: .seconds(1)))))
        guard case .error(let error)? = Self.sent(h.effects, on: c1).first else {
            Issue.record("expected an error frame, got \(h.effects)")
            return
        }
        #expect(error.code == .unexpectedMessage)
        #expect(!h.machine.isConnected(NodeID(rawValue: "w1")))
    }

    @Test func aConnectionThatNeverSaysHelloIsClosedAtItsDeadline() {
        var h = Harness()
        h.feed(.connected(ConnectionID(rawValue: 9)))
        h.advance(.seconds(11))
        h.feed(.timer)
        #expect(h.effects.contains { if case .close(ConnectionID(rawValue: 9)) = $0 { return true } else { return false } })
    }

    @Test func aSilentNodeIsDownAfterTheGraceAndItsTaskPlacedElsewhere() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.feed(.submit(h.request(), Self.spec("t1", policy: RestartPolicy(mode: .onFailure))))
        let first = try #require(Self.assignment(h.commitAll(), on: c1))
        let c2 = h.join("w2", connection: 2)
        h.commitAll()
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: first.task, attempt: 1, state: .running, container: ContainerID(rawValue: "c")))))
        // w2 heartbeats; w1 falls silent.
        var placed: AssignTask?
        for _ in 0..<80 {
            h.advance(.milliseconds(250))
            h.feed(.received(c2, .heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics()))))
            h.feed(.timer)
            if let assign = Self.assignment(h.commitAll(), on: c2) { placed = assign; break }
        }
        let moved = try #require(placed, "the task is placed on the other node once its node is down and its backoff passed")
        #expect(moved.attempt == 2)
        #expect(h.machine.forgottenPendingTasks.isEmpty)
    }

    // MARK: - The container engine

    @Test func nothingIsPlacedOnANodeWhoseEngineDoesNotAnswerAndItsTasksWaitUntilItDoes() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.commitAll()
        h.feed(.received(c1, .heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics(), engineError: "connection refused"))))
        #expect(h.machine.listNodes().first?.engineError == "connection refused")
        #expect(h.machine.listNodes().first?.state == .up, "the node itself is alive: it heartbeats")
        h.feed(.submit(h.request(), Self.spec("t1")))
        #expect(Self.assignment(h.commitAll(), on: c1) == nil)
        let waiting = try #require(h.machine.task(TaskID(rawValue: "t1")))
        #expect(waiting.state == .pending)
        #expect(waiting.error == ManagerMachine.nowherePrefix + "the container engine of node w1 does not answer")

        // The engine answers again: the waiting task is placed there at once.
        h.advance(.seconds(1))
        h.feed(.received(c1, .heartbeat(Heartbeat(sequence: 2, metrics: MachineMetrics()))))
        var effects = h.effects
        effects += h.commitAll()
        let placed = try #require(Self.assignment(effects, on: c1), "placed once the engine answers")
        #expect(placed.task == TaskID(rawValue: "t1"))
        #expect(h.machine.listNodes().first?.engineError == nil)
    }

    @Test func theWorkersWordsForAnExitAreTheTasksErrorNotOnlyItsCode() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.feed(.submit(h.request(), Self.spec("t1")))
        let assign = try #require(Self.assignment(h.commitAll(), on: c1))
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: assign.task, attempt: 1, state: .running, container: ContainerID(rawValue: "c")))))
        h.feed(.received(c1, .taskStatus(TaskStatus(
            statusID: 2, task: assign.task, attempt: 1, state: .failed, container: ContainerID(rawValue: "c"), exitCode: 127,
            error: "exit 127: sleepy: command not found in the image"))))
        h.commitAll()
        let ended = try #require(h.machine.task(assign.task))
        #expect(ended.state == .failed)
        #expect(ended.exitCode == 127)
        #expect(ended.error == "exit 127: sleepy: command not found in the image")
    }

    // MARK: - Disconnect policy

    @Test func aTaskWithStopAfterIsReplacedOnlyAfterItsWorkerHasSurelyStoppedIt() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.feed(.submit(h.request(), Self.spec("t1", policy: RestartPolicy(mode: .always), disconnect: DisconnectPolicy(stopAfter: .seconds(10)))))
        let first = try #require(Self.assignment(h.commitAll(), on: c1))
        let c2 = h.join("w2", connection: 2)
        h.commitAll()
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: first.task, attempt: 1, state: .running, container: ContainerID(rawValue: "c")))))
        // From w1's last word (t = 0) the replacement may come only after 10 s + 10 s grace + 1 s margin.
        var placedAt: Moment?
        while h.now < Moment.zero + .seconds(40), placedAt == nil {
            h.advance(.milliseconds(250))
            h.feed(.received(c2, .heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics()))))
            h.feed(.timer)
            if Self.assignment(h.commitAll(), on: c2) != nil { placedAt = h.now }
        }
        let at = try #require(placedAt)
        #expect(at >= Moment.zero + .seconds(21), "placed at \(at): not before stopAfter + grace + margin")
        #expect(at < Moment.zero + .seconds(24), "placed at \(at): soon after its deadline (and its 1 s backoff)")
    }

    // MARK: - Where logs are read

    /// The current attempt's output comes from its node; `previous` names the last attempt
    /// that ended and its node, through a backoff and the next attempt; each refusal says why.
    @Test func logsAreReadFromTheCurrentAttemptOrTheLastEndedOne() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        let id = TaskID(rawValue: "t1")
        h.feed(.submit(h.request(), Self.spec("t1", policy: RestartPolicy(mode: .always))))
        func refusal(previous: Bool) -> String? {
            do { _ = try h.machine.logSource(of: id, previous: previous); return nil } catch { return error.description }
        }
        #expect(refusal(previous: false)?.contains("has not run yet (scheduled)") == true, "\(refusal(previous: false) ?? "")")
        #expect(refusal(previous: true)?.contains("has no attempt that ended yet") == true)
        let first = try #require(Self.assignment(h.commitAll(), on: c1))
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: id, attempt: 1, state: .running, container: ContainerID(rawValue: "c1")))))
        let running = try h.machine.logSource(of: id)
        #expect(running.node == NodeID(rawValue: "w1") && running.connection == c1 && running.attempt == Int(first.attempt))

        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 2, task: id, attempt: 1, state: .failed, container: ContainerID(rawValue: "c1"), exitCode: 3))))
        h.commitAll()
        #expect(h.machine.task(id)?.state == .pending, "in its backoff")
        let waiting = try #require(refusal(previous: false))
        #expect(waiting.contains("is pending") && waiting.contains("--previous shows the output of the last one that ended"), "\(waiting)")
        #expect(try h.machine.logSource(of: id, previous: true).attempt == 1)

        h.advance(.seconds(1))
        h.feed(.timer)
        let second = try #require(Self.assignment(h.commitAll(), on: c1))
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 3, task: id, attempt: second.attempt, state: .running, container: ContainerID(rawValue: "c2")))))
        #expect(try h.machine.logSource(of: id).attempt == 2)
        #expect(try h.machine.logSource(of: id, previous: true).attempt == 1, "the running attempt has not ended")

        h.feed(.disconnected(c1))
        #expect(refusal(previous: true)?.contains("attempt 1 of task t1 ran on w1, which is not connected") == true, "\(refusal(previous: true) ?? "")")
    }

    // MARK: - Backoffs are never forgotten

    @Test func aTaskInBackoffIsPlacedWhenItsTimeComes() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.feed(.submit(h.request(), Self.spec("t1", policy: RestartPolicy(mode: .always))))
        let first = try #require(Self.assignment(h.commitAll(), on: c1))
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: first.task, attempt: 1, state: .failed, exitCode: 1))))
        let wakes = h.effects.compactMap { effect -> Moment? in if case .wake(let at) = effect { return at } else { return nil } }
        #expect(wakes.contains(h.now + .seconds(1)), "the backoff asks to be woken at its end")
        #expect(h.machine.forgottenPendingTasks.isEmpty)
        h.advance(.seconds(1))
        h.feed(.timer)
        let second = try #require(Self.assignment(h.commitAll(), on: c1), "placed again when the backoff ends")
        #expect(second.attempt == 2)
    }

    // MARK: - Found by the simulator

    /// `orch-sim run --operators`, seed 50: the store failed when ended tasks were next to
    /// be collected, and the timer asked to be woken at that moment again and again (the
    /// machine spun, time stood still) until the store answered.
    @Test func aStoreFailureAtCollectionTimeDoesNotSpinTheTimer() throws {
        var h = Harness()
        h.feed(.submit(h.request(), Self.spec("t1")))
        h.commitAll()
        h.advance(.seconds(60))
        h.feed(.submit(h.request(), Self.spec("t2")))
        let failing = try #require(h.uncommitted.last)
        h.feed(.commitFailed(through: failing.sequence, reason: "disk full"))
        let wakes = h.feed(.timer).compactMap { effect -> Moment? in if case .wake(let at) = effect { return at } else { return nil } }
        #expect(!wakes.isEmpty && wakes.allSatisfy { $0 > h.now }, "woken later, not at once again: \(wakes) at \(h.now)")
    }

    /// `orch-sim run --operators`, seed 0: a task with a disconnect policy moved off a drained
    /// node was placed elsewhere at once, while its worker (gone quiet) still ran it: two
    /// copies. It stays until its end is known: the worker's report of the stop here, and is
    /// placed elsewhere then; the worker that comes back is told to stop it, not to run it.
    @Test func aTaskThatMustNotRunTwiceIsMovedOffADrainedNodeOnlyOnceStopped() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        let id = TaskID(rawValue: "t1")
        h.feed(.submit(h.request(), Self.spec("t1", disconnect: DisconnectPolicy(stopAfter: .seconds(10)))))
        let first = try #require(Self.assignment(h.commitAll(), on: c1))
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: id, attempt: 1, state: .running, container: ContainerID(rawValue: "c1")))))
        h.commitAll()
        let c2 = h.join("w2", connection: 2)
        h.commitAll()

        h.feed(.drainNode(h.request(), NodeID(rawValue: "w1"), drain: true, move: true))
        #expect(Self.sent(h.effects, on: c1).contains(.stopTask(StopTask(task: id, attempt: first.attempt))), "stopped where it runs")
        h.commitAll()
        #expect(h.machine.task(id)?.state == .running && h.machine.task(id)?.node == NodeID(rawValue: "w1"), "not placed elsewhere yet")
        h.advance(.seconds(2))
        h.feed(.timer)
        #expect(Self.assignment(h.commitAll(), on: c2) == nil)

        // The worker reconnects having missed the stop: it is told again, not sent the task.
        h.feed(.disconnected(c1))
        let again = ConnectionID(rawValue: 3)
        h.feed(.connected(again))
        h.feed(.authenticated(again, NodeID(rawValue: "w1")))
        h.feed(.received(again, .hello(Hello(nodeID: NodeID(rawValue: "w1"), name: "w1", addresses: ["127.0.0.1:0"],
                                              capacity: Capacity(millicores: 2000, memoryBytes: 4 << 30, diskBytes: 0), labels: [:]))))
        h.commitAll()
        h.feed(.received(again, .taskList(TaskList(entries: [.init(task: id, attempt: 1, state: .running, container: ContainerID(rawValue: "c1"))]))))
        let answer = h.effects + h.commitAll()
        #expect(Self.sent(answer, on: again).contains(.stopTask(StopTask(task: id, attempt: 1))), "\(Self.sent(answer, on: again))")
        #expect(Self.assignment(answer, on: again) == nil)

        // Its stop reported: placed on the other node at once, whatever its policy says.
        h.feed(.received(again, .taskStatus(TaskStatus(statusID: 2, task: id, attempt: 1, state: .completed, container: ContainerID(rawValue: "c1"), exitCode: 143))))
        let moved = try #require(Self.assignment(h.commitAll(), on: c2), "placed on w2 once stopped on w1")
        #expect(moved.attempt == 2 && h.machine.task(id)?.node == NodeID(rawValue: "w2"))
    }

    @Test func aRunningReportOfAnAttemptAlreadyEndedStopsThatContainer() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        h.feed(.submit(h.request(), Self.spec("t1")))
        let assign = try #require(Self.assignment(h.commitAll(), on: c1))
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: assign.task, attempt: 1, state: .completed, exitCode: 0))))
        h.commitAll()
        // The worker started the same attempt again (an assignment re-sent before its end was known).
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 2, task: assign.task, attempt: 1, state: .running, container: ContainerID(rawValue: "again")))))
        #expect(Self.sent(h.effects, on: c1).contains(.stopTask(StopTask(task: assign.task, attempt: 1))), "an orphan is stopped, not just acknowledged")
        #expect(h.machine.task(assign.task)?.state == .completed)
    }

    @Test func anUnhealthyTaskWithStopAfterIsReplacedOnlyOnceItsContainerStopped() throws {
        var h = Harness()
        let c1 = h.join("w1", connection: 1)
        var spec = Self.spec("t1", policy: RestartPolicy(mode: .always), disconnect: DisconnectPolicy(stopAfter: .seconds(10)))
        spec.ports = [PortSpec(containerPort: 8080)]
        spec.healthCheck = HealthCheck(path: "/health", port: 8080)
        h.feed(.submit(h.request(), spec))
        let assign = try #require(Self.assignment(h.commitAll(), on: c1))
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 1, task: assign.task, attempt: 1, state: .running, container: ContainerID(rawValue: "c"), health: .healthy))))
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 2, task: assign.task, attempt: 1, state: .running, container: ContainerID(rawValue: "c"), health: .unhealthy))))
        #expect(Self.sent(h.effects, on: c1).contains(.stopTask(StopTask(task: assign.task, attempt: 1))))
        h.commitAll()
        // Past the backoff, the old container may still be in its grace period: no replacement yet.
        for _ in 0..<12 {
            h.advance(.milliseconds(250))
            h.feed(.received(c1, .heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics()))))
            h.feed(.timer)
            #expect(Self.assignment(h.commitAll(), on: c1) == nil, "not placed again before the old container is known stopped")
        }
        // The worker reports it stopped: the replacement follows after its backoff.
        h.feed(.received(c1, .taskStatus(TaskStatus(statusID: 3, task: assign.task, attempt: 1, state: .failed, container: ContainerID(rawValue: "c"), exitCode: 143))))
        h.commitAll()
        h.advance(.seconds(1))
        h.feed(.timer)
        let again = try #require(Self.assignment(h.commitAll(), on: c1))
        #expect(again.attempt == 2)
    }
}
