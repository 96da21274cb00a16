/// Which tasks of a service to start and stop, from the service and its tasks: pure, like
/// the schedulers (the manager's machine carries the plan out and feeds the result back).
///
/// - Slots `1...replicas` each want one live task of the target version; slots above are
///   stopped (scaling down stops the highest slots). A slot without a live task gets one,
///   whatever the template's restart policy says: the service replaces its replicas.
/// - A deploy rolls `parallelism` slots at a time, in its `order`. A slot is done when its
///   new task has been healthy for `minHealthyTime`; then (start-first) its old task stops and
///   the next slot may begin. A new task not healthy within `healthyDeadline`, or that fails,
///   fails the deploy; with `autoRollback` the same rolling takes the slots back to the
///   previous version. A second update is a new deploy from the current target: the tasks of
///   the version it supersedes are then simply outdated.
/// - Never two live tasks of one version in one slot.
public enum ServiceReconciler {
    public struct Input: Sendable {
        public var replicas: Int
        /// The service's current version (the target when no deploy says otherwise).
        public var version: ServiceVersion
        public var update: UpdatePolicy
        public var deploy: Deploy?
        /// Every task of the service that is not forgotten: live, stopping and ended.
        public var tasks: [ReplicaView]
        public var now: Moment

        public init(replicas: Int, version: ServiceVersion, update: UpdatePolicy, deploy: Deploy?, tasks: [ReplicaView], now: Moment) {
            self.replicas = replicas
            self.version = version
            self.update = update
            self.deploy = deploy
            self.tasks = tasks
            self.now = now
        }
    }

    public enum Action: Sendable, Hashable {
        /// A new task for the slot; `avoid` holds the nodes that run a live replica already
        /// (the scheduler places elsewhere while another node fits).
        case start(slot: Int, version: ServiceVersion, avoid: Set<NodeID>)
        case stop(TaskID, reason: String)
    }

    public struct Plan: Sendable, Hashable {
        public var actions: [Action] = []
        /// The deploy as it stands after this pass.
        public var deploy: Deploy?
        /// What changed about the deploy, for the service's events.
        public var events: [String] = []
        /// When to plan again even if nothing happens (a minimum healthy time or a deadline).
        public var wake: Moment?
    }

    public static func plan(_ input: Input) -> Plan {
        var plan = Plan(deploy: input.deploy)
        if var deploy = input.deploy, deploy.isActive, let failure = deployFailure(input, deploy: deploy) {
            switch deploy.state {
            case .running where input.update.autoRollback:
                deploy.state = .rollingBack
                deploy.rollback = true
                deploy.reason = failure
                plan.events.append("deploy of version \(deploy.to) failed: \(failure); rolling back to version \(deploy.from)")
            case .rollingBack:
                deploy.state = .failed
                deploy.reason = "the rollback to version \(deploy.from) failed too: \(failure)"
                plan.events.append(deploy.reason!)
            default:
                deploy.state = .failed
                deploy.reason = failure
                plan.events.append("deploy of version \(deploy.to) failed: \(failure)")
            }
            plan.deploy = deploy
        }
        let deploy = plan.deploy
        let target = deploy?.target ?? input.version
        let rolling = deploy?.isActive ?? false
        let now = input.now
        let minimum = input.update.minHealthyTime
        func stable(_ task: ReplicaView) -> Bool {
            guard let since = task.healthySince else { return false }
            return now - since >= minimum
        }
        // Only a moment to come: a deadline already past (a task not healthy in time while no
        // deploy runs) is nothing to wait for, and asking for it would wake the machine at once, again and again.
        func wake(_ moment: Moment) {
            guard moment > now else { return }
            plan.wake = min(plan.wake ?? moment, moment)
        }

        let live = input.tasks.filter(\.isLive)
        let avoid = Set(live.compactMap(\.node))
        var bySlot: [Int: [ReplicaView]] = [:]
        for task in input.tasks where !task.hasEnded {
            bySlot[task.slot, default: []].append(task)
        }

        // Scaled down: the slots above the count stop, highest first.
        for task in live.filter({ $0.slot > input.replicas }).sorted(by: { ($0.slot, $0.task) > ($1.slot, $1.task) }) {
            plan.actions.append(.stop(task.task, reason: "scaled down to \(input.replicas)"))
        }

        var inFlight = 0
        var outdated: [(slot: Int, tasks: [ReplicaView])] = []
        var settled = true
        for slot in stride(from: 1, through: input.replicas, by: 1) {
            let tasks = bySlot[slot] ?? []
            var current = tasks.filter { $0.isLive && $0.version == target }
                .sorted { ($0.healthySince ?? Moment(nanoseconds: .max), $0.createdAt, $0.task) < ($1.healthySince ?? Moment(nanoseconds: .max), $1.createdAt, $1.task) }
            let old = tasks.filter { $0.isLive && $0.version != target }
            let stopping = tasks.contains { $0.phase == .stopping }
            // One live task of a version in a slot: the most advanced stays.
            while current.count > 1 {
                let extra = current.removeLast()
                plan.actions.append(.stop(extra.task, reason: "a second task of version \(target) in slot \(slot)"))
            }
            if let new = current.first {
                if stable(new) {
                    for task in old {
                        plan.actions.append(.stop(task.task, reason: "replaced by version \(target) in slot \(slot)"))
                    }
                    if !old.isEmpty { settled = false }
                } else {
                    settled = false
                    if rolling { inFlight += 1 }
                    if let since = new.healthySince { wake(since + minimum) } else { wake(new.createdAt + input.update.healthyDeadline) }
                }
                continue
            }
            settled = false
            if old.isEmpty {
                // No live task: the slot gets one, unless (stop-first) its old one still stops.
                if stopping && rolling && input.update.order == .stopFirst {
                    inFlight += 1
                    continue
                }
                if let due = replacementDue(slot, input.tasks), due > now {
                    wake(due)
                    if rolling { inFlight += 1 }
                    continue
                }
                plan.actions.append(.start(slot: slot, version: target, avoid: avoid))
                if rolling { inFlight += 1 }
                continue
            }
            outdated.append((slot, old))
        }

        if rolling {
            var budget = max(1, input.update.parallelism) - inFlight
            for (slot, old) in outdated where budget > 0 {
                budget -= 1
                switch input.update.order {
                case .startFirst:
                    plan.actions.append(.start(slot: slot, version: target, avoid: avoid))
                case .stopFirst:
                    for task in old { plan.actions.append(.stop(task.task, reason: "updating slot \(slot) to version \(target)")) }
                }
            }
            let above = live.contains { $0.slot > input.replicas }
            if settled, outdated.isEmpty, !above, var finished = plan.deploy {
                finished.state = finished.state == .rollingBack ? .rolledBack : .succeeded
                plan.events.append(finished.state == .succeeded
                    ? "deploy of version \(finished.to) succeeded: \(input.replicas) replicas healthy"
                    : "rolled back to version \(finished.from)")
                plan.deploy = finished
            }
        }
        return plan
    }

    /// A task that ran healthy this long before it failed does not count towards a slot's backoff.
    public static let settledRun = Duration.seconds(10)
    public static let maximumBackoff = Duration.seconds(30)

    /// When a slot whose tasks keep failing may get its next one: at once after one failure,
    /// then 1 s, 2 s, 4 s... (at most ``maximumBackoff``) after the last of consecutive
    /// failures of tasks that never ran healthy for ``settledRun``.
    static func replacementDue(_ slot: Int, _ tasks: [ReplicaView]) -> Moment? {
        let ended = tasks.filter { $0.slot == slot && $0.hasEnded }.sorted { ($0.createdAt, $0.task) > ($1.createdAt, $1.task) }
        var failures = 0
        for task in ended {
            guard task.phase == .ended(failed: true) else { break }
            if let since = task.healthySince, let end = task.endedAt, end - since >= settledRun { break }
            failures += 1
        }
        guard failures >= 2, let last = ended.first?.endedAt else { return nil }
        let delay = Duration.seconds(1 << min(failures - 2, 5))
        return last + min(delay, maximumBackoff)
    }

    /// Why the deploy fails now, if it does: a task of its target that failed, or that is
    /// not healthy within the deadline.
    static func deployFailure(_ input: Input, deploy: Deploy) -> String? {
        let target = deploy.target
        let ours = input.tasks.filter { $0.version == target && $0.slot <= input.replicas && $0.createdAt >= deploy.startedAt }
        for task in ours.sorted(by: { ($0.slot, $0.task) < ($1.slot, $1.task) }) {
            if task.phase == .ended(failed: true), task.healthySince == nil || (task.endedAt ?? input.now) - task.healthySince! < input.update.minHealthyTime {
                return "task \(task.task) (slot \(task.slot)) failed before it was healthy" + (task.error.map { " (\($0))" } ?? "")
            }
            // At the deadline itself, not after it: the pass the deadline wakes must be the one that fails it.
            if task.isLive, task.healthySince == nil, input.now - task.createdAt >= input.update.healthyDeadline {
                return "task \(task.task) (slot \(task.slot)) was not healthy within \(DurationText.format(input.update.healthyDeadline))"
            }
        }
        return nil
    }
}
