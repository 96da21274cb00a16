import Foundation
import OrchControl
import OrchCore
import Testing

/// Services in the manager's machine: requests, the reconciler's plans carried out on real
/// tasks, their store changes, and a restart in the middle of a deploy. The workers are a
/// loop that answers assignments and stops as a worker would.
@Suite struct ServiceMachineTests {
    typealias Harness = ManagerMachineTests.Harness

    /// Two workers, and what they do with what they are sent.
    struct Cluster {
        var h: Harness
        var connections: [ConnectionID] = []
        var statusID: UInt64 = 1
        /// Commands whose tasks fail at once (exit 1) instead of running.
        var failing: Set<String> = []
        /// Every (slot, version) pair that had two live tasks at once, if any ever did.
        var twins: [String] = []

        init(nodes: Int = 2, snapshot: StoreSnapshot = StoreSnapshot(tasks: [], nodes: []), labels: (Int) -> [String: String] = { _ in [:] }) {
            h = Harness(snapshot: snapshot)
            for index in 1...nodes { connections.append(h.join("w\(index)", connection: UInt64(index), labels: labels(index))) }
            h.commitAll()
        }

        static func web(_ command: String = "v1", replicas: Int = 3, update: UpdatePolicy = UpdatePolicy(healthyDeadline: .seconds(10), minHealthyTime: .seconds(2))) -> ServiceSpec {
            ServiceSpec(name: "web", replicas: replicas, task: TaskSpec(image: "orch-busybox:latest", command: ["httpd", command]), update: update)
        }

        /// Effects the workers have not seen yet.
        var outbox: [ManagerMachine.Effect] = []
        /// Every effect so far.
        var history: [ManagerMachine.Effect] = []

        mutating func feed(_ input: ManagerMachine.Input) -> [ManagerMachine.Effect] {
            let effects = h.feed(input)
            outbox += effects
            history += effects
            return effects
        }

        mutating func commit() -> [ManagerMachine.Effect] {
            let effects = h.commitAll()
            outbox += effects
            history += effects
            return effects
        }

        mutating func ask(_ make: (RequestID) -> ManagerMachine.Input) -> ManagerMachine.Answer? {
            let request = h.request()
            var answers = ServiceMachineTests.answers(feed(make(request)))
            if answers[request] == nil { answers = ServiceMachineTests.answers(commit()) }
            return answers[request]
        }

        /// Runs the cluster for `duration` in steps: commits, and answers every assignment
        /// (running, or failed for a failing command) and every stop (completed).
        mutating func run(for duration: Duration, step: Duration = .milliseconds(250)) {
            var elapsed = Duration.zero
            while elapsed < duration {
                _ = commit()
                for _ in 0..<20 {
                    let effects = outbox
                    outbox = []
                    var replies: [(ConnectionID, WireMessage)] = []
                    for connection in connections {
                        for message in ManagerMachineTests.sent(effects, on: connection) {
                            switch message {
                            case .assignTask(let assign):
                                let fails = failing.contains(assign.spec.command?.last ?? "")
                                replies.append((connection, .taskStatus(TaskStatus(
                                    statusID: next(), task: assign.task, attempt: assign.attempt, state: fails ? .failed : .running,
                                    container: ContainerID(rawValue: "c-\(assign.task.rawValue)-\(assign.attempt)"), exitCode: fails ? 1 : nil))))
                            case .stopTask(let stop):
                                replies.append((connection, .taskStatus(TaskStatus(
                                    statusID: next(), task: stop.task, attempt: stop.attempt, state: .completed,
                                    container: ContainerID(rawValue: "c-\(stop.task.rawValue)-\(stop.attempt)"), exitCode: 0))))
                            default: break
                            }
                        }
                    }
                    if replies.isEmpty { break }
                    for (connection, message) in replies { _ = feed(.received(connection, message)) }
                    _ = commit()
                    checkTwins()
                }
                h.advance(step)
                elapsed += step
                for connection in connections {
                    _ = feed(.received(connection, .heartbeat(Heartbeat(sequence: statusID, metrics: MachineMetrics()))))
                }
                _ = feed(.timer)
                checkTwins()
            }
        }

        mutating func next() -> UInt64 {
            defer { statusID += 1 }
            return statusID
        }

        mutating func checkTwins() {
            var seen = Set<String>()
            for replica in h.machine.liveReplicas(of: "web") {
                let key = "\(replica.slot)/\(replica.version)"
                if !seen.insert(key).inserted { twins.append(key) }
            }
        }

        var service: ServiceRecord? { h.machine.service("web") }
        var tasks: [TaskRecord] { h.machine.taskTable.tasks.values.filter { $0.replica?.service == "web" } }
        var running: [TaskRecord] { tasks.filter { $0.state == .running }.sorted { $0.replica!.slot < $1.replica!.slot } }
    }

    static func answers(_ effects: [ManagerMachine.Effect]) -> [RequestID: ManagerMachine.Answer] {
        ManagerMachineTests.answers(effects)
    }

    @Test func aServiceRunsItsReplicasInSlotsSpreadOnTheNodes() throws {
        var c = Cluster()
        guard case .service(let record, true, _)? = c.ask({ .createService($0, Cluster.web()) }) else {
            Issue.record("expected created")
            return
        }
        #expect(record.version == 1 && record.replicas == 3)
        c.run(for: .seconds(1))
        #expect(c.running.map { $0.replica!.slot } == [1, 2, 3])
        #expect(Set(c.running.compactMap(\.node)).count == 2, "three replicas on two nodes use both: \(c.running.map(\.node))")
        #expect(c.running.allSatisfy { $0.replica?.version == 1 && $0.spec.command == ["httpd", "v1"] })

        guard case .service(_, false, _)? = c.ask({ .createService($0, Cluster.web()) }) else {
            Issue.record("the same spec again is the same service")
            return
        }
        guard case .refused(.serviceConflict("web"))? = c.ask({ .createService($0, Cluster.web("other")) }) else {
            Issue.record("another spec for the name is a conflict")
            return
        }
        #expect(c.tasks.count == 3, "neither made a task")
    }

    @Test func scalingUpAddsSlotsAndDownStopsTheHighest() {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web()) }
        c.run(for: .seconds(1))
        _ = c.ask { .updateService($0, "web", ServiceChange(replicas: 5)) }
        c.run(for: .seconds(1))
        #expect(c.running.map { $0.replica!.slot } == [1, 2, 3, 4, 5])
        let before = Set(c.running.filter { $0.replica!.slot <= 2 }.map(\.id))
        _ = c.ask { .updateService($0, "web", ServiceChange(replicas: 2)) }
        c.run(for: .seconds(1))
        #expect(c.running.map { $0.replica!.slot } == [1, 2])
        #expect(Set(c.running.map(\.id)) == before, "the low slots keep their tasks")
        #expect(c.service?.latestVersion == 1, "a scale is no new version")
        #expect(c.tasks.filter { $0.replica!.slot > 2 }.allSatisfy { $0.state == .completed && $0.desiredState == .stop })
    }

    @Test(arguments: [UpdatePolicy.Order.startFirst, .stopFirst])
    func anUpdateRollsEverySlotToTheNewVersion(order: UpdatePolicy.Order) throws {
        var c = Cluster()
        let policy = UpdatePolicy(parallelism: 1, order: order, healthyDeadline: .seconds(10), minHealthyTime: .seconds(2))
        _ = c.ask { .createService($0, Cluster.web(update: policy)) }
        c.run(for: .seconds(1))
        guard case .service(let updated, _, _)? = c.ask({ .updateService($0, "web", ServiceChange(task: Cluster.web("v2").task)) }) else {
            Issue.record("expected the update's answer")
            return
        }
        #expect(updated.latestVersion == 2 && updated.deploy?.state == .running)
        c.run(for: .seconds(3))
        #expect(c.running.filter { $0.replica?.version == 2 }.count < 3, "one slot at a time: not all at once")
        c.run(for: .seconds(12))
        let deploy = try #require(c.service?.deploy)
        #expect(deploy.state == .succeeded, "\(deploy)")
        #expect(c.running.count == 3 && c.running.allSatisfy { $0.replica?.version == 2 && $0.spec.command == ["httpd", "v2"] })
        #expect(c.twins.isEmpty, "never two live tasks of one version in a slot: \(c.twins)")
        #expect(deploy.events.contains { $0.message.contains("succeeded") })
    }

    @Test func aDeployWhoseTasksFailIsRolledBack() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web()) }
        c.run(for: .seconds(1))
        let old = Set(c.running.map(\.id))
        c.failing = ["broken"]
        _ = c.ask { .updateService($0, "web", ServiceChange(task: Cluster.web("broken").task)) }
        c.run(for: .seconds(15))
        let deploy = try #require(c.service?.deploy)
        #expect(deploy.state == .rolledBack, "\(deploy)")
        #expect(deploy.reason?.contains("failed before it was healthy") == true, "\(deploy.reason ?? "")")
        #expect(c.running.count == 3 && c.running.allSatisfy { $0.replica?.version == 1 })
        #expect(Set(c.running.map(\.id)) == old, "start-first: the old tasks never stopped")
        #expect(c.service?.version == 1)
    }

    @Test func aFailedReplicaIsReplacedInItsSlotWhateverItsRestartPolicy() throws {
        var c = Cluster()
        var spec = Cluster.web(replicas: 1)
        spec.task.restartPolicy = RestartPolicy(mode: .always)
        _ = c.ask { .createService($0, spec) }
        c.run(for: .seconds(1))
        let first = try #require(c.running.first)
        let node = try #require(first.node)
        let connection = c.connections[node.rawValue == "w1" ? 0 : 1]
        _ = c.feed(.received(connection, .taskStatus(TaskStatus(
            statusID: c.next(), task: first.id, attempt: UInt64(first.attempt), state: .failed, container: first.containerID, exitCode: 137))))
        c.run(for: .seconds(1))
        #expect(c.h.machine.task(first.id)?.state == .failed, "the task is not restarted in place")
        let replacement = try #require(c.running.first)
        #expect(replacement.id != first.id && replacement.replica?.slot == 1)
    }

    @Test func aLostNodesReplicasRunOnTheOtherNode() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web(replicas: 4)) }
        c.run(for: .seconds(1))
        #expect(c.running.filter { $0.node?.rawValue == "w2" }.count == 2)
        // w2 goes silent: after the grace, its tasks are lost and their slots start again on w1.
        let w2 = c.connections.removeLast()
        _ = c.feed(.disconnected(w2))
        c.run(for: .seconds(12))
        #expect(c.running.count == 4 && c.running.allSatisfy { $0.node?.rawValue == "w1" }, "\(c.running.map(\.node))")
        #expect(c.running.map { $0.replica!.slot } == [1, 2, 3, 4])
    }

    @Test func aManagerRestartedMidDeployCarriesItOn() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web()) }
        c.run(for: .seconds(1))
        _ = c.ask { .updateService($0, "web", ServiceChange(task: Cluster.web("v2").task)) }
        c.run(for: .seconds(3))
        #expect(c.service?.deploy?.state == .running)

        // A new machine from what the store holds; the workers dial again with their tasks.
        let snapshot = c.h.snapshot
        #expect(snapshot.services.first?.deploy?.state == .running, "the deploy is stored")
        var restarted = Cluster(snapshot: snapshot)
        restarted.h.now = c.h.now
        let held = c.tasks.filter { $0.state == .running }
        for connection in restarted.connections {
            let node = "w\(connection.rawValue)"
            let entries = held.filter { $0.node?.rawValue == node }.map {
                TaskList.Entry(task: $0.id, attempt: UInt64($0.attempt), state: .running, container: $0.containerID)
            }
            _ = restarted.feed(.received(connection, .taskList(TaskList(entries: entries))))
        }
        restarted.run(for: .seconds(15))
        #expect(restarted.service?.deploy?.state == .succeeded, "\(String(describing: restarted.service?.deploy))")
        #expect(restarted.running.count == 3 && restarted.running.allSatisfy { $0.replica?.version == 2 })
    }

    @Test func rollbackGoesBackToThePreviousVersion() throws {
        var c = Cluster()
        guard case .refused(.serviceNotFound)? = c.ask({ .rollbackService($0, "web") }) else {
            Issue.record("no service yet")
            return
        }
        _ = c.ask { .createService($0, Cluster.web()) }
        guard case .refused(.nothingToRollBack)? = c.ask({ .rollbackService($0, "web") }) else {
            Issue.record("one version only: nothing to roll back to")
            return
        }
        c.run(for: .seconds(1))
        _ = c.ask { .updateService($0, "web", ServiceChange(task: Cluster.web("v2").task)) }
        c.run(for: .seconds(15))
        #expect(c.service?.deploy?.state == .succeeded)
        guard case .service(let record, _, _)? = c.ask({ .rollbackService($0, "web", by: "ops") }) else {
            Issue.record("expected the rollback's answer")
            return
        }
        #expect(record.deploy?.state == .rollingBack && record.version == 1)
        c.run(for: .seconds(15))
        #expect(c.service?.deploy?.state == .rolledBack)
        #expect(c.running.count == 3 && c.running.allSatisfy { $0.spec.command == ["httpd", "v1"] })
        #expect(c.service?.events.contains { $0.message.contains("by token ops") } == true)
        guard case .refused(.nothingToRollBack)? = c.ask({ .rollbackService($0, "web") }) else {
            Issue.record("rolled back already")
            return
        }
    }

    @Test func removingAServiceStopsItsTasksThenForgetsIt() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web()) }
        c.run(for: .seconds(1))
        guard case .service(let record, _, _)? = c.ask({ .removeService($0, "web") }) else {
            Issue.record("expected the removal's answer")
            return
        }
        #expect(record.removing)
        guard case .refused(.serviceRemoving)? = c.ask({ .updateService($0, "web", ServiceChange(replicas: 5)) }) else {
            Issue.record("a service being removed takes no change")
            return
        }
        c.run(for: .seconds(1))
        #expect(c.service == nil)
        #expect(c.tasks.isEmpty)
        #expect(c.h.snapshot.services.isEmpty && c.h.snapshot.tasks.isEmpty, "forgotten in the store too")
        guard case .service(_, true, _)? = c.ask({ .createService($0, Cluster.web()) }) else {
            Issue.record("the name is free again")
            return
        }
    }

    @Test func aServiceWhoseTasksNeverRanIsForgottenAtOnce() throws {
        var c = Cluster()
        var spec = Cluster.web()
        spec.task.resources = Resources(millicores: 64_000, memoryBytes: 64 << 20)
        _ = c.ask { .createService($0, spec) }
        c.run(for: .seconds(1))
        #expect(c.tasks.count == 3 && c.tasks.allSatisfy { $0.state == .pending }, "no node fits: pending")
        guard case .service(let record, _, _)? = c.ask({ .removeService($0, "web") }) else {
            Issue.record("expected the removal's answer")
            return
        }
        #expect(record.removing)
        #expect(c.service == nil && c.tasks.isEmpty, "its tasks end at once, so it is forgotten in the same input, with no wake needed")
    }

    @Test func badRequestsAreRefusedAndChangeNothing() {
        var c = Cluster()
        guard case .refused(.serviceNotFound("web"))? = c.ask({ .updateService($0, "web", ServiceChange(replicas: 2)) }) else {
            Issue.record("unknown service")
            return
        }
        var bad = Cluster.web()
        bad.name = "Not_A_Label"
        bad.replicas = 5000
        guard case .refused(.invalidService(let problems))? = c.ask({ .createService($0, bad) }) else {
            Issue.record("an invalid service is refused")
            return
        }
        #expect(Set(problems.map(\.path)) == ["name", "replicas"])
        _ = c.ask { .createService($0, Cluster.web()) }
        guard case .refused(.invalidService)? = c.ask({ .updateService($0, "web", ServiceChange(name: "other", replicas: 2)) }) else {
            Issue.record("a change naming another service is refused")
            return
        }
        #expect(c.service?.replicas == 3)
        #expect(c.h.machine.service("Not_A_Label") == nil)
    }
}
