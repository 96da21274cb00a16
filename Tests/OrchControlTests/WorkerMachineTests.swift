import OrchControl
import OrchCore
import Testing

/// The worker's machine, one input at a time at explicit moments: no clock, no sleeps, no
/// containers. Each test reads the effects as the shell would carry them out.
@Suite struct WorkerMachineTests {
    // MARK: - Adoption

    @Test func anExitedContainerFoundOnAdoptionIsReportedWithItsExitCode() {
        var worker = Worker()
        let adopted = worker.at(0, .found([
            found("t1", 1, "c1-old", running: true),
            found("t1", 2, "c1", running: false, exitCode: 3),
            found("t2", 1, "c2", running: false, exitCode: 0),
            found("t3", 4, "c3", running: true, ports: [port(80, 0, "0.0.0.0", 30080)]),
        ]))
        #expect(adopted == [
            .remove(container("c1-old")),
            .note(.adopted(task("t1"), attempt: 2, .failed)),
            .note(.adopted(task("t2"), attempt: 1, .completed)),
            .note(.adopted(task("t3"), attempt: 4, .running)),
        ])
        #expect(worker.machine.unacknowledged.map(\.statusID) == [1, 2])
        #expect(worker.machine.runningCount == 1)

        let welcomed = worker.at(1, .connected(welcome))
        #expect(welcomed == [
            .send(.taskList(TaskList(entries: [
                .init(task: task("t1"), attempt: 2, state: .failed, container: container("c1")),
                .init(task: task("t2"), attempt: 1, state: .completed, container: container("c2")),
                .init(task: task("t3"), attempt: 4, state: .running, container: container("c3")),
            ]))),
            .send(.taskStatus(TaskStatus(statusID: 1, task: task("t1"), attempt: 2, state: .failed, container: container("c1"), exitCode: 3))),
            .send(.taskStatus(TaskStatus(statusID: 2, task: task("t2"), attempt: 1, state: .completed, container: container("c2"), exitCode: 0))),
            .sendHeartbeat(sequence: 1),
            .wake(at: seconds(2)),
        ])
    }

    // MARK: - Several managers

    @Test func aCommandFromAnOlderEpochThanTheNewestSeenIsIgnored() {
        var worker = Worker()
        _ = worker.at(0, .found([]))
        _ = worker.at(0, .connected(Welcome(version: ProtocolVersion.newest, heartbeatInterval: .seconds(1), epoch: 4)))
        #expect(worker.machine.newestEpoch == 4)
        // A deposed leader (epoch 3) still sends: neither its assignment nor its stop is taken.
        let stale = worker.at(0.1, .received(.assignTask(AssignTask(task: task("t1"), attempt: 1, spec: spec(), epoch: 3))))
        #expect(stale.starts.isEmpty)
        #expect(stale.withoutWakes == [.note(.ignoredStaleEpoch(.assignTask, epoch: 3, newest: 4))])
        #expect(worker.at(0.2, .received(.assignTask(AssignTask(task: task("t2"), attempt: 1, spec: spec(), epoch: 4)))).starts == [task("t2")])
        _ = worker.at(0.3, .containerStarted(task("t2"), attempt: 1, container: container("c2"), ports: []))
        let staleStop = worker.at(0.4, .received(.stopTask(StopTask(task: task("t2"), attempt: 1, epoch: 2))))
        #expect(staleStop.stops.isEmpty, "a deposed leader's stop stops nothing")
        // A newer epoch in a command is taken as the newest (a leader of a later term).
        #expect(worker.at(0.5, .received(.stopTask(StopTask(task: task("t2"), attempt: 1, epoch: 5)))).stops == [container("c2")])
        #expect(worker.machine.newestEpoch == 5)
    }

    @Test func aWelcomeFromAnOlderEpochDropsThatConnection() {
        var worker = Worker()
        _ = worker.at(0, .found([]))
        _ = worker.at(0, .connected(Welcome(version: ProtocolVersion.newest, heartbeatInterval: .seconds(1), epoch: 7)))
        _ = worker.at(1, .disconnected)
        let old = worker.at(2, .connected(Welcome(version: ProtocolVersion.newest, heartbeatInterval: .seconds(1), epoch: 6)))
        #expect(old.dropsConnection)
        #expect(old.sent.isEmpty, "nothing is sent to a deposed leader")
        let current = worker.at(3, .connected(Welcome(version: ProtocolVersion.newest, heartbeatInterval: .seconds(1), epoch: 8)))
        #expect(!current.dropsConnection && current.sent.first.map { if case .taskList = $0 { true } else { false } } == true)
    }

    @Test func anAdoptedContainerLearnsItsSpecFromTheReSentAssignment() {
        var worker = Worker()
        _ = worker.at(0, .found([found("t1", 3, "c1", running: true, ports: [port(8080, 0, "0.0.0.0", 32000)])]))
        _ = worker.at(0, .connected(welcome))
        let check = HealthCheck(path: "/health", port: 8080)
        let effects = worker.at(0.5, .received(.assignTask(AssignTask(task: task("t1"), attempt: 3, spec: spec(health: check)))))
        #expect(effects.withoutWakes == [
            .watchHealth(task("t1"), attempt: 3, check: check, host: "127.0.0.1", port: 32000),
            .send(.taskStatus(TaskStatus(
                statusID: 1, task: task("t1"), attempt: 3, state: .running, container: container("c1"),
                ports: [port(8080, 0, "0.0.0.0", 32000)], health: .starting))),
        ])
        #expect(effects.starts.isEmpty)
    }

    @Test func aLaterListingCatchesAnExitTheEventStreamMissed() {
        var worker = Worker()
        _ = worker.at(0, .found([]))
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0, assign("t1", 1))
        _ = worker.at(0.1, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        let effects = worker.at(0.5, .found([found("t1", 1, "c1", running: false, exitCode: 137)]))
        #expect(effects.withoutWakes == [
            .note(.exited(task("t1"), attempt: 1, code: 137, .failed)),
            .send(.taskStatus(TaskStatus(statusID: 2, task: task("t1"), attempt: 1, state: .failed, container: container("c1"), exitCode: 137))),
        ])
        // Found again: reported once only; and a later listing removes nothing.
        #expect(worker.at(0.6, .found([found("t1", 1, "c1", running: false, exitCode: 137)])).withoutWakes.isEmpty)
    }

    @Test func anExitAfterTheEngineRestartedSaysSoButNotOneOfAContainerStartedSince() {
        var worker = Worker()
        _ = worker.at(0, .found([]))
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0, assign("t1", 1))
        _ = worker.at(0.1, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        _ = worker.at(1, .engine(error: "connection refused"))
        #expect(worker.machine.engineError == "connection refused")
        _ = worker.at(3, .engine(error: nil))
        _ = worker.at(3, assign("t2", 1))
        _ = worker.at(3.1, .containerStarted(task("t2"), attempt: 1, container: container("c2"), ports: []))
        let first = worker.at(3.2, .containerExited(task("t1"), attempt: 1, exitCode: 143))
        let second = worker.at(3.3, .containerExited(task("t2"), attempt: 1, exitCode: 1))
        func error(_ effects: [WorkerMachine.Effect]) -> String? {
            for case .send(.taskStatus(let status)) in effects { return status.error }
            return nil
        }
        #expect(error(first) == "exit 143: the container engine restarted (without live restore it stops every container it ran)")
        #expect(error(second) == nil, "started after the engine came back: its exit is its own")
        #expect(worker.machine.engineError == nil)

        // Past the window after the engine came back, an older container's exit is its own.
        _ = worker.at(4, assign("t3", 1))
        _ = worker.at(4.1, .containerStarted(task("t3"), attempt: 1, container: container("c3"), ports: []))
        _ = worker.at(5, .engine(error: "gone again"))
        _ = worker.at(6, .engine(error: nil))
        #expect(error(worker.at(22, .containerExited(task("t3"), attempt: 1, exitCode: 1))) == nil, "16 s after the engine came back")
    }

    @Test func aContainerGoneFromTheEngineEndsItsAttemptFailedAndAStoppedOneCompleted() {
        var worker = Worker()
        _ = worker.at(0, .found([]))
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0, assign("t1", 1))
        _ = worker.at(0, assign("t2", 1))
        _ = worker.at(0.1, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        _ = worker.at(0.1, .containerStarted(task("t2"), attempt: 1, container: container("c2"), ports: []))
        #expect(Set(worker.machine.liveContainers) == [container("c1"), container("c2")])
        _ = worker.at(0.2, .received(.stopTask(StopTask(task: task("t2"), attempt: 1))))
        let effects = worker.at(0.5, .containersGone([container("c1"), container("c2"), container("unknown")]))
        let statuses = effects.compactMap { effect -> TaskStatus? in
            if case .send(.taskStatus(let status)) = effect { return status }
            return nil
        }
        #expect(statuses.map(\.task) == [task("t1"), task("t2")])
        #expect(statuses.map(\.state) == [.failed, .completed])
        #expect(statuses.first?.error == "its container c1 is gone from the engine")
        #expect(statuses.last?.error == nil, "a container stopped on request that is gone is simply done")
        #expect(worker.machine.liveContainers.isEmpty)
        #expect(worker.machine.runningCount == 0)
    }

    // MARK: - Delivery

    @Test func aTerminalStatusIsReSentAfterEveryReconnectUntilAcknowledged() {
        var worker = Worker()
        _ = worker.at(0, .found([]))
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 1))
        _ = worker.at(0.2, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        let exit = worker.at(0.3, .containerExited(task("t1"), attempt: 1, exitCode: 2))
        let failed = TaskStatus(statusID: 2, task: task("t1"), attempt: 1, state: .failed, container: container("c1"), exitCode: 2)
        #expect(exit.statuses == [failed])

        let list = TaskList(entries: [.init(task: task("t1"), attempt: 1, state: .failed, container: container("c1"))])
        for reconnect in 1...2 {
            _ = worker.at(Double(reconnect), .disconnected)
            let again = worker.at(Double(reconnect) + 0.5, .connected(welcome))
            #expect(again.sent == [.taskList(list), .taskStatus(failed)])
        }
        _ = worker.at(3, .received(.ack(Ack(statusID: 2))))
        #expect(worker.machine.unacknowledged.isEmpty)
        _ = worker.at(4, .disconnected)
        #expect(worker.at(5, .connected(welcome)).sent == [.taskList(list)])
    }

    @Test func whileDisconnectedTerminalStatusesWaitAndOthersAreNotSent() {
        var worker = Worker()
        _ = worker.at(0, .found([]))
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 1))
        _ = worker.at(0.2, .disconnected)
        #expect(worker.at(0.3, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: [])).sent.isEmpty)
        #expect(worker.at(0.4, .containerExited(task("t1"), attempt: 1, exitCode: 0)).sent.isEmpty)
        #expect(!worker.machine.isConnected)
        let again = worker.at(1, .connected(welcome))
        #expect(again.sent == [
            .taskList(TaskList(entries: [.init(task: task("t1"), attempt: 1, state: .completed, container: container("c1"))])),
            // The running status (id 1) was superseded by the task list.
            .taskStatus(TaskStatus(statusID: 2, task: task("t1"), attempt: 1, state: .completed, container: container("c1"), exitCode: 0)),
        ])
    }

    // MARK: - Assignments

    @Test func aDuplicateAssignmentStartsNoSecondContainer() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        #expect(worker.at(0.1, assign("t1", 1)).starts == [task("t1")])
        let again = worker.at(0.2, assign("t1", 1))
        #expect(again.starts.isEmpty)
        #expect(again.statuses == [TaskStatus(statusID: 1, task: task("t1"), attempt: 1, state: .scheduled)])
        _ = worker.at(0.3, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        let afterStart = worker.at(0.4, assign("t1", 1))
        #expect(afterStart.starts.isEmpty)
        #expect(afterStart.statuses.map(\.state) == [.running])
    }

    @Test func aStaleAssignmentIsIgnored() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 2))
        let stale = worker.at(0.2, assign("t1", 1))
        #expect(stale.withoutWakes == [.note(.ignoredStaleAssignment(task("t1"), attempt: 1, current: 2))])
        #expect(worker.machine.attempt(of: task("t1")) == 2)
    }

    @Test func aNewerAttemptStopsAndRemovesTheOlderContainerFirst() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        let check = HealthCheck(path: "/", port: 80)
        let first = spec(health: check, grace: .seconds(3))
        _ = worker.at(0.1, assign("t1", 1, first))
        _ = worker.at(0.2, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: [port(80, 0, "0.0.0.0", 30000)]))
        let second = spec(health: check, grace: .seconds(3), name: "second")
        let replaced = worker.at(1, assign("t1", 2, second))
        #expect(replaced.withoutWakes == [
            .unwatchHealth(task("t1"), attempt: 1),
            .stop(task("t1"), attempt: 1, container: container("c1"), grace: .seconds(3)),
            .remove(container("c1"), keepingOutputOf: .init(task: task("t1"), attempt: 1)),
            .start(task("t1"), attempt: 2, spec: second),
        ])
        // The old attempt's exit is not reported: the manager has moved on.
        #expect(worker.at(2, .containerExited(task("t1"), attempt: 1, exitCode: 143)).withoutWakes.isEmpty)
        #expect(worker.machine.attempt(of: task("t1")) == 2)
        #expect(worker.machine.container(of: task("t1")) == nil)
    }

    @Test func anAttemptReplacedWhileStartingIsStoppedAndRemovedWhenItsStartIsAnswered() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 1))
        #expect(worker.at(0.2, assign("t1", 2)).starts == [task("t1")])
        let late = worker.at(0.3, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        #expect(late.withoutWakes == [
            .stop(task("t1"), attempt: 1, container: container("c1"), grace: TaskSpec.defaultStopGracePeriod),
            .remove(container("c1")),
        ])
        #expect(worker.machine.attempt(of: task("t1")) == 2)
    }

    @Test func atMostTheStartLimitIsInFlight() {
        var worker = Worker(maximumConcurrentStarts: 4)
        _ = worker.at(0, .connected(welcome))
        var started: [TaskID] = []
        for index in 1...5 { started += worker.at(0.1, assign("t\(index)", 1)).starts }
        #expect(started == ["t1", "t2", "t3", "t4"].map(task))
        let answered = worker.at(1, .containerStarted(task("t2"), attempt: 1, container: container("c2"), ports: []))
        #expect(answered.starts == [task("t5")])
        // A failed start frees its slot as well; nothing is left to start.
        #expect(worker.at(2, .containerFailed(task("t1"), attempt: 1, container: nil, error: "no such image")).starts.isEmpty)
        #expect(worker.at(3, assign("t6", 1)).starts == [task("t6")])
    }

    @Test func aFailedStartIsReportedAndItsContainerRemoved() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 1))
        let failed = worker.at(0.2, .containerFailed(task("t1"), attempt: 1, container: container("c1"), error: "port is taken"))
        #expect(failed.withoutWakes == [
            .note(.failedToStart(task("t1"), attempt: 1, "port is taken")),
            .send(.taskStatus(TaskStatus(statusID: 1, task: task("t1"), attempt: 1, state: .failed, error: "port is taken"))),
            .remove(container("c1")),
        ])
        #expect(worker.machine.unacknowledged.map(\.statusID) == [1])
    }

    // MARK: - Stops

    /// A task behind a published port is drained before it is stopped: reported stopping at
    /// once (every load balancer then drains it), its container told to stop only after the
    /// table's drain. Without the table it is stopped at once.
    @Test func aStopOfAnEndpointBehindAPublishedPortWaitsForTheDrain() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 1))
        _ = worker.at(0.2, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: [port(80, 0, "127.0.0.1", 32768)]))
        let table = ServiceTable(
            service: "web", index: 3, listeners: [.init(publish: 8080, containerPort: 80)],
            endpoints: [.init(task: task("t1"), address: "127.0.0.1", ports: [port(80, 0, "127.0.0.1", 32768)], state: .ready)],
            drain: .seconds(2))
        _ = worker.at(0.5, .received(.serviceTable(table)))
        let stop = worker.at(1, .received(.stopTask(StopTask(task: task("t1"), attempt: 1))))
        #expect(stop.withoutWakes.contains(.send(.taskStatus(TaskStatus(
            statusID: 2, task: task("t1"), attempt: 1, state: .stopping, container: container("c1"), ports: [port(80, 0, "127.0.0.1", 32768)])))))
        #expect(!stop.contains { if case .stop = $0 { true } else { false } }, "not stopped before the drain")
        #expect(worker.machine.nextWake.map { $0 <= seconds(3) } == true, "a timer for the drain's end")
        let early = worker.at(2.9, .timer)
        #expect(!early.contains { if case .stop = $0 { true } else { false } })
        let due = worker.at(3, .timer)
        #expect(due.withoutWakes.contains(.stop(task("t1"), attempt: 1, container: container("c1"), grace: TaskSpec.defaultStopGracePeriod)))

        // Off the mesh (a table without listeners): stopped at once.
        var other = Worker()
        _ = other.at(0, .connected(welcome))
        _ = other.at(0.1, assign("t1", 1))
        _ = other.at(0.2, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: [port(80, 0, "127.0.0.1", 32768)]))
        _ = other.at(0.5, .received(.serviceTable(table)))
        _ = other.at(0.6, .received(.serviceTable(ServiceTable(service: "web", index: 4, listeners: [], endpoints: [], drain: .zero))))
        let atOnce = other.at(1, .received(.stopTask(StopTask(task: task("t1"), attempt: 1))))
        #expect(atOnce.withoutWakes.contains(.stop(task("t1"), attempt: 1, container: container("c1"), grace: TaskSpec.defaultStopGracePeriod)))

        // A new connection brings every table again: one not among them (the service was
        // removed meanwhile) drains nothing any more.
        var again = Worker()
        _ = again.at(0, .connected(welcome))
        _ = again.at(0.1, assign("t1", 1))
        _ = again.at(0.2, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: [port(80, 0, "127.0.0.1", 32768)]))
        _ = again.at(0.5, .received(.serviceTable(table)))
        _ = again.at(0.6, .disconnected)
        _ = again.at(0.7, .connected(welcome))
        let afterWelcome = again.at(1, .received(.stopTask(StopTask(task: task("t1"), attempt: 1))))
        #expect(afterWelcome.withoutWakes.contains(.stop(task("t1"), attempt: 1, container: container("c1"), grace: TaskSpec.defaultStopGracePeriod)))
    }

    @Test func aStopDuringStartStopsTheContainerOnceItRuns() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 1, spec(grace: .seconds(2))))
        let stop = worker.at(0.2, .received(.stopTask(StopTask(task: task("t1"), attempt: 1))))
        #expect(stop.withoutWakes == [.send(.taskStatus(TaskStatus(statusID: 1, task: task("t1"), attempt: 1, state: .stopping)))])
        let started = worker.at(0.3, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        #expect(started.withoutWakes == [.stop(task("t1"), attempt: 1, container: container("c1"), grace: .seconds(2))])
        let exited = worker.at(1, .containerExited(task("t1"), attempt: 1, exitCode: 143))
        #expect(exited.withoutWakes == [
            .note(.exited(task("t1"), attempt: 1, code: 143, .completed)),
            .send(.taskStatus(TaskStatus(statusID: 2, task: task("t1"), attempt: 1, state: .completed, container: container("c1"), exitCode: 143))),
            .remove(container("c1"), keepingOutputOf: .init(task: task("t1"), attempt: 1)),
        ])
        #expect(worker.machine.attempt(of: task("t1")) == nil)
    }

    @Test func aStopOfAnAttemptWaitingForASlotEndsItAtOnce() {
        var worker = Worker(maximumConcurrentStarts: 1)
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 1))
        #expect(worker.at(0.1, assign("t2", 1)).starts.isEmpty)
        let stop = worker.at(0.2, .received(.stopTask(StopTask(task: task("t2"), attempt: 1))))
        #expect(stop.withoutWakes == [
            .send(.taskStatus(TaskStatus(statusID: 1, task: task("t2"), attempt: 1, state: .stopping))),
            .send(.taskStatus(TaskStatus(statusID: 2, task: task("t2"), attempt: 1, state: .completed))),
        ])
        #expect(worker.at(0.3, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: [])).starts.isEmpty)
        #expect(worker.machine.attempt(of: task("t2")) == nil)
    }

    @Test func aStopForAnAttemptNotCurrentIsHarmlessAndAnEndedOneIsRemoved() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 2))
        _ = worker.at(0.2, .containerStarted(task("t1"), attempt: 2, container: container("c1"), ports: []))
        #expect(worker.at(0.3, .received(.stopTask(StopTask(task: task("t1"), attempt: 1)))).withoutWakes.isEmpty)
        #expect(worker.at(0.3, .received(.stopTask(StopTask(task: task("t9"), attempt: 1)))).withoutWakes.isEmpty)
        // An exit not asked for keeps its container (its logs) until the manager stops it.
        let exited = worker.at(0.4, .containerExited(task("t1"), attempt: 2, exitCode: 1))
        #expect(!exited.contains { if case .remove = $0 { true } else { false } }, "no removal, with or without a copy")
        #expect(worker.machine.container(of: task("t1")) == container("c1"))
        let stop = worker.at(0.5, .received(.stopTask(StopTask(task: task("t1"), attempt: 2))))
        #expect(stop.withoutWakes == [.remove(container("c1"), keepingOutputOf: .init(task: task("t1"), attempt: 2))])
        #expect(worker.machine.attempt(of: task("t1")) == nil)
    }

    @Test func anExitDuringStartIsAppliedOnceTheStartIsAnswered() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 1))
        #expect(worker.at(0.2, .containerExited(task("t1"), attempt: 1, exitCode: 1)).withoutWakes.isEmpty)
        let started = worker.at(0.3, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        #expect(started.withoutWakes == [
            .note(.running(task("t1"), attempt: 1, container("c1"))),
            .send(.taskStatus(TaskStatus(statusID: 1, task: task("t1"), attempt: 1, state: .running, container: container("c1")))),
            .note(.exited(task("t1"), attempt: 1, code: 1, .failed)),
            .send(.taskStatus(TaskStatus(statusID: 2, task: task("t1"), attempt: 1, state: .failed, container: container("c1"), exitCode: 1))),
        ])
        #expect(worker.machine.container(of: task("t1")) == container("c1"))
    }

    @Test func anExitDuringStartWithAStopAskedCompletesWithoutAStop() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0.1, assign("t1", 1))
        _ = worker.at(0.2, .received(.stopTask(StopTask(task: task("t1"), attempt: 1))))
        _ = worker.at(0.3, .containerExited(task("t1"), attempt: 1, exitCode: 137))
        let started = worker.at(0.4, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        #expect(started.stops.isEmpty)
        #expect(started.statuses.map(\.state) == [.completed])
        #expect(started.contains(.remove(container("c1"), keepingOutputOf: .init(task: task("t1"), attempt: 1))))
    }

    // MARK: - Liveness

    @Test func heartbeatsEveryIntervalWithSequenceFromOnePerConnection() {
        var worker = Worker()
        let first = worker.at(0, .connected(welcome))
        #expect(first == [.send(.taskList(TaskList(entries: []))), .sendHeartbeat(sequence: 1), .wake(at: seconds(1))])
        #expect(worker.at(0.5, .received(.heartbeat(Heartbeat(sequence: 1, metrics: MachineMetrics())))) == [.wake(at: seconds(1))])
        #expect(worker.at(1, .timer) == [.sendHeartbeat(sequence: 2), .wake(at: seconds(2))])
        #expect(worker.at(1.5, .timer) == [.wake(at: seconds(2))])   // an early timer sends nothing
        #expect(worker.at(2, .timer) == [.sendHeartbeat(sequence: 3), .wake(at: seconds(3))])
        #expect(worker.at(2.5, .disconnected) == [])
        #expect(worker.at(3, .timer) == [])
        let second = worker.at(10, .connected(welcome))
        #expect(second.contains(.sendHeartbeat(sequence: 1)))
        #expect(second.last == .wake(at: seconds(11)))
        // A late timer sends one beat, not the ones missed.
        #expect(worker.at(13.5, .timer) == [.sendHeartbeat(sequence: 2), .wake(at: seconds(14.5))])
    }

    @Test func aManagerSilentForManagerSilenceIsDroppedOnce() {
        var worker = Worker(managerSilence: .seconds(5))
        _ = worker.at(0, .connected(welcome))
        for second in 1...5 { #expect(!worker.at(Double(second), .timer).dropsConnection) }
        let due = worker.machine.nextWake
        #expect(due == Moment(nanoseconds: 5_000_000_001))
        let dropped = worker.handle(.timer, at: Moment(nanoseconds: 5_000_000_001))
        #expect(dropped == [.dropConnection(reason: "no word from the manager for more than 5s")])
        #expect(!worker.machine.isConnected)
        #expect(!worker.at(7, .timer).dropsConnection)
        #expect(worker.at(8, .disconnected) == [])
    }

    @Test func theSilenceAllowedIsAtLeastFourHeartbeatIntervals() {
        // Configured 1 s, but the manager's interval is 2 s: it answers a beat in three.
        var worker = Worker(managerSilence: .seconds(1))
        _ = worker.at(0, .connected(Welcome(version: ProtocolVersion.newest, heartbeatInterval: .seconds(2))))
        #expect(worker.machine.nextWake != nil)
        for second in stride(from: 0.5, through: 8, by: 0.5) { #expect(!worker.at(second, .timer).dropsConnection, "dropped at \(second) s") }
        #expect(worker.at(8.001, .timer).dropsConnection)
    }

    @Test func aManagerThatAnswersIsNotDropped() {
        var worker = Worker(managerSilence: .seconds(5))
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(4, .received(.heartbeat(Heartbeat(sequence: 4, metrics: MachineMetrics()))))
        for second in 5...9 { #expect(!worker.at(Double(second), .timer).dropsConnection) }
        #expect(worker.at(9.5, .timer).dropsConnection)
    }

    @Test func aTaskWithStopAfterIsStoppedAfterThatLongInSilenceAndNotBefore() {
        var worker = Worker(managerSilence: .seconds(5))
        _ = worker.at(0, .connected(welcome))
        let cautious = spec(disconnect: DisconnectPolicy(stopAfter: .seconds(10)))
        _ = worker.at(0, assign("t1", 1, cautious))
        _ = worker.at(0.5, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        #expect(worker.at(2, .disconnected) == [.wake(at: seconds(10))])
        #expect(worker.at(9.999, .timer) == [.wake(at: seconds(10))])
        #expect(worker.machine.snapshot.first?.state == .running)
        let stopped = worker.at(10, .timer)
        #expect(stopped == [
            .note(.stoppedForDisconnect(task("t1"), attempt: 1, after: .seconds(10))),
            .stop(task("t1"), attempt: 1, container: container("c1"), grace: TaskSpec.defaultStopGracePeriod),
        ])
        #expect(worker.at(11, .timer) == [])   // stopped once
        let exited = worker.at(12, .containerExited(task("t1"), attempt: 1, exitCode: 143))
        #expect(exited.withoutNotes == [.remove(container("c1"), keepingOutputOf: .init(task: task("t1"), attempt: 1))])
        let reason = "stopped: no word from the manager for 10s"
        let again = worker.at(13, .connected(welcome))
        #expect(again.sent == [
            .taskList(TaskList(entries: [])),
            .taskStatus(TaskStatus(statusID: 3, task: task("t1"), attempt: 1, state: .completed, container: container("c1"), exitCode: 143, error: reason)),
        ])
    }

    @Test func anAdoptedContainerKeepsItsStopAfterGraceAndTheSilenceOfTheProcessBefore() {
        // The previous process last heard from the manager 7 s before this one started; the
        // container's labels say stopAfter 10 s and a 3 s grace: it is stopped 3 s in.
        var worker = Worker(silentFor: .seconds(7))
        var labelled = found("t1", 1, "c1", running: true)
        labelled.stopAfter = .seconds(10)
        labelled.stopGracePeriod = .seconds(3)
        _ = worker.at(0, .found([labelled]))
        #expect(worker.at(2.999, .timer).withoutWakes == [], "not before the policy's 10 s since the last contact")
        #expect(worker.at(3, .timer) == [
            .note(.stoppedForDisconnect(task("t1"), attempt: 1, after: .seconds(10))),
            .stop(task("t1"), attempt: 1, container: container("c1"), grace: .seconds(3)),
        ])
    }

    @Test func aStopOnTheWorkersOwnAPIStopsTheTaskButIsNoWordFromTheManager() {
        var worker = Worker(managerSilence: .seconds(5))
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0, assign("t1", 1))
        _ = worker.at(0.5, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        let stopped = worker.at(4, .stopRequested(task("t1"), attempt: 1))
        #expect(stopped.stops == [container("c1")])
        #expect(stopped.statuses.map(\.state) == [.stopping])
        // Still counted silent since 0: the connection is dropped 5 s after the welcome.
        #expect(worker.at(5.5, .timer).dropsConnection)
        // A stop for another attempt changes nothing.
        #expect(worker.at(6, .stopRequested(task("t1"), attempt: 7)).withoutWakes == [])
    }

    @Test func anExitOf127SaysTheCommandWasNotFound() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0, .received(.assignTask(AssignTask(task: task("t1"), attempt: 1, spec: TaskSpec(image: "busybox:latest", command: ["nosuch"])))))
        _ = worker.at(0.5, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        let failed = worker.at(0.6, .containerExited(task("t1"), attempt: 1, exitCode: 127)).statuses.last
        #expect(failed?.state == .failed && failed?.exitCode == 127)
        #expect(failed?.error == "exit 127: nosuch: command not found in the image")
        // Another code says nothing more than the code.
        _ = worker.at(1, assign("t2", 1))
        _ = worker.at(1.5, .containerStarted(task("t2"), attempt: 1, container: container("c2"), ports: []))
        #expect(worker.at(1.6, .containerExited(task("t2"), attempt: 1, exitCode: 3)).statuses.last?.error == nil)
    }

    @Test func aTaskWithStopAfterRunsOnWhileTheManagerIsHeard() {
        var worker = Worker(managerSilence: .seconds(5))
        _ = worker.at(0, .connected(welcome))
        _ = worker.at(0, assign("t1", 1, spec(disconnect: DisconnectPolicy(stopAfter: .seconds(10)))))
        _ = worker.at(0.5, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: []))
        for second in 1...30 {
            _ = worker.at(Double(second), .received(.heartbeat(Heartbeat(sequence: UInt64(second), metrics: MachineMetrics()))))
            let effects = worker.at(Double(second), .timer)
            #expect(effects.stops.isEmpty)
        }
        #expect(worker.machine.runningCount == 1)
    }

    // MARK: - Health

    @Test func theHealthWatchStartsOnThePublishedPortOfTheCheck() {
        var worker = Worker()
        _ = worker.at(0, .connected(welcome))
        let check = HealthCheck(path: "/ready", port: 8080)
        _ = worker.at(0.1, assign("t1", 1, spec(health: check)))
        let ports = [port(80, 0, "0.0.0.0", 31000), port(8080, 1, "0.0.0.0", 31001), port(8080, 0, "0.0.0.0", 31002)]
        let started = worker.at(0.2, .containerStarted(task("t1"), attempt: 1, container: container("c1"), ports: ports))
        #expect(started.withoutWakes == [
            .note(.running(task("t1"), attempt: 1, container("c1"))),
            .send(.taskStatus(TaskStatus(statusID: 1, task: task("t1"), attempt: 1, state: .running, container: container("c1"), ports: ports, health: .starting))),
            .watchHealth(task("t1"), attempt: 1, check: check, host: "127.0.0.1", port: 31002),
        ])
        let healthy = worker.at(1, .healthChanged(task("t1"), attempt: 1, .healthy))
        #expect(healthy.statuses.map(\.health) == [.healthy])
        #expect(worker.at(2, .healthChanged(task("t1"), attempt: 1, .healthy)).statuses.isEmpty)
        #expect(worker.at(2, .healthChanged(task("t1"), attempt: 0, .unhealthy)).statuses.isEmpty)
        // Unhealthy: what failed goes with the verdict; healthy again, it is cleared.
        let failing = worker.at(2.5, .healthChanged(task("t1"), attempt: 1, .unhealthy, failure: "GET /ready answered 503 (3 times in a row)"))
        #expect(failing.statuses.map(\.error) == ["GET /ready answered 503 (3 times in a row)"])
        #expect(worker.at(2.6, .healthChanged(task("t1"), attempt: 1, .healthy)).statuses.map(\.error) == [nil])

        // Bound on one address: probed there.
        _ = worker.at(3, assign("t2", 1, spec(health: check)))
        let bound = worker.at(3.1, .containerStarted(task("t2"), attempt: 1, container: container("c2"), ports: [port(8080, 0, "192.168.1.5", 31003)]))
        #expect(bound.contains(.watchHealth(task("t2"), attempt: 1, check: check, host: "192.168.1.5", port: 31003)))

        // Not published: said, and nothing is probed.
        _ = worker.at(4, assign("t3", 1, spec(health: check)))
        let unpublished = worker.at(4.1, .containerStarted(task("t3"), attempt: 1, container: container("c3"), ports: [port(80, 0, "0.0.0.0", 31004)]))
        #expect(unpublished.contains(.note(.healthPortNotPublished(task("t3"), port: 8080))))
        #expect(!unpublished.watchesHealth)

        // An exit ends the watch.
        let exited = worker.at(5, .containerExited(task("t1"), attempt: 1, exitCode: 0))
        #expect(exited.contains(.unwatchHealth(task("t1"), attempt: 1)))
    }

    // MARK: - Views

    @Test func theViewsListEveryAttemptByTaskID() {
        var worker = Worker()
        _ = worker.at(0, assign("b", 1))
        _ = worker.at(0, assign("a", 2))
        _ = worker.at(0.1, .containerStarted(task("a"), attempt: 2, container: container("ca"), ports: []))
        #expect(worker.machine.taskList.entries.map(\.task) == [task("a"), task("b")])
        #expect(worker.machine.snapshot.map(\.state) == [.running, .scheduled])
        #expect(worker.machine.runningCount == 1)
        #expect(worker.machine.container(of: task("a")) == container("ca"))
        #expect(worker.machine.attempt(of: task("b")) == 1)
        #expect(!worker.machine.isConnected)
    }
}

// MARK: - Helpers

/// A worker machine driven at explicit moments.
private struct Worker {
    var machine: WorkerMachine

    init(maximumConcurrentStarts: Int = 4, managerSilence: Duration = .seconds(5), silentFor: Duration? = nil) {
        machine = WorkerMachine(
            configuration: .init(node: NodeID(rawValue: "n1"), maximumConcurrentStarts: maximumConcurrentStarts, managerSilence: managerSilence),
            now: .zero, silentFor: silentFor)
    }

    mutating func at(_ second: Double, _ input: WorkerMachine.Input) -> [WorkerMachine.Effect] {
        machine.handle(input, now: seconds(second))
    }

    mutating func handle(_ input: WorkerMachine.Input, at moment: Moment) -> [WorkerMachine.Effect] {
        machine.handle(input, now: moment)
    }
}

private let welcome = Welcome(version: ProtocolVersion.newest, heartbeatInterval: .seconds(1))

private func seconds(_ value: Double) -> Moment { Moment(nanoseconds: Int64((value * 1e9).rounded())) }
private func task(_ id: String) -> TaskID { TaskID(rawValue: id) }
private func container(_ id: String) -> ContainerID { ContainerID(rawValue: id) }

private func spec(
    health: HealthCheck? = nil, grace: Duration = TaskSpec.defaultStopGracePeriod, disconnect: DisconnectPolicy? = nil, name: String? = nil
) -> TaskSpec {
    TaskSpec(name: name, image: "busybox:latest", ports: health.map { [PortSpec(containerPort: $0.port)] } ?? [],
             stopGracePeriod: grace, healthCheck: health, disconnect: disconnect)
}

private func assign(_ id: String, _ attempt: UInt64, _ spec: TaskSpec = spec()) -> WorkerMachine.Input {
    .received(.assignTask(AssignTask(task: task(id), attempt: attempt, spec: spec)))
}

/// A published port; protocol 0 is TCP, 1 UDP.
private func port(_ containerPort: Int, _ proto: Int, _ hostIP: String, _ hostPort: Int) -> PublishedPort {
    PublishedPort(containerPort: containerPort, protocol: proto == 0 ? .tcp : .udp, hostIP: hostIP, hostPort: hostPort)
}

private func found(
    _ id: String, _ attempt: UInt64, _ containerID: String, running: Bool, exitCode: Int32? = nil, ports: [PublishedPort] = []
) -> WorkerMachine.FoundContainer {
    .init(task: task(id), attempt: attempt, container: container(containerID), image: "busybox:latest", running: running,
          exitCode: exitCode, error: nil, ports: ports)
}

extension [WorkerMachine.Effect] {
    fileprivate var withoutWakes: [WorkerMachine.Effect] { filter { if case .wake = $0 { false } else { true } } }

    fileprivate var withoutNotes: [WorkerMachine.Effect] {
        withoutWakes.filter { if case .note = $0 { false } else { true } }
    }

    /// The frames written, in order.
    fileprivate var sent: [WireMessage] { compactMap { if case .send(let message) = $0 { message } else { nil } } }

    fileprivate var statuses: [TaskStatus] { sent.compactMap { if case .taskStatus(let status) = $0 { status } else { nil } } }

    fileprivate var dropsConnection: Bool { contains { if case .dropConnection = $0 { true } else { false } } }

    fileprivate var watchesHealth: Bool { contains { if case .watchHealth = $0 { true } else { false } } }

    /// The containers asked to stop, in order.
    fileprivate var stops: [ContainerID] { compactMap { if case .stop(_, _, let container, _) = $0 { container } else { nil } } }

    /// The tasks whose start was asked for, in order.
    fileprivate var starts: [TaskID] { compactMap { if case .start(let task, _, _) = $0 { task } else { nil } } }
}
