import OrchControl
import OrchCore

/// Several managers on one database (``FaultProfile/leaderChanges``): each manager is a slot
/// with the real `LeaseMachine`; the database holds the lease row (holder, epoch,
/// expires_at), judged by its own clock, and answers after a latency. The slot that takes
/// the lease starts a `ManagerMachine` from the store with that epoch (a takeover is a new
/// machine, as in the real shell); the others wait. A slot's machine stops acting when its
/// `LeaseMachine` says so; the workers then dial the next leader.
///
/// Faults: a leader paused (nothing of its runs; its lease runs out meanwhile), a slot cut
/// off from the database (its calls go unanswered, the shell's deadline fails them, its
/// commits fail), a slow database (calls take up to 3 s), and the database's clock jumping
/// ahead (the lease ends early, under its holder). A paused or jumped-over leader may still
/// act once it resumes, before its `LeaseMachine` has looked at its clock: that is what the
/// fence and the workers' epochs are for.
struct LeaseBook {
    struct Slot {
        var machine: LeaseMachine
        /// One more at each restart of the slot's process: its older events are stale.
        var generation = 0
        var timerToken = 0
        /// The one call out, and when it was started.
        var pending: Int?
        var pausedUntil: Moment?
        var cutOffUntil: Moment?
        /// Its term is not held to its lease: it was paused, or the database's clock jumped.
        var exempt = false
        var crashed = false
    }

    enum Call: Hashable {
        case acquire
        case renew(epoch: UInt64)
        case release(epoch: UInt64)
    }

    var slots: [Slot]
    var holder: Int?
    var expiresAt: Moment = .zero
    var slowUntil: Moment?
    var nextCall = 1
    var random: SimRandom
    let configuration: LeaseMachine.Configuration

    static let slotCount = 3
    static let deadline: Duration = .seconds(5)

    init(random: SimRandom, configuration: LeaseMachine.Configuration) {
        self.random = random
        self.configuration = configuration
        slots = (0..<Self.slotCount).map { _ in Slot(machine: LeaseMachine(configuration: configuration)) }
    }
}

extension Simulation {
    static let managerNames = ["m1", "m2", "m3"]

    /// The slot of the leader's process.
    var leaderSlot: Int? { manager?.slot }

    /// The leader's process is paused: it answers no client (they give up on it).
    var leaderPaused: Bool {
        guard let slot = leaderSlot, let until = leases?.slots[slot].pausedUntil else { return false }
        return now < until
    }

    // MARK: - Start and events

    func beginLeases() {
        var configuration = LeaseMachine.Configuration()
        if sabotage.actPastTheLease { configuration.actFor = .seconds(8) }
        leases = LeaseBook(random: leaseRandom, configuration: configuration)
        for slot in 0..<LeaseBook.slotCount {
            schedule(.leaseTimer(slot: slot, generation: 0, token: 0), at: now + leases!.random.duration(.zero...(.milliseconds(50))))
        }
    }

    /// The slot an event is for, when it is a lease's or a manager process's.
    func leaseSlot(of event: Event) -> Int? {
        switch event {
        case .leaseTimer(let slot, _, _), .leaseAnswer(let slot, _, _, _), .leaseDeadline(let slot, _, _), .leaseNotify(let slot, _):
            return slot
        default:
            guard let incarnation = managerIncarnation(of: event) else { return nil }
            if incarnation == managerIncarnation { return manager?.slot }
            if incarnation == deposed?.incarnation { return deposed?.process.slot }
            return nil
        }
    }

    /// Events of a paused slot wait for its resume; its lease keeper wakes a little after the
    /// rest of it (a shell's tasks run in no set order), so that what was due acts first.
    func deferredForPause(_ event: Event) -> Bool {
        guard let book = leases, let slot = leaseSlot(of: event), let until = book.slots[slot].pausedUntil, now < until else { return false }
        var at = until
        switch event {
        case .leaseTimer, .leaseAnswer, .leaseDeadline, .leaseNotify: at = until + leases!.random.duration(.zero...(.milliseconds(50)))
        default: break
        }
        queue.push(event, at: at)
        return true
    }

    func feedLease(_ slot: Int, _ input: LeaseMachine.Input) -> TraceRecord? {
        guard leases != nil, !leases!.slots[slot].crashed else { return nil }
        let effects = leases!.slots[slot].machine.handle(input, now: now)
        var notes: [String] = []
        for effect in effects {
            if let note = applyLease(slot, effect) { notes.append(note) }
        }
        return simRecord("\(Self.managerNames[slot]) lease: \(input) → \(notes.isEmpty ? "-" : notes.joined(separator: "; "))")
    }

    func applyLease(_ slot: Int, _ effect: LeaseMachine.Effect) -> String? {
        switch effect {
        case .acquire: call(slot, .acquire); return "acquire"
        case .renew(let epoch): call(slot, .renew(epoch: UInt64(epoch))); return "renew \(epoch)"
        case .release(let epoch): call(slot, .release(epoch: UInt64(epoch))); return "release \(epoch)"
        case .lead(let epoch): return takeOver(slot, epoch: UInt64(epoch))
        case .stepDown(let reason): return stopActing(slot, reason: reason)
        case .wake(let moment):
            leases!.slots[slot].timerToken += 1
            schedule(.leaseTimer(slot: slot, generation: leases!.slots[slot].generation, token: leases!.slots[slot].timerToken), at: moment)
            return nil
        }
    }

    func databaseLatency() -> Duration {
        if let slow = leases?.slowUntil, now < slow { return leases!.random.duration(.milliseconds(200)...(.seconds(3))) }
        return leases!.random.duration(.microseconds(300)...(.milliseconds(5)))
    }

    func isCutOff(_ slot: Int) -> Bool { leases?.slots[slot].cutOffUntil.map { now < $0 } ?? false }

    /// A call to the database: it arrives after a latency (never, from a slot cut off), and
    /// its answer comes back after another; the shell gives up on it after 5 s.
    func call(_ slot: Int, _ call: LeaseBook.Call) {
        let id = leases!.nextCall
        leases!.nextCall += 1
        let generation = leases!.slots[slot].generation
        if case .release = call {} else {
            leases!.slots[slot].pending = id
            schedule(.leaseDeadline(slot: slot, generation: generation, call: id), at: now + LeaseBook.deadline)
        }
        guard !isCutOff(slot) else { return }
        schedule(.leaseArrive(slot: slot, generation: generation, call: id, call), at: now + databaseLatency())
    }

    /// The database runs a call, by its clock (the simulation's).
    func leaseArrives(_ slot: Int, generation: Int, id: Int, _ call: LeaseBook.Call) -> TraceRecord? {
        guard !isCutOff(slot) else { return nil }
        let started = now
        let name = Self.managerNames[slot]
        var answer: LeaseMachine.Input?
        switch call {
        case .acquire:
            if leases!.holder == nil || leases!.expiresAt < now || leases!.holder == slot {
                leases!.holder = slot
                store.epoch += 1
                leases!.expiresAt = now + LeaseMachine.Configuration().lease
                answer = .acquired(epoch: Int64(store.epoch), startedAt: started)
            } else {
                answer = .heldBy(holder: Self.managerNames[leases!.holder!], epoch: Int64(store.epoch))
            }
        case .renew(let epoch):
            if leases!.holder == slot, store.epoch == epoch, leases!.expiresAt >= now {
                leases!.expiresAt = now + LeaseMachine.Configuration().lease
                answer = .renewed(startedAt: started)
            } else {
                answer = .lost(holder: leases!.expiresAt >= now ? leases!.holder.map { Self.managerNames[$0] } : nil)
            }
        case .release(let epoch):
            guard leases!.holder == slot, store.epoch == epoch else { return simRecord("database: \(name)'s release of \(epoch) is stale") }
            leases!.holder = nil
            leases!.expiresAt = .zero
            for other in 0..<LeaseBook.slotCount where other != slot {
                schedule(.leaseNotify(slot: other, generation: leases!.slots[other].generation), at: now + databaseLatency())
            }
            return simRecord("database: \(name) released the lease (epoch \(epoch))")
        }
        // The answer to a call from before a restart reaches no one (the process is gone),
        // but what the database did stays done: a lease taken by a dead process runs out.
        if let answer { schedule(.leaseAnswer(slot: slot, generation: generation, call: id, answer), at: now + databaseLatency()) }
        return simRecord("database: \(name) \(call) → \(answer.map { "\($0)" } ?? "-") (lease: \(leases!.holder.map { Self.managerNames[$0] } ?? "nobody"), epoch \(store.epoch))")
    }

    func leaseAnswered(_ slot: Int, generation: Int, id: Int, _ input: LeaseMachine.Input) -> TraceRecord? {
        guard let book = leases, book.slots[slot].generation == generation, book.slots[slot].pending == id, !isCutOff(slot) else { return nil }
        leases!.slots[slot].pending = nil
        return feedLease(slot, input)
    }

    func leaseDeadlinePassed(_ slot: Int, generation: Int, id: Int) -> TraceRecord? {
        guard let book = leases, book.slots[slot].generation == generation, book.slots[slot].pending == id else { return nil }
        leases!.slots[slot].pending = nil
        return feedLease(slot, .failed("the database did not answer within 5s"))
    }

    func leaseTimerFired(_ slot: Int, generation: Int, token: Int) -> TraceRecord? {
        guard let book = leases, book.slots[slot].generation == generation, book.slots[slot].timerToken == token || token == 0 else { return nil }
        return feedLease(slot, .timer)
    }

    // MARK: - Terms

    /// `slot` took the lease with `epoch`: its machine starts from the store. A leader still
    /// acting (it has not noticed its lease is gone) goes on beside it, deposed.
    func takeOver(_ slot: Int, epoch: UInt64) -> String {
        if let old = manager {
            if let earlier = deposed { endDeposed(earlier) }
            deposed = DeposedManager(process: old, incarnation: managerIncarnation, queue: SimStore.Queue(store))
            counters.leaderChanges += 1
            manager = nil
        }
        clients.pending = [:]
        serviceClient.pending = [:]
        operatorRequestsLost()
        store.managerCrashed()
        guard store.epoch == epoch else { return "takes over with epoch \(epoch), already passed on (\(store.epoch))" }
        leases!.slots[slot].exempt = false
        startManager(fresh: false)
        manager?.slot = slot
        counters.takeovers += 1
        return "leads with epoch \(epoch) from revision \(store.revision) (manager \(managerIncarnation))"
    }

    /// `slot`'s lease keeper says stop: its machine acts no more, its connections close.
    func stopActing(_ slot: Int, reason: String) -> String {
        if let old = deposed, old.process.slot == slot {
            endDeposed(old)
            return "the deposed manager \(old.incarnation) stops: \(reason)"
        }
        guard let process = manager, process.slot == slot else { return "steps down: \(reason) (it was not acting)" }
        closeConnections(ofManager: managerIncarnation)
        manager = nil
        store.managerCrashed()
        clients.pending = [:]
        serviceClient.pending = [:]
        operatorRequestsLost()
        return "manager \(process.incarnation) stops leading: \(reason)"
    }

    /// The deposed leader acts no more: its connections close (its workers dial the leader).
    func endDeposed(_ old: DeposedManager) {
        deposed = nil
        closeConnections(ofManager: old.incarnation)
    }

    /// A manager process closes every connection it has (its shell does on a step down).
    func closeConnections(ofManager incarnation: Int) {
        for id in connections.keys.sorted() {
            guard var connection = connections[id], connection.managerIncarnation == incarnation, connection.managerOpen else { continue }
            connection.managerOpen = false
            connections[id] = connection
            reset(id)
            forgetIfClosed(id)
        }
    }

    /// The leader's process crashed: its slot's lease keeper is gone with it.
    func leaseSlotCrashed(_ slot: Int) {
        leases!.slots[slot].crashed = true
        leases!.slots[slot].generation += 1
        leases!.slots[slot].pending = nil
    }

    /// The crashed slot starts again: a follower, until it takes the lease.
    func restartLeaseSlots() -> TraceRecord? {
        var restarted: [String] = []
        for slot in 0..<LeaseBook.slotCount where leases!.slots[slot].crashed {
            let generation = leases!.slots[slot].generation + 1
            leases!.slots[slot] = LeaseBook.Slot(machine: LeaseMachine(configuration: leases!.configuration), generation: generation)
            schedule(.leaseTimer(slot: slot, generation: generation, token: 0), at: now)
            restarted.append(Self.managerNames[slot])
        }
        return simRecord("managers \(restarted.joined(separator: ", ")) start again (followers until they take the lease)")
    }

    // MARK: - Faults

    func leaseFault() -> TraceRecord? {
        guard leases != nil else { return nil }
        let slot = leaderSlot.flatMap { chaosRandom.chance(0.7) ? $0 : nil } ?? chaosRandom.int(0...(LeaseBook.slotCount - 1))
        let name = Self.managerNames[slot]
        switch chaosRandom.weighted([35, 25, 20, 20]) {
        case 0:
            let duration = chaosRandom.duration(.milliseconds(500)...(.seconds(9)))
            leases!.slots[slot].pausedUntil = now + duration
            if leaderSlot == slot || deposed?.process.slot == slot { leases!.slots[slot].exempt = true }
            counters.pauses += 1
            return simRecord("fault: \(name) is paused for \(DurationText.format(duration))")
        case 1:
            let duration = chaosRandom.duration(.seconds(1)...(.seconds(10)))
            leases!.slots[slot].cutOffUntil = now + duration
            counters.cutOffs += 1
            return simRecord("fault: \(name) is cut off from the database for \(DurationText.format(duration))")
        case 2:
            let duration = chaosRandom.duration(.seconds(1)...(.seconds(8)))
            leases!.slowUntil = now + duration
            return simRecord("fault: the database is slow for \(DurationText.format(duration))")
        default:
            guard let holder = leases!.holder else { return nil }
            leases!.expiresAt = now - .milliseconds(1)
            leases!.slots[holder].exempt = true
            return simRecord("fault: the database's clock jumps: \(Self.managerNames[holder])'s lease (epoch \(store.epoch)) has run out")
        }
    }

    /// Checked on every send of a manager process: a term not exempt (no pause, no clock jump)
    /// sends nothing once a later epoch has been taken.
    func checkActsWithinLease(_ message: WireMessage) {
        guard let book = leases, let process = manager, let slot = process.slot, !book.slots[slot].exempt, process.epoch < store.epoch else { return }
        violate(.actsWithinLease, "\(Self.managerNames[slot]) (manager \(process.incarnation), epoch \(process.epoch)) sent \(message.kind) after epoch \(store.epoch) was taken")
    }
}
