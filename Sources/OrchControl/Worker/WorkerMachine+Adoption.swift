import OrchCore

/// Taking over the engine's containers. A worker process that (re)starts finds the
/// containers of its node still there: it keeps the newest attempt of each task, removes the
/// older ones, and tells the manager how each one stands, so that nothing runs unaccounted
/// for and no exit goes unreported. A later listing (after the runtime's event stream broke)
/// only catches the exits missed meanwhile.
extension WorkerMachine {
    mutating func found(_ containers: [FoundContainer]) {
        if adopted {
            for found in containers.sorted(by: Self.listingOrder) { catchMissedExit(found) }
        } else {
            adopted = true
            adopt(containers)
        }
    }

    private mutating func adopt(_ containers: [FoundContainer]) {
        var newest: [TaskID: FoundContainer] = [:]
        var older: [FoundContainer] = []
        for found in containers.sorted(by: Self.listingOrder) {
            guard let kept = newest[found.task] else {
                newest[found.task] = found
                continue
            }
            // Two containers of one attempt (a start cut short by the restart): the running one wins.
            if found.attempt > kept.attempt || (found.attempt == kept.attempt && found.running && !kept.running) {
                older.append(kept)
                newest[found.task] = found
            } else {
                older.append(found)
            }
        }
        for found in older { emit(.remove(found.container)) }
        for task in newest.keys.sorted() {
            guard let found = newest[task] else { continue }
            if let held = tasks[task] {
                // Assigned already (the manager was quicker than the listing).
                if found.attempt < held.attempt {
                    emit(.remove(found.container))
                } else if found.attempt == held.attempt {
                    catchMissedExit(found)
                }
                continue
            }
            guard case .start = ledger.assign(task, attempt: found.attempt) else { continue }
            let state: TaskState = found.running ? .running : (found.exitCode == 0 ? .completed : .failed)
            tasks[task] = Held(
                attempt: found.attempt, spec: nil, image: found.image, container: found.container, state: state,
                exitCode: found.running ? nil : found.exitCode, error: found.running ? nil : found.error, ports: found.ports,
                adoptedGrace: found.stopGracePeriod, adoptedStopAfter: found.stopAfter)
            note(.adopted(task, attempt: found.attempt, state))
            // An exit the manager has not heard of: kept in the outbox and sent (again) until acknowledged.
            if state.isTerminal { report(task) }
        }
    }

    /// The container of a held attempt that runs (or is being stopped) is found not running:
    /// its `die` event was missed, so it exited as the listing says.
    private mutating func catchMissedExit(_ found: FoundContainer) {
        guard !found.running, let held = tasks[found.task], held.attempt == found.attempt, !held.starting,
              held.state == .running || held.state == .stopping, held.container == found.container else { return }
        exited(found.task, code: found.exitCode ?? -1, error: found.error)
    }

    /// Attempts held running whose containers the engine no longer has: they are over.
    mutating func containersGone(_ containers: [ContainerID]) {
        let gone = Set(containers)
        for task in tasks.keys.sorted() {
            guard let held = tasks[task], let container = held.container, gone.contains(container), !held.starting,
                  held.state == .running || held.state == .stopping else { continue }
            exited(task, code: -1, error: held.stopRequested ? nil : "its container \(container) is gone from the engine")
        }
    }

    /// A deterministic order for a listing, whatever order the engine gave it in.
    private static func listingOrder(_ a: FoundContainer, _ b: FoundContainer) -> Bool {
        (a.task, a.attempt, a.container.rawValue) < (b.task, b.attempt, b.container.rawValue)
    }
}
