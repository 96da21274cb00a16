import Foundation
import OrchCore

/// Services: their requests, and the pass that keeps each one's replicas as its
/// `ServiceReconciler` plan says (docs/SERVICES.md).
///
/// A service's tasks are ordinary tasks that carry their slot (`TaskRecord.replica`); their
/// restart policy is not applied: an ended replica stays ended and the service starts a new
/// task in its slot. Any change to one of its tasks marks the service for the pass at the
/// end of the input; a service's own deadlines (a minimum healthy time, a health deadline, a
/// slot's backoff) wake the machine for it.
extension ManagerMachine {
    /// Ended tasks kept per slot (for `service ps` and a slot's backoff); older ones are forgotten.
    public static let endedTasksPerSlot = 5

    // MARK: - Requests

    mutating func createService(_ spec: ServiceSpec, request: RequestID, by caller: String?) {
        if let failure = storeFailure { return emit(.answer(request, .refused(.unavailable(failure)))) }
        if let problems = Self.serviceProblems(spec) { return emit(.answer(request, .refused(.invalidService(problems)))) }
        if let existing = services[spec.name] {
            guard !existing.removing else { return emit(.answer(request, .refused(.serviceRemoving(spec.name)))) }
            var normalized = spec
            normalized.task.id = nil
            guard existing.spec == normalized else {
                return emit(.answer(request, .refused(.serviceConflict(spec.name))))
            }
            return answerService(request, spec.name, created: false)
        }
        var record = ServiceRecord(spec, now: date)
        record.record("created with \(spec.replicas) replica\(spec.replicas == 1 ? "" : "s") of \(spec.task.image)\(caller.map { " by token \($0)" } ?? "")", at: date)
        services[spec.name] = record
        serviceTasks[spec.name] = []
        saveService(spec.name)
        answerService(request, spec.name, created: true)
    }

    mutating func updateService(_ name: String, _ change: ServiceChange, request: RequestID, by caller: String?) {
        if let failure = storeFailure { return emit(.answer(request, .refused(.unavailable(failure)))) }
        guard var record = services[name] else { return emit(.answer(request, .refused(.serviceNotFound(name)))) }
        guard !record.removing else { return emit(.answer(request, .refused(.serviceRemoving(name)))) }
        if let other = change.name, other != name {
            return emit(.answer(request, .refused(.invalidService([SpecProblem(path: "name", message: "is \(other), but the path names \(name)")]))))
        }
        if change.replicas == nil, change.task == nil, change.update == nil {
            return emit(.answer(request, .refused(.invalidService([SpecProblem(path: "", message: "nothing to change: give replicas, task or update")]))))
        }
        var wanted = record.spec
        if let replicas = change.replicas { wanted.replicas = replicas }
        if var task = change.task {
            task.id = nil
            wanted.task = task
        }
        if let update = change.update { wanted.update = update }
        if let problems = Self.serviceProblems(wanted) { return emit(.answer(request, .refused(.invalidService(problems)))) }
        let by = caller.map { " by token \($0)" } ?? ""
        if wanted.replicas != record.replicas {
            record.record("scaled from \(record.replicas) to \(wanted.replicas)\(by)", at: date)
            record.replicas = wanted.replicas
        }
        if wanted.update != record.update {
            record.update = wanted.update
            record.record("update policy changed\(by)", at: date)
        }
        if wanted.task != record.template {
            let from = record.version
            let superseded = record.deploy.flatMap { $0.isActive ? $0 : nil }
            record.latestVersion += 1
            let to = record.latestVersion
            record.templates[to] = wanted.task
            var deploy = DeployRecord(from: from, to: to, state: .running, startedAt: date)
            let message = "deploy of version \(to) (from \(from)) started\(by)"
                + (superseded.map { " superseding the deploy of version \($0.to)" } ?? "")
            deploy.events.append(ServiceEvent(at: date, message: message))
            record.record(message, at: date)
            record.deploy = deploy
            record.pruneTemplates()
        }
        guard record != services[name] else { return answerService(request, name, created: false) }
        record.updatedAt = date
        services[name] = record
        saveService(name)
        answerService(request, name, created: false)
    }

    /// Goes back to the version before the one the replicas run now, rolling as a deploy does.
    mutating func rollbackService(_ name: String, request: RequestID, by caller: String?) {
        if let failure = storeFailure { return emit(.answer(request, .refused(.unavailable(failure)))) }
        guard var record = services[name] else { return emit(.answer(request, .refused(.serviceNotFound(name)))) }
        guard !record.removing else { return emit(.answer(request, .refused(.serviceRemoving(name)))) }
        guard let last = record.deploy else {
            return emit(.answer(request, .refused(.nothingToRollBack("service \(name) has one version only; there is nothing to roll back to"))))
        }
        guard last.state != .rollingBack, last.state != .rolledBack, record.templates[last.from] != nil else {
            return emit(.answer(request, .refused(.nothingToRollBack(
                "service \(name) is back on version \(last.from) already (its deploy of version \(last.to) is \(last.state.rawValue))"))))
        }
        var deploy = DeployRecord(from: last.from, to: last.to, state: .rollingBack, startedAt: date, reason: "rollback asked\(caller.map { " by token \($0)" } ?? "")")
        let message = "rolling back from version \(last.to) to \(last.from)\(caller.map { " by token \($0)" } ?? "")"
        deploy.events.append(ServiceEvent(at: date, message: message))
        record.record(message, at: date)
        record.deploy = deploy
        record.updatedAt = date
        services[name] = record
        saveService(name)
        answerService(request, name, created: false)
    }

    /// Stops every task of the service; once all have ended, the service and its tasks are forgotten.
    mutating func removeService(_ name: String, request: RequestID, by caller: String?) {
        if let failure = storeFailure { return emit(.answer(request, .refused(.unavailable(failure)))) }
        guard var record = services[name] else { return emit(.answer(request, .refused(.serviceNotFound(name)))) }
        if !record.removing {
            record.removing = true
            record.record("removal asked\(caller.map { " by token \($0)" } ?? ""): every task stops", at: date)
            if var deploy = record.deploy, deploy.isActive {
                deploy.state = .failed
                deploy.reason = "the service is being removed"
                deploy.endedAt = date
                record.deploy = deploy
            }
            record.updatedAt = date
            services[name] = record
            saveService(name)
        }
        answerService(request, name, created: false)
    }

    private mutating func answerService(_ request: RequestID, _ name: String, created: Bool) {
        guard let record = services[name] else { return }
        afterCommit(.answer(request, .service(record, created: created, revision: max(record.revision, issued + (journal.isEmpty ? 0 : 1)))))
    }

    /// Why the machine refuses a service (the gateway checks the file first; this guards
    /// every other way in, as `accept` does for tasks).
    static func serviceProblems(_ spec: ServiceSpec) -> [SpecProblem]? {
        var problems: [SpecProblem] = []
        if let problem = ServiceSpec.nameProblem(spec.name) { problems.append(SpecProblem(path: "name", message: problem)) }
        if !(0...ServiceSpec.maximumReplicas).contains(spec.replicas) {
            problems.append(SpecProblem(path: "replicas", message: "must be from 0 to \(ServiceSpec.maximumReplicas), not \(spec.replicas)"))
        }
        problems += spec.task.validationProblems().map { SpecProblem(path: $0.path.isEmpty ? "task" : "task.\($0.path)", message: $0.message) }
        return problems.isEmpty ? nil : problems
    }

    mutating func saveService(_ name: String) {
        guard var record = services[name] else { return }
        record.revision = issued + 1
        services[name] = record
        journal.append(.saveService(record))
        dirtyServices.insert(name)
        catalogDirty.insert(name)   // its published ports may have changed
    }

    // MARK: - The pass

    /// A task of a service changed: the service is looked at again at the end of the input.
    mutating func replicaChanged(_ id: TaskID) {
        if let service = tasks[id]?.replica?.service {
            dirtyServices.insert(service)
            catalogDirty.insert(service)
        }
    }

    /// Services whose own deadline has come.
    mutating func releaseDueServiceWakes() {
        guard !serviceWakes.isEmpty else { return }
        for (name, due) in serviceWakes where due <= now {
            serviceWakes[name] = nil
            dirtyServices.insert(name)
        }
    }

    /// Plans every service marked since the last pass and carries its plan out. A plan's own
    /// stops may end tasks at once (one that never ran), which its next plan must see (a
    /// stop-first slot then starts): a service marked again by its own pass is planned again,
    /// a few rounds at most (a pass that changes nothing marks nothing).
    mutating func reconcileServices() {
        guard storeFailure == nil else { return }
        for _ in 0..<3 where !dirtyServices.isEmpty {
            let names = dirtyServices.sorted()
            dirtyServices = []
            for name in names { reconcile(name) }
        }
    }

    private mutating func reconcile(_ name: String) {
        guard var record = services[name] else { return }
        let ids = serviceTasks[name] ?? []
        if record.removing { return removeWhenStopped(name, ids) }
        let views = ids.sorted().compactMap { tasks[$0].flatMap(replicaView) }
        let deploy = record.deploy.map {
            Deploy(from: $0.from, to: $0.to, state: $0.state, startedAt: moment($0.startedAt), reason: $0.reason, rollback: $0.rollback)
        }
        let plan = ServiceReconciler.plan(ServiceReconciler.Input(
            replicas: record.replicas, version: record.version, update: record.update, deploy: deploy, tasks: views, now: now))
        for action in plan.actions {
            switch action {
            case .start(let slot, let version, _):
                guard var spec = record.templates[version] else { continue }
                spec.id = nil
                if case .failure(let error) = accept(spec, by: "service \(name)", replica: ServiceSlot(service: name, version: version, slot: slot)) {
                    record.record("slot \(slot) could not get a task: \(error)", at: date)
                }
            case .stop(let id, let reason):
                requestStop(id, by: "service \(name) (\(reason))")
            }
        }
        if let planned = plan.deploy, var kept = record.deploy, planned.state != kept.state || planned.reason != kept.reason {
            kept.state = planned.state
            kept.reason = planned.reason
            kept.rollback = planned.rollback
            if !kept.isActive { kept.endedAt = date }
            record.deploy = kept
        }
        for event in plan.events {
            record.record(event, at: date)
            record.deploy?.events.append(ServiceEvent(at: date, message: event))
        }
        if record != services[name] {
            record.updatedAt = date
            services[name] = record
            saveService(name)
        }
        if let wake = plan.wake {
            serviceWakes[name] = wake
            self.wake(at: wake)
        } else {
            serviceWakes[name] = nil
        }
        forgetEndedReplicas(name)
    }

    /// The reconciler's view of one task.
    private func replicaView(_ record: TaskRecord) -> ReplicaView? {
        guard let replica = record.replica else { return nil }
        let phase: ReplicaView.Phase = switch record.state {
        case .completed: .ended(failed: false)
        case .failed, .lost: .ended(failed: true)
        case .stopping: .stopping
        case .pending, .scheduled, .running: record.desiredState == .stop ? .stopping : .live
        }
        return ReplicaView(
            task: record.id, slot: replica.slot, version: replica.version, node: record.node, phase: phase,
            createdAt: moment(record.createdAt),
            healthySince: record.state == .running || record.state.isTerminal ? record.healthyAt.map(moment) : nil,
            endedAt: record.finishedAt.map(moment), error: record.state == .failed ? record.error : nil)
    }

    /// Stops what still runs; once nothing does, forgets the service and its tasks.
    private mutating func removeWhenStopped(_ name: String, _ ids: Set<TaskID>) {
        for id in ids.sorted() where tasks[id].map({ !$0.state.isTerminal && $0.desiredState == .run }) == true {
            requestStop(id, by: "service \(name) (removed)")
        }
        // Forgotten once every task has ended (a stop may end one at once: it never ran) and
        // no container the manager ended waits for its worker's word.
        let stopped = ids.allSatisfy { id in tasks[id].map { $0.state.isTerminal && confirming[id] == nil } ?? true }
        guard stopped else { return }
        for id in ids.sorted() { forget(id) }
        services[name] = nil
        serviceTasks[name] = nil
        catalogDirty.insert(name)
        serviceWakes[name] = nil
        journal.append(.deleteService(name))
    }

    /// Keeps the newest ended tasks of each slot, and forgets the others.
    private mutating func forgetEndedReplicas(_ name: String) {
        guard let ids = serviceTasks[name] else { return }
        var ended: [Int: [TaskRecord]] = [:]
        for id in ids {
            guard let task = tasks[id], task.state.isTerminal, confirming[id] == nil, let slot = task.replica?.slot else { continue }
            ended[slot, default: []].append(task)
        }
        for (_, slotTasks) in ended where slotTasks.count > Self.endedTasksPerSlot {
            let old = slotTasks.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }.dropFirst(Self.endedTasksPerSlot)
            for task in old.sorted(by: { $0.id < $1.id }) { forget(task.id) }
        }
    }

    /// Drops an ended task from memory and the store.
    mutating func forget(_ id: TaskID) {
        guard let record = tasks.removeValue(forKey: id) else { return }
        stateCounts[record.state, default: 0] -= 1
        if let service = record.replica?.service { serviceTasks[service]?.remove(id) }
        if record.replica == nil, let name = record.spec.name {
            taskNames[name]?.remove(id)
            if taskNames[name]?.isEmpty == true { taskNames[name] = nil }
        }
        forgotten.insert(id)
        if attemptFloors.count >= Self.maximumAttemptFloors {
            attemptFloors = [:]
            floorsLost = true
        }
        attemptFloors[id] = record.attempt
        journal.append(.deleteTask(id))
    }

    /// The moment a stored date stands for on this machine's clock.
    func moment(_ date: Date) -> Moment {
        Moment(nanoseconds: Int64((date.timeIntervalSince(wallOrigin) * 1e9).rounded()))
    }

    // MARK: - Views

    public func service(_ name: String) -> ServiceRecord? { services[name] }

    public func serviceDTO(_ record: ServiceRecord, withTasks: Bool) -> ServiceDTO {
        let ids = serviceTasks[record.name] ?? []
        var dto = ServiceDTO(record, tasks: ids.compactMap { tasks[$0] }, nodeNames: nodes.mapValues(\.record.name), withTasks: withTasks)
        dto.warnings = meshWarnings(published: dto.published.map(\.publish))
        return dto
    }

    /// Up workers without the routing mesh's load balancer (their hello lacked
    /// `NodeLabel.mesh`): the published ports do not listen there.
    func meshWarnings(published: [Int]) -> [String] {
        guard !published.isEmpty else { return [] }
        let up = nodes.values.filter { $0.state == .up }
        let without = up.filter { $0.record.labels[NodeLabel.mesh] == nil }.map(\.record.name).sorted()
        guard !without.isEmpty else { return [] }
        let ports = published.map(String.init).joined(separator: ", ")
        let whereText = without.count == up.count ? "on no worker (none of the \(up.count) up runs a load balancer)"
                                                  : "not on \(without.joined(separator: ", ")) (no load balancer there)"
        return ["published port \(ports) listens \(whereText): HAProxy was not found by the worker; install it "
                + "(tools/setup.sh, or apt-get install haproxy) or start the worker with --haproxy PATH"]
    }

    public func listServices() -> [ServiceDTO] {
        services.keys.sorted().compactMap { services[$0] }.map { serviceDTO($0, withTasks: false) }
    }

    /// For the simulator's invariants: each service's tasks that are live (pending, scheduled
    /// or running, to run), as (slot, version, task).
    public func liveReplicas(of name: String) -> [(slot: Int, version: ServiceVersion, task: TaskID)] {
        (serviceTasks[name] ?? []).sorted().compactMap { id in
            guard let task = tasks[id], let replica = task.replica, task.desiredState == .run, !task.state.isTerminal, task.state != .lost else { return nil }
            return (replica.slot, replica.version, id)
        }
    }

    public var serviceNames: [String] { services.keys.sorted() }
}
