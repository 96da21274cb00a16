import OrchCore

/// The one commit path. The changes of one input leave as one batch under the next sequence
/// number (which is the revision of what it changed); effects that must not happen before
/// something is durable are held until `committed(through:)` reaches their batch.
///
/// A failed commit loses nothing: the shell keeps the batches and tries again, in order.
/// Meanwhile the machine refuses what it cannot make durable (503, `store_unavailable`),
/// answers the requests it holds with that same refusal (their changes stay in memory and
/// reach the store with the retry: a client that retries the same id is answered "same
/// task"), and keeps the acknowledgements of statuses until the store has them.
extension ManagerMachine {
    /// Emits `effect` once everything changed so far is durable: at once when nothing is
    /// waiting to be committed.
    mutating func afterCommit(_ effect: Effect) {
        let sequence = journal.isEmpty ? issued : issued + 1
        if sequence <= committed {
            emit(effect)
        } else {
            held.append((sequence, effect))
        }
    }

    /// Hands the input's changes to the store as one batch.
    mutating func flushJournal() {
        guard !journal.isEmpty else { return }
        issued += 1
        emit(.persist(StoreBatch(sequence: issued, changes: journal)))
        journal = []
    }

    mutating func commitSucceeded(through sequence: UInt64) {
        guard sequence > committed else { return }
        committed = min(sequence, issued)
        if storeFailure != nil {
            storeFailure = nil
            note(.storeRecovered)
        }
        var index = 0
        while index < held.count, held[index].sequence <= committed {
            emit(held[index].effect)
            index += 1
        }
        held.removeFirst(index)
    }

    mutating func commitFailed(through sequence: UInt64, reason: String) {
        if storeFailure == nil { note(.storeFailing(reason)) }
        storeFailure = reason
        // Requests are answered now (with the refusal); acks wait for the retry to succeed.
        var kept: [(sequence: UInt64, effect: Effect)] = []
        for entry in held {
            if case .answer(let request, _) = entry.effect {
                emit(.answer(request, .refused(.unavailable(reason))))
            } else {
                kept.append(entry)
            }
        }
        held = kept
    }

    /// The revision of the state as last made durable.
    public var revision: UInt64 { committed }

    // MARK: - The timer

    mutating func timer() {
        checkLiveness()
        releaseDueConfirmations()
        releaseDueBackoffs()
        releaseDueServiceWakes()
        collectEndedTasks()
        emit(.wake(at: nextWake()))
    }

    /// Asks to be woken at `moment`. Other inputs ask only for the deadlines they create;
    /// the timer asks for the earliest of all (a scan, so not on every input).
    mutating func wake(at moment: Moment) { emit(.wake(at: moment)) }

    /// The next moment something is due: a backoff, a node's deadline, or the next liveness
    /// check while any node is connected.
    public func nextWake() -> Moment {
        var next = now + .seconds(3600)
        if !connections.isEmpty { next = min(next, now + livenessCheckPeriod) }
        for due in backoff.values where due < next { next = due }
        for waiting in confirming.values where waiting.deadline < next { next = waiting.deadline }
        for due in serviceWakes.values where due < next { next = due }
        next = min(next, nextCollection)
        for entry in nodes.values {
            if let lostAt = entry.tasksLostAt, lostAt < next { next = lostAt }
            for due in entry.lingering.values where due < next { next = due }
        }
        return max(next, now)
    }

    /// How often silence is checked for: a tenth of the grace period, at most 250 ms.
    var livenessCheckPeriod: Duration { min(configuration.heartbeatGrace / 10, .milliseconds(250)) }
}
