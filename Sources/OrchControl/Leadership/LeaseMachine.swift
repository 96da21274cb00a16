import OrchCore

/// Whether this manager leads, decided from its attempts on the lease row and its own
/// monotonic clock (docs/ARCHITECTURE.md, "One leader by a fenced lease"). Pure: the shell
/// feeds it the time and what the database answered, and carries out what it says.
///
/// The lease (holder, epoch, expires_at) is judged by the database's clock: an acquire
/// succeeds when the lease is free or expired, and gives a new epoch; a renewal succeeds
/// while this holder still holds that epoch, and pushes `expires_at` to the database's
/// `now()` + ``Configuration/lease``. The machine asks for a renewal every
/// ``Configuration/renewEvery``; a leader whose last successful renewal was *started*
/// longer than ``Configuration/actFor`` ago by its own clock stops acting at once (no sends,
/// no commits), before the lease can pass to another: the database counts the lease from
/// the moment it ran the renewal, which is after the moment this machine started it, and
/// `actFor` is shorter than `lease` by more than any pause of the shell between the two.
public struct LeaseMachine: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// How long a lease lasts past each renewal, by the database's clock.
        public var lease: Duration = .seconds(6)
        /// How often the leader renews, and a follower tries to take the lease.
        public var renewEvery: Duration = .seconds(2)
        /// How long after the start of its last successful renewal a leader may act.
        public var actFor: Duration = .seconds(4)

        public init() {}
    }

    public enum Role: Sendable, Hashable {
        case follower
        /// Leads with `epoch`; every write it makes is fenced by it.
        case leader(epoch: Int64)
    }

    public enum Input: Sendable, Hashable {
        case timer
        /// The attempt started at `startedAt` took the lease, with `epoch`.
        case acquired(epoch: Int64, startedAt: Moment)
        /// The lease is someone else's (and live): `holder` leads with `epoch`.
        case heldBy(holder: String, epoch: Int64)
        /// The renewal started at `startedAt` kept the lease.
        case renewed(startedAt: Moment)
        /// The renewal found the lease gone to another (or its epoch moved on).
        case lost(holder: String?)
        /// The database did not answer, or failed: nothing is known.
        case failed(String)
        /// A planned stop: release the lease, so that a standby takes it at once.
        case stopping
        /// Another holder released the lease (LISTEN/NOTIFY): a follower tries to take it at
        /// once instead of at its next turn.
        case released
    }

    public enum Effect: Sendable, Hashable {
        /// Try to take the lease (an UPDATE judged by the database's clock).
        case acquire
        /// Renew the lease held with `epoch`.
        case renew(epoch: Int64)
        /// Give the lease up (a planned stop).
        case release(epoch: Int64)
        /// Start acting: load the state from the store and serve the workers.
        case lead(epoch: Int64)
        /// Stop acting at once: no more sends nor commits.
        case stepDown(reason: String)
        /// Feed `.timer` at this moment.
        case wake(at: Moment)
    }

    public let configuration: Configuration
    public private(set) var role: Role = .follower
    /// Who leads, as last heard from the database (nil: unknown or nobody).
    public private(set) var leader: (holder: String, epoch: Int64)?
    /// When the last successful acquire or renewal was started.
    private var heldSince: Moment?
    /// An attempt is out; the next waits for its answer (or for the next tick past it).
    private var attemptOut = false
    private var nextAttempt: Moment = .zero
    private var now: Moment = .zero
    private var stopped = false

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    public var isLeader: Bool { if case .leader = role { true } else { false } }

    public mutating func handle(_ input: Input, now: Moment) -> [Effect] {
        self.now = max(self.now, now)
        var effects: [Effect] = []
        switch input {
        case .timer:
            break
        case .acquired(let epoch, let startedAt):
            attemptOut = false
            guard !stopped else { return [.release(epoch: epoch)] }
            heldSince = startedAt
            leader = nil
            if role != .leader(epoch: epoch) {
                role = .leader(epoch: epoch)
                effects.append(.lead(epoch: epoch))
            }
        case .heldBy(let holder, let epoch):
            attemptOut = false
            leader = (holder, epoch)
            if isLeader { effects.append(contentsOf: stepDown("the lease is \(holder)'s (epoch \(epoch))")) }
        case .renewed(let startedAt):
            attemptOut = false
            if isLeader { heldSince = max(heldSince ?? startedAt, startedAt) }
        case .lost(let holder):
            attemptOut = false
            if isLeader { effects.append(contentsOf: stepDown(holder.map { "the lease went to \($0)" } ?? "the lease was lost")) }
        case .failed:
            attemptOut = false
        case .released:
            if !isLeader, !attemptOut { nextAttempt = min(nextAttempt, self.now) }
        case .stopping:
            stopped = true
            if case .leader(let epoch) = role {
                effects.append(contentsOf: stepDown("stopping"))
                effects.append(.release(epoch: epoch))
            }
            return effects
        }
        guard !stopped else { return effects }
        // Acting stops once the last renewal is too old, whatever the database says later.
        if isLeader, let since = heldSince, self.now - since >= configuration.actFor {
            effects.append(contentsOf: stepDown("no renewal of the lease for \(DurationText.format(self.now - since))"))
        }
        if !attemptOut, self.now >= nextAttempt {
            attemptOut = true
            nextAttempt = self.now + configuration.renewEvery
            if case .leader(let epoch) = role { effects.append(.renew(epoch: epoch)) } else { effects.append(.acquire) }
        }
        // While an attempt is out its answer (or the shell's deadline on it) comes as an
        // input: only the moment to stop acting is a wake then. A wake at the next attempt's
        // turn, passed already, would have the shell spin until the answer came.
        var wake: Moment? = attemptOut ? nil : nextAttempt
        if isLeader, let since = heldSince { wake = min(wake ?? since + configuration.actFor, since + configuration.actFor) }
        if let wake { effects.append(.wake(at: wake)) }
        return effects
    }

    private mutating func stepDown(_ reason: String) -> [Effect] {
        guard isLeader else { return [] }
        role = .follower
        heldSince = nil
        return [.stepDown(reason: reason)]
    }
}
