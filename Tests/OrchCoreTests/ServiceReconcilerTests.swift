import OrchCore
import Testing

/// The service reconciler, pass by pass, against a small world that carries its plan out:
/// a start is a task that runs at once and turns healthy a second later (or never, for a
/// version told to fail its check); a stop ends the task at the next pass.
@Suite struct ServiceReconcilerTests {
    struct World {
        var replicas: Int
        var version: ServiceVersion = 1
        var update = UpdatePolicy(minHealthyTime: .seconds(2))
        var deploy: Deploy?
        var tasks: [ReplicaView] = []
        var now = Moment.zero
        var nodes = ["n1", "n2", "n3"].map { NodeID(rawValue: $0) }
        /// Versions whose tasks never turn healthy.
        var unhealthy: Set<ServiceVersion> = []
        var next = 0
        /// Every action carried out, with the pass it came from.
        var log: [(at: Moment, action: ServiceReconciler.Action)] = []
        var events: [String] = []

        init(replicas: Int) { self.replicas = replicas }

        var input: ServiceReconciler.Input {
            .init(replicas: replicas, version: version, update: update, deploy: deploy, tasks: tasks, now: now)
        }

        /// One pass: plans, carries the plan out, and moves the clock by `step`.
        @discardableResult
        mutating func pass(step: Duration = .milliseconds(500)) -> ServiceReconciler.Plan {
            // What the last pass asked to stop has ended; what started a second ago is healthy.
            for index in tasks.indices {
                if tasks[index].phase == .stopping { tasks[index].phase = .ended(failed: false) }
                if tasks[index].isLive, tasks[index].healthySince == nil, !unhealthy.contains(tasks[index].version),
                   now - tasks[index].createdAt >= .seconds(1) {
                    tasks[index].healthySince = now
                }
            }
            let plan = ServiceReconciler.plan(input)
            deploy = plan.deploy
            events += plan.events
            for action in plan.actions {
                log.append((now, action))
                switch action {
                case .start(let slot, let version, let avoid):
                    next += 1
                    // As the scheduler places: away from `avoid`, on the node with the fewest replicas.
                    let live = tasks.filter(\.isLive)
                    let load = { (node: NodeID) in live.filter { $0.node == node }.count }
                    let node = nodes.filter { !avoid.contains($0) }.min { load($0) < load($1) } ?? nodes.min { load($0) < load($1) }!
                    tasks.append(ReplicaView(
                        task: TaskID(rawValue: "t\(next)"), slot: slot, version: version, node: node, phase: .live, createdAt: now))
                case .stop(let task, _):
                    if let index = tasks.firstIndex(where: { $0.task == task }) { tasks[index].phase = .stopping }
                }
            }
            now = now + step
            return plan
        }

        /// Passes until the deploy ends (or `limit` passes).
        mutating func runDeploy(limit: Int = 400) {
            for _ in 0..<limit {
                pass()
                if let deploy, !deploy.isActive { return }
            }
        }

        mutating func update(to version: ServiceVersion) {
            deploy = Deploy(from: deploy?.target ?? self.version, to: version, startedAt: now)
            self.version = version
        }

        var live: [ReplicaView] { tasks.filter(\.isLive) }
        func liveSlots(_ version: ServiceVersion? = nil) -> [Int] {
            live.filter { version == nil || $0.version == version }.map(\.slot).sorted()
        }

        /// Never two live tasks of one version in one slot, at any moment of the run.
        func noTwinInASlot() -> Bool {
            Dictionary(grouping: live, by: { "\($0.slot)/\($0.version)" }).values.allSatisfy { $0.count == 1 }
        }

        static func started(_ log: [(at: Moment, action: ServiceReconciler.Action)]) -> [(Moment, Int)] {
            log.compactMap { entry in if case .start(let slot, _, _) = entry.action { (entry.at, slot) } else { nil } }
        }
    }

    /// A world whose `replicas` slots run version 1, all healthy.
    static func steady(_ replicas: Int, update: UpdatePolicy = UpdatePolicy(minHealthyTime: .seconds(2))) -> World {
        var world = World(replicas: replicas)
        world.update = update
        for _ in 0..<8 { world.pass() }
        return world
    }

    @Test func scalingUpStartsTheMissingSlotsAndDownStopsTheHighest() {
        var world = World(replicas: 3)
        let first = world.pass()
        #expect(first.actions.count == 3)
        #expect(world.liveSlots() == [1, 2, 3])
        world.replicas = 5
        world.pass()
        #expect(world.liveSlots() == [1, 2, 3, 4, 5])
        world.replicas = 2
        let down = world.pass()
        let stopped = down.actions.compactMap { if case .stop(let task, let reason) = $0 { (task, reason) } else { nil } }
        #expect(stopped.count == 3 && stopped.allSatisfy { $0.1.contains("scaled down to 2") })
        #expect(world.liveSlots() == [1, 2], "slots 3, 4 and 5 stopped, 1 and 2 kept")
        world.pass()
        #expect(world.pass().actions.isEmpty, "settled")
    }

    @Test func aLostReplicaIsReplacedInItsSlotAwayFromTheOthers() {
        var world = Self.steady(3)
        let lost = world.live.first { $0.slot == 2 }!
        world.tasks[world.tasks.firstIndex(of: lost)!].phase = .ended(failed: true)   // its node died
        let plan = world.pass()
        guard case .start(let slot, let version, let avoid)? = plan.actions.first, plan.actions.count == 1 else {
            Issue.record("expected one start, got \(plan.actions)")
            return
        }
        #expect(slot == 2 && version == 1)
        #expect(avoid == Set(world.live.filter { $0.slot != 2 }.compactMap(\.node)), "the nodes of the live replicas are avoided")
        #expect(world.liveSlots() == [1, 2, 3])
    }

    @Test func everyStartIsToldWhichNodesRunAReplicaAlready() {
        // Spreading is the scheduler's (it places one by one and sees each placement); the
        // reconciler tells it, with every start, the nodes that run a live replica.
        var world = Self.steady(2)
        let holding = Set(world.live.compactMap(\.node))
        #expect(holding.count == 2)
        world.replicas = 5
        let plan = world.pass()
        let avoided = plan.actions.compactMap { if case .start(_, _, let avoid) = $0 { avoid } else { nil } }
        #expect(avoided.count == 3 && avoided.allSatisfy { $0 == holding }, "\(avoided)")
        // Stopping or ended tasks hold no node.
        let stopped = world.live[0]
        world.tasks[world.tasks.firstIndex(of: stopped)!].phase = .ended(failed: true)
        let expected = Set(world.live.compactMap(\.node))
        let again = world.pass()
        let avoid = again.actions.compactMap { if case .start(_, _, let avoid) = $0 { avoid } else { nil } }
        #expect(avoid == [expected], "the replacement avoids the nodes of the live replicas only: \(avoid)")
    }

    @Test(arguments: [1, 2])
    func startFirstRollsParallelismSlotsAtATimeAndStopsEachOldTaskOnceTheNewIsHealthy(parallelism: Int) {
        var world = Self.steady(4, update: UpdatePolicy(parallelism: parallelism, order: .startFirst, minHealthyTime: .seconds(2)))
        let began = world.now
        world.update(to: 2)
        var mostInFlight = 0
        var fewestLive = Int.max
        for _ in 0..<200 {
            world.pass()
            let inFlight = world.live.filter { $0.version == 2 && ($0.healthySince.map { world.now - $0 < .seconds(2) } ?? true) }.count
            mostInFlight = max(mostInFlight, inFlight)
            fewestLive = min(fewestLive, Set(world.live.map(\.slot)).count)
            #expect(world.noTwinInASlot())
            if world.deploy?.isActive == false { break }
        }
        #expect(world.deploy?.state == .succeeded, "\(world.events)")
        #expect(world.liveSlots(2) == [1, 2, 3, 4] && world.liveSlots(1).isEmpty)
        #expect(mostInFlight <= parallelism, "at most \(parallelism) new tasks not yet healthy at once, saw \(mostInFlight)")
        #expect(fewestLive == 4, "start-first: never fewer than 4 slots served")
        // Slot by slot, lowest first, in batches of `parallelism`.
        let starts = World.started(world.log.filter { $0.at >= began }).map(\.1)
        #expect(starts == [1, 2, 3, 4], "\(starts)")
    }

    @Test(arguments: [1, 2])
    func stopFirstStopsTheOldTaskBeforeItsSlotStartsAgain(parallelism: Int) {
        var world = Self.steady(4, update: UpdatePolicy(parallelism: parallelism, order: .stopFirst, minHealthyTime: .seconds(2)))
        world.update(to: 2)
        var mostLive = 0
        var mostDown = 0
        for _ in 0..<200 {
            world.pass()
            mostLive = max(mostLive, world.live.count)
            mostDown = max(mostDown, 4 - Set(world.live.map(\.slot)).count)
            #expect(world.noTwinInASlot())
            if world.deploy?.isActive == false { break }
        }
        #expect(world.deploy?.state == .succeeded, "\(world.events)")
        #expect(world.liveSlots(2) == [1, 2, 3, 4])
        #expect(mostLive <= 4, "stop-first: never more than 4 tasks")
        #expect(mostDown == parallelism, "\(parallelism) slots down at a time, saw \(mostDown)")
    }

    @Test func aDeployWhoseTasksAreNotHealthyInTimeFailsAndRollsBack() {
        var world = Self.steady(3, update: UpdatePolicy(healthyDeadline: .seconds(5), minHealthyTime: .seconds(2)))
        world.unhealthy = [2]
        world.update(to: 2)
        world.runDeploy()
        #expect(world.deploy?.state == .rolledBack, "\(world.events)")
        #expect(world.deploy?.reason?.contains("not healthy within 5s") == true, "\(String(describing: world.deploy?.reason))")
        #expect(world.events.contains { $0.contains("rolling back to version 1") })
        #expect(world.liveSlots(1) == [1, 2, 3] && world.liveSlots(2).isEmpty, "every slot back on version 1")
        // Start-first, parallelism 1: only slot 1 ever got a task of version 2.
        #expect(world.tasks.filter { $0.version == 2 }.map(\.slot) == [1])
    }

    @Test func withoutAutoRollbackAFailedDeployStopsWhereItIs() {
        var world = Self.steady(3, update: UpdatePolicy(healthyDeadline: .seconds(5), minHealthyTime: .seconds(2), autoRollback: false))
        world.unhealthy = [2]
        world.update(to: 2)
        world.runDeploy()
        #expect(world.deploy?.state == .failed)
        for _ in 0..<20 { world.pass() }
        #expect(world.liveSlots(1) == [1, 2, 3], "the old replicas keep serving")
        #expect(world.tasks.filter { $0.version == 2 }.count == 1, "no further slot is touched")
    }

    @Test func aRollbackThatFailsTooKeepsTheOldVersion() {
        // Stop-first: slot 1's old task is gone, so the rollback must start a new one, which fails too.
        var world = Self.steady(3, update: UpdatePolicy(order: .stopFirst, healthyDeadline: .seconds(5), minHealthyTime: .seconds(2)))
        world.unhealthy = [1, 2]
        world.update(to: 2)
        world.runDeploy()
        #expect(world.deploy?.state == .failed && world.deploy?.rollback == true, "\(world.events)")
        #expect(world.deploy?.reason?.contains("the rollback to version 1 failed too") == true)
        #expect(world.deploy?.target == 1, "a failed rollback keeps targeting the old version")
        for _ in 0..<20 { world.pass() }
        #expect(!world.live.contains { $0.version == 2 && $0.createdAt > world.deploy!.startedAt + .seconds(30) }, "no new task of the failed version")
    }

    /// The pass that the healthy deadline wakes, at the deadline itself, fails the deploy: it
    /// was judged as not late yet, and no later wake was asked for (a rollback stayed
    /// rolling back for good; simulator seed 182 with services).
    @Test func aTaskStillUnhealthyAtItsDeadlineFailsTheDeployThen() {
        let deadline = Duration.seconds(14)
        let created = Moment.zero + .seconds(17)
        let task = ReplicaView(task: TaskID(rawValue: "t2"), slot: 1, version: 2, node: NodeID(rawValue: "n1"), phase: .live, createdAt: created)
        let deploy = Deploy(from: 2, to: 6, state: .rollingBack, startedAt: .zero + .seconds(9), rollback: true)
        let input = { (now: Moment) in
            ServiceReconciler.Input(
                replicas: 1, version: 6, update: UpdatePolicy(order: .stopFirst, healthyDeadline: deadline, minHealthyTime: .seconds(2)),
                deploy: deploy, tasks: [task], now: now)
        }
        let before = ServiceReconciler.plan(input(created + deadline - .milliseconds(1)))
        #expect(before.deploy?.state == .rollingBack)
        #expect(before.wake == created + deadline, "woken at the deadline")
        let at = ServiceReconciler.plan(input(created + deadline))
        #expect(at.deploy?.state == .failed, "\(at)")
        #expect(at.deploy?.reason?.contains("not healthy within 14s") == true)
    }

    @Test func aPlanNeverAsksToBeWokenAtADeadlineAlreadyPast() {
        // A replica not healthy within its deadline while no deploy runs: nothing to wait for.
        let task = ReplicaView(task: TaskID(rawValue: "t1"), slot: 1, version: 1, node: NodeID(rawValue: "n1"), phase: .live, createdAt: .zero)
        let plan = ServiceReconciler.plan(.init(
            replicas: 1, version: 1, update: UpdatePolicy(healthyDeadline: .seconds(60)), deploy: nil, tasks: [task], now: .zero + .seconds(100)))
        #expect(plan.wake == nil, "a wake at \(String(describing: plan.wake)) would come due at once, again and again")
        var world = Self.steady(3)
        world.unhealthy = [2]
        world.update(to: 2)
        for _ in 0..<200 {
            let plan = world.pass()
            if let wake = plan.wake { #expect(wake > world.now - .milliseconds(500), "a wake in the past") }
        }
    }

    @Test func aSecondUpdateSupersedesTheFirst() {
        var world = Self.steady(3)
        world.update(to: 2)
        // Part of the way: slot 1 on version 2.
        for _ in 0..<100 where world.liveSlots(1) != [2, 3] { world.pass() }
        #expect(world.liveSlots(1) == [2, 3] && world.liveSlots(2) == [1, 2], "part of the way: \(world.live)")
        world.update(to: 3)
        #expect(world.deploy == Deploy(from: 2, to: 3, startedAt: world.now))
        world.runDeploy()
        #expect(world.deploy?.state == .succeeded, "\(world.events)")
        #expect(world.liveSlots(3) == [1, 2, 3] && world.live.count == 3)
        #expect(world.tasks.filter { $0.version == 2 }.map(\.slot) == [1, 2], "version 2 never reached slot 3")
    }

    @Test func twoLiveTasksOfOneVersionInASlotAreOneAgain() {
        var world = Self.steady(2)
        var twin = world.live.first { $0.slot == 1 }!
        twin.task = TaskID(rawValue: "twin")
        twin.healthySince = nil
        world.tasks.append(twin)
        let plan = world.pass()
        #expect(plan.actions == [.stop(TaskID(rawValue: "twin"), reason: "a second task of version 1 in slot 1")])
    }
}
