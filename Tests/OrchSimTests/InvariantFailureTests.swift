import OrchCore
@testable import OrchControl
@testable import OrchSim
import Testing

/// Every invariant can fail: each test breaks the shell (a sabotaged engine, network or
/// store) or doctors the state of a running simulation, and expects exactly that invariant
/// to be reported. None of them passes vacuously.
@Suite("Each invariant can fail")
struct InvariantFailureTests {
    static let spec = TaskSpec(image: "busybox:1.36", environment: [Behaviour.key: "forever"], resources: Resources(millicores: 100, memoryBytes: 32 << 20))

    /// A quiet cluster with at least one task of the kind asked for running.
    func clusterRunning(where wanted: (TaskRecord) -> Bool) -> (Simulation, TaskRecord)? {
        for seed in UInt64(1)...40 {
            let simulation = quietCluster(seed: seed)
            guard simulation.violations.isEmpty, let machine = simulation.manager?.machine else { continue }
            let table = machine.taskTable
            if let record = table.order.compactMap({ table.tasks[$0] }).first(where: { $0.state == .running && wanted($0) }) {
                return (simulation, record)
            }
        }
        return nil
    }

    func index(of node: NodeID?, in simulation: Simulation) -> Int {
        simulation.nodes.firstIndex { $0.id == node }!
    }

    // MARK: - one-current-attempt

    @Test("one-current-attempt: two running containers of one task on a node")
    func twoContainersOnANode() {
        let simulation = Simulation(seed: 7, workers: 3, steps: 400)
        simulation.faults = .none
        simulation.sabotage.startTwice = true
        let violation = simulation.run().violations.first
        #expect(violation?.invariant == .oneCurrentAttempt)
        #expect(violation?.message.contains("runs two containers") == true)
    }

    @Test("one-current-attempt: a stale container runs on while its worker hears from the manager")
    func staleContainerWhileInContact() throws {
        let simulation = quietCluster(seed: 3)
        try #require(simulation.violations.isEmpty)
        // A container of a task the manager never had, on a connected node.
        simulation.injectRunningContainer(task: TaskID(rawValue: "ghost"), attempt: 1, spec: Self.spec, on: 0)
        let early = simulation.runUntilViolation(or: simulation.now + .seconds(10))
        #expect(early == nil, "the bound (the stop grace period and 3 s) has not passed yet")
        let violation = simulation.runUntilViolation(or: simulation.now + .seconds(10))
        #expect(violation?.invariant == .oneCurrentAttempt)
        #expect(violation?.message.contains("still runs stale") == true)
    }

    @Test("one-current-attempt: stops that never arrive leave an older attempt running")
    func stopsLost() throws {
        // Health checks that turn unhealthy make the manager end the attempt and stop it;
        // with every stop_task lost, the old container runs on beside the new attempt.
        var found: Violation?
        for seed in UInt64(1)...60 where found == nil {
            let simulation = Simulation(seed: seed, workers: 3, steps: 600)
            simulation.faults = .none
            simulation.sabotage.dropStops = true
            simulation.maximumQuiet = .seconds(60)
            found = simulation.run().violations.first { $0.invariant == .oneCurrentAttempt }
        }
        let violation = try #require(found)
        #expect(violation.message.contains("stale"))
    }

    // MARK: - valid-workers-admitted

    @Test("valid-workers-admitted: a worker refused for good")
    func workerRefusedForGood() {
        let simulation = Simulation(seed: 5, workers: 2, steps: 100)
        simulation.faults = .none
        simulation.sabotage.helloFromTheFuture = true
        let violation = simulation.run().violations.first
        #expect(violation?.invariant == .validWorkersAdmitted)
        #expect(violation?.message.contains("refused for good") == true)
    }

    // MARK: - impostors-refused

    @Test("impostors-refused: a shell that takes the hello's word for the certificate's")
    func impostorWelcomed() {
        let results = runSeeds(0..<40, steps: 400) { simulation in
            simulation.faults.impostors = true
            simulation.sabotage.trustTheHello = true
        }
        let violations = results.compactMap(\.violations.first)
        #expect(!violations.isEmpty && violations.allSatisfy { $0.invariant == .impostorsRefused }, "\(violations.prefix(3).map(\.description))")
    }

    // MARK: - drained-node-gets-nothing

    @Test("drained-node-gets-nothing: a store that keeps nodes but forgets their drains")
    func storeForgetsDrains() {
        let results = runSeeds(0..<40, steps: 400) { simulation in
            simulation.faults.operators = true
            simulation.sabotage.storeForgetsDrains = true
        }
        let violations = results.compactMap(\.violations.first)
        #expect(!violations.isEmpty && violations.allSatisfy { $0.invariant == .drainedNodeGetsNothing }, "\(violations.prefix(3).map(\.description))")
    }

    // MARK: - no-stale-commit

    @Test("no-stale-commit: a store that commits a deposed leader's batches")
    func storeIgnoresTheFence() {
        let results = runSeeds(0..<40, steps: 1500) { simulation in
            simulation.faults.leaderChanges = true
            simulation.sabotage.storeIgnoresFence = true
        }
        let violations = results.compactMap(\.violations.first)
        #expect(!violations.isEmpty, "no run had a deposed leader commit")
        #expect(violations.contains { $0.invariant == .noStaleCommit }, "\(violations.prefix(3).map(\.description))")
    }

    @Test("acts-within-lease: lease keepers that act for 8 s after a renewal, past the 6 s lease")
    func actingPastTheLease() {
        let results = runSeeds(0..<40, steps: 1500) { simulation in
            simulation.faults.leaderChanges = true
            simulation.sabotage.actPastTheLease = true
        }
        let violations = results.compactMap(\.violations.first)
        #expect(violations.contains { $0.invariant == .actsWithinLease }, "\(violations.prefix(3).map(\.description))")
    }

    // MARK: - one-task-per-slot-version

    @Test("one-task-per-slot-version: a store that keeps every new replica twice")
    func storeKeepsReplicasTwice() {
        let simulation = Simulation(seed: 3, workers: 3, steps: 300)
        simulation.faults = .none
        simulation.faults.services = true
        simulation.sabotage.duplicateReplicas = true
        let violation = simulation.run().violations.first
        #expect(violation?.invariant == .oneTaskPerSlotVersion)
        #expect(violation?.message.contains("the store holds two live tasks") == true)
    }

    @Test("one-task-per-slot-version: a manager with a second live task in a slot")
    func secondTaskInASlot() throws {
        let simulation = quietCluster(seed: 3, services: true)
        try #require(simulation.violations.isEmpty)
        let machine = try #require(simulation.manager?.machine)
        let name = try #require(machine.serviceNames.first { !machine.liveReplicas(of: $0).isEmpty })
        let replica = try #require(machine.liveReplicas(of: name).first)
        // The copy the store sabotage above leaves, put in the machine directly.
        var copy = try #require(machine.task(replica.task))
        copy.id = TaskID(rawValue: replica.task.rawValue + "-copy")
        copy.spec.id = copy.id
        simulation.manager?.machine.tasks[copy.id] = copy
        simulation.manager?.machine.serviceTasks[name]?.insert(copy.id)
        simulation.checkAfterStep()
        #expect(simulation.violations.first?.invariant == .oneTaskPerSlotVersion)
        #expect(simulation.violations.first?.message.contains("service \(name) has two live tasks of version \(replica.version) in slot \(replica.slot)") == true)
    }

    // MARK: - service-replicas-kept

    @Test("service-replicas-kept: an engine that cannot start a service's containers")
    func replicasNeverStart() throws {
        let simulation = Simulation(seed: 2, workers: 3, steps: 300)
        simulation.faults = .none
        simulation.faults.services = true
        simulation.sabotage.replicaStartsFail = true
        simulation.maximumQuiet = .seconds(40)
        let violation = try #require(simulation.run().violations.first)
        #expect(violation.invariant == .serviceReplicasKept, "\(violation)")
    }

    @Test("converged: workers' load balancers whose tables were lost on the way")
    func meshTablesLost() throws {
        // Without faults, so that only the lost tables can leave a worker behind; some seeds
        // publish no port, so the first of a few that does.
        var found: Violation?
        for seed in UInt64(1)...8 where found == nil {
            let simulation = Simulation(seed: seed, workers: 3, steps: 1000)
            simulation.faults = .none
            simulation.faults.services = true
            simulation.sabotage.dropServiceTables = true
            found = simulation.run().violations.first
        }
        let violation = try #require(found)
        #expect(violation.invariant == .converged && violation.message.contains("load balancer holds other tables"), "\(violation)")
    }

    @Test("service-replicas-kept: a scale the manager does not act on")
    func scaleNotActedOn() throws {
        // A fault-free cluster with services whose end state holds, after its quiet phase.
        var settled: (Simulation, String)?
        for seed in UInt64(1)...20 where settled == nil {
            let simulation = quietCluster(seed: seed, services: true)
            simulation.beginQuiet()
            simulation.advance(until: simulation.now + .seconds(60))
            guard simulation.violations.isEmpty, simulation.finalViolations().isEmpty,
                  let name = simulation.manager?.machine.serviceNames.first(where: { (simulation.manager?.machine.service($0)?.replicas ?? 0) > 0 }) else { continue }
            settled = (simulation, name)
        }
        let (simulation, name) = try #require(settled)
        let replicas = try #require(simulation.manager?.machine.service(name)?.replicas)
        // One more replica in the record, and no pass of the reconciler for it.
        simulation.manager?.machine.services[name]?.replicas = replicas + 1
        let problems = simulation.finalViolations()
        #expect(problems.first?.0 == .serviceReplicasKept)
        #expect(problems.first?.1.contains("has no live task in slot \(replicas + 1)") == true, "\(problems.map(\.1))")
    }

    // MARK: - no-duplicate-with-stopAfter

    @Test("no-duplicate-with-stopAfter: a second running container of a task with stopAfter")
    func duplicateWithStopAfter() throws {
        let (simulation, record) = try #require(clusterRunning { $0.spec.disconnect != nil })
        let here = index(of: record.node, in: simulation)
        simulation.injectRunningContainer(task: record.id, attempt: UInt64(record.attempt), spec: record.spec, on: (here + 1) % 3)
        let violation = simulation.runUntilViolation(or: simulation.now + .seconds(1))
        #expect(violation?.invariant == .noDuplicateWithStopAfter)
    }

    @Test("no-duplicate-with-stopAfter does not apply to tasks without a disconnect policy")
    func duplicateWithoutStopAfterIsAllowed() throws {
        let (simulation, record) = try #require(clusterRunning { $0.spec.disconnect == nil })
        let here = index(of: record.node, in: simulation)
        simulation.injectRunningContainer(task: record.id, attempt: UInt64(record.attempt), spec: record.spec, on: (here + 1) % 3)
        #expect(simulation.runUntilViolation(or: simulation.now + .seconds(1)) == nil)
    }

    // MARK: - acknowledged-task-kept

    @Test("acknowledged-task-kept: a store that says committed but keeps no new task")
    func storeForgetsTasks() {
        let simulation = Simulation(seed: 11, workers: 3, steps: 300)
        simulation.faults = .none
        simulation.sabotage.storeForgetsTasks = true
        let violation = simulation.run().violations.first
        #expect(violation?.invariant == .acknowledgedTaskKept)
        #expect(violation?.message.contains("not in the store") == true)
    }

    @Test("acknowledged-task-kept: a restarted manager that lost an acknowledged task")
    func managerLosesTask() throws {
        let simulation = quietCluster(seed: 4)
        let id = try #require(simulation.clients.acknowledged.keys.sorted().first)
        // The store keeps it, but the manager restarts from a snapshot without it.
        let kept = simulation.store.tasks[id]
        simulation.crashManager()
        simulation.store.tasks[id] = nil
        _ = simulation.restartManager()
        simulation.store.tasks[id] = kept
        try #require(simulation.violations.isEmpty)
        simulation.checkAfterStep()
        #expect(simulation.violations.first?.invariant == .acknowledgedTaskKept)
        #expect(simulation.violations.first?.message.contains("does not have it") == true)
    }

    // MARK: - reservations-within-capacity

    @Test("reservations-within-capacity: a node that comes back with less capacity than it holds")
    func capacityShrinks() throws {
        let simulation = quietCluster(seed: 5)
        try #require(simulation.violations.isEmpty)
        simulation.sabotage.shrinkCapacityOnRestart = true
        let machine = try #require(simulation.manager?.machine)
        let busiest = try #require(machine.reservations.max { $0.reserved.millicores < $1.reserved.millicores })
        try #require(busiest.reserved.millicores > Int(Simulation.workerMillicores) / 10)
        simulation.crashWorker(index(of: busiest.node, in: simulation), downFor: .milliseconds(500))
        let violation = simulation.runUntilViolation(or: simulation.now + .seconds(3))
        #expect(violation?.invariant == .reservationsWithinCapacity)
    }

    // MARK: - stopped-stays-stopped

    /// Stops a running task as a client would and waits for the answer.
    func stopped() throws -> (Simulation, TaskRecord) {
        let (simulation, record) = try #require(clusterRunning { _ in true })
        let request = RequestID(rawValue: 999_999)
        simulation.clients.pending[request] = .init(spec: nil, task: record.id, kind: .new, at: simulation.now)
        _ = simulation.feedManager(.stop(request, record.id))
        simulation.advance(until: simulation.now + .seconds(1))
        try #require(simulation.clients.stopped[record.id] != nil)
        try #require(simulation.violations.isEmpty)
        return (simulation, record)
    }

    @Test("stopped-stays-stopped: a worker told to start a newer attempt after the stop")
    func startAfterStop() throws {
        let (simulation, record) = try stopped()
        simulation.applyWorker(index(of: record.node, in: simulation), .start(record.id, attempt: UInt64(record.attempt + 1), spec: record.spec))
        #expect(simulation.violations.first?.invariant == .stoppedStaysStopped)
    }

    @Test("stopped-stays-stopped: the store forgets the stop")
    func storeForgetsStop() throws {
        let (simulation, record) = try stopped()
        simulation.store.tasks[record.id]?.desiredState = .run
        let violation = simulation.runUntilViolation(or: simulation.now + .seconds(1))
        #expect(violation?.invariant == .stoppedStaysStopped)
    }

    @Test("stopped-stays-stopped: the manager runs the task again")
    func managerForgetsStop() throws {
        let (simulation, record) = try stopped()
        simulation.manager?.machine.tasks[record.id]?.desiredState = .run
        let violation = simulation.runUntilViolation(or: simulation.now + .seconds(1))
        #expect(violation?.invariant == .stoppedStaysStopped)
    }

    // MARK: - no-forgotten-pending

    @Test("no-forgotten-pending: a pending task taken out of every queue")
    func forgottenPending() throws {
        let simulation = quietCluster(seed: 6)
        try #require(simulation.violations.isEmpty)
        var huge = Self.spec
        huge.id = TaskID(rawValue: "too-big")
        huge.resources = Resources(millicores: 100_000, memoryBytes: 64 << 20)
        let request = RequestID(rawValue: 999_998)
        simulation.clients.pending[request] = .init(spec: huge, task: huge.id, kind: .new, at: simulation.now)
        _ = simulation.feedManager(.submit(request, huge))
        simulation.advance(until: simulation.now + .seconds(1))
        try #require(simulation.violations.isEmpty)
        try #require(simulation.manager?.machine.task(huge.id!)?.state == .pending)
        simulation.manager?.machine.blocked.removeAll { $0 == huge.id }
        simulation.manager?.machine.ready.removeAll { $0 == huge.id }
        simulation.checkAfterStep()
        #expect(simulation.violations.first?.invariant == .noForgottenPending)
    }

    // MARK: - The extra ones

    @Test("submission-answers-consistent: an acknowledged id accepted again with another spec")
    func conflictMissed() throws {
        let simulation = quietCluster(seed: 8)
        let id = try #require(simulation.clients.acknowledged.keys.sorted().first)
        let record = try #require(simulation.manager?.machine.task(id))
        var other = record
        other.spec = Workload.altered(record.spec)
        let request = RequestID(rawValue: 999_997)
        simulation.clients.pending[request] = .init(spec: other.spec, task: id, kind: .again(sameSpec: false), at: simulation.now)
        simulation.answered(request, .submitted(other, created: false, revision: 1))
        #expect(simulation.violations.first?.invariant == .submissionAnswersConsistent)
    }

    @Test("store-batches-in-order: a batch that skips a sequence number")
    func batchOutOfOrder() {
        let simulation = quietCluster(seed: 9)
        simulation.persist(StoreBatch(sequence: simulation.store.lastSequence + 2, changes: []))
        #expect(simulation.violations.first?.invariant == .storeBatchesInOrder)
    }

    // MARK: - The end state

    @Test("terminal-statuses-acknowledged: a network that loses every ack")
    func acksLost() throws {
        var found: Violation?
        for seed in UInt64(1)...10 where found == nil {
            let simulation = Simulation(seed: seed, workers: 3, steps: 300)
            simulation.faults = .none
            simulation.sabotage.dropAcks = true
            simulation.maximumQuiet = .seconds(40)
            found = simulation.run().violations.first
        }
        let violation = try #require(found)
        #expect(violation.invariant == .terminalStatusesAcknowledged)
    }

    @Test("converged: starts that are never answered leave tasks scheduled")
    func startsHang() {
        let simulation = Simulation(seed: 12, workers: 3, steps: 200)
        simulation.faults = .none
        simulation.sabotage.startsHang = true
        simulation.maximumQuiet = .seconds(30)
        let violation = simulation.run().violations.first
        #expect(violation?.invariant == .converged)
        #expect(violation?.message.contains("still scheduled") == true)
    }

    @Test("converged: a container the manager does not know runs on at the end")
    func orphanAtTheEnd() throws {
        let simulation = quietCluster(seed: 3)
        try #require(simulation.violations.isEmpty)
        simulation.beginQuiet()
        simulation.advance(until: simulation.now + .seconds(2))
        var ghost = Self.spec
        ghost.stopGracePeriod = .seconds(600)   // keeps one-current-attempt out of the way
        simulation.injectRunningContainer(task: TaskID(rawValue: "ghost"), attempt: 1, spec: ghost, on: 1)
        simulation.maximumQuiet = .seconds(30)
        let violation = simulation.runUntilViolation(or: simulation.now + .seconds(60))
        #expect(violation?.invariant == .converged)
        #expect(violation?.message.contains("does not have") == true)
    }

    @Test("a fault-free cluster with services has no violations and settles")
    func faultFreeWithServices() {
        let results = runSeeds(100..<120, steps: 500) { simulation in
            simulation.faults = .none
            simulation.faults.services = true
        }
        for result in results {
            #expect(result.violations.isEmpty, "seed \(result.seed): \(result.violations.first.map(\.description) ?? "")")
        }
        #expect(results.reduce(0) { $0 + $1.counters.serviceAnswers } > 20 * 3)
    }

    @Test("a fault-free cluster has no violations and settles")
    func faultFree() {
        let results = runSeeds(100..<120, steps: 500) { $0.faults = .none }
        for result in results {
            #expect(result.violations.isEmpty, "seed \(result.seed): \(result.violations.first.map(\.description) ?? "")")
            #expect(result.counters.quietTime < .seconds(60), "seed \(result.seed) took \(result.counters.quietTime) to settle")
        }
    }
}
