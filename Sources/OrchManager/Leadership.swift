import Foundation
import Logging
import OrchControl
import OrchCore
import OrchStore
import Synchronization

/// What this manager knows of who leads: read by the REST and wire gateways on every
/// request or connection (a lock, no actor hop); written by the cluster when it starts or
/// stops acting, and by the directory loop from the store.
final class LeaderDirectory: Sendable {
    struct Info: Sendable {
        /// This manager's name (the lease's holder when it leads).
        var name: String
        /// Whether it serves: alone on its own store, or leading with its state loaded.
        var acting = false
        /// It leads alone (a SQLite store): there are no others.
        var alone = false
        /// The epoch it leads with, while it leads by the lease.
        var epoch: Int64?
        /// Who leads, as last read from the store, and with which epoch.
        var leader: String?
        var leaderEpoch: Int64?
        /// Every manager announced in the store.
        var managers: [ManagerRow] = []
    }

    private let state: Mutex<Info>

    init(name: String, alone: Bool) {
        state = Mutex(Info(name: name, acting: alone, alone: alone))
    }

    var info: Info { state.withLock { $0 } }

    func update(_ change: (inout Info) -> Void) { state.withLock { change(&$0) } }

    /// The leader's row (where it serves), when another manager leads and has announced itself.
    var otherLeader: ManagerRow? {
        state.withLock { info in
            guard let leader = info.leader, leader != info.name else { return nil }
            return info.managers.first { $0.name == leader }
        }
    }
}

/// Keeps the lease for a manager on a shared PostgreSQL store: feeds ``LeaseMachine`` the
/// time and the database's answers, and carries out what it decides. Each database call
/// runs in a task of its own, so that the deadline to stop acting is kept while a renewal
/// hangs on a database that does not answer.
final class LeaseKeeper: Sendable {
    enum Event: Sendable {
        case input(LeaseMachine.Input)
        /// A planned stop; resumed once the lease is released (or was not held).
        case stop(CheckedContinuation<Void, Never>)
    }

    private let store: PostgresStore
    private let name: String
    private let configuration: LeaseMachine.Configuration
    private let cluster: Cluster
    private let logger: Logger
    /// Loads the state and takes over for an epoch (the manager's part).
    private let takeOver: @Sendable (Int64) async -> Void
    private let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let origin = ContinuousClock.now

    init(
        store: PostgresStore, name: String, configuration: LeaseMachine.Configuration, cluster: Cluster, logger: Logger,
        takeOver: @escaping @Sendable (Int64) async -> Void
    ) {
        self.store = store
        self.name = name
        self.configuration = configuration
        self.cluster = cluster
        self.logger = logger
        self.takeOver = takeOver
        (events, continuation) = AsyncStream.makeStream()
    }

    private var now: Moment { Moment(nanoseconds: (ContinuousClock.now - origin).nanoseconds) }

    private func feed(_ input: LeaseMachine.Input) { continuation.yield(.input(input)) }

    /// A write fenced by this manager's epoch was refused: another leads.
    func deposed() { feed(.lost(holder: nil)) }

    /// The lease was released by its holder: try to take it now.
    func released() { feed(.released) }

    /// Releases the lease if held (a planned stop), so that a standby takes it at once.
    func stop() async {
        await withCheckedContinuation { continuation.yield(.stop($0)) }
    }

    /// Runs the machine until ``stop()``.
    func run() async {
        var machine = LeaseMachine(configuration: configuration)
        var timer: Task<Void, Never>?
        var taking: Task<Void, Never>?
        defer { timer?.cancel(); taking?.cancel() }
        feed(.timer)
        for await event in events {
            let input: LeaseMachine.Input
            var stopped: CheckedContinuation<Void, Never>?
            switch event {
            case .input(let given): input = given
            case .stop(let waiter):
                input = .stopping
                stopped = waiter
            }
            for effect in machine.handle(input, now: now) {
                switch effect {
                case .acquire:
                    attempt { [store, name, configuration] started in
                        switch try await store.acquireLease(holder: name, for: configuration.lease) {
                        case .held(let epoch): .acquired(epoch: epoch, startedAt: started)
                        case .heldBy(let holder, let epoch): .heldBy(holder: holder, epoch: epoch)
                        case .free: .failed("the lease was free but not taken")
                        }
                    }
                case .renew(let epoch):
                    attempt { [store, name, configuration] started in
                        switch try await store.renewLease(holder: name, epoch: epoch, for: configuration.lease) {
                        case .held: .renewed(startedAt: started)
                        case .heldBy(let holder, _): .lost(holder: holder)
                        case .free: .lost(holder: nil)
                        }
                    }
                case .release(let epoch):
                    do {
                        try await store.releaseLease(holder: name, epoch: epoch)
                        logger.info("released the lease (epoch \(epoch))")
                    } catch {
                        logger.warning("cannot release the lease (it expires by itself): \(error)")
                    }
                case .lead(let epoch):
                    logger.notice("took the lease with epoch \(epoch); loading the state")
                    await cluster.takeOver(epoch: epoch)
                    taking = Task { await takeOver(epoch) }
                case .stepDown(let reason):
                    taking?.cancel()
                    await cluster.stepDown(reason: reason)
                case .wake(let moment):
                    timer?.cancel()
                    let delay = Duration.nanoseconds(max(0, moment.nanoseconds - now.nanoseconds))
                    timer = Task { [continuation] in
                        guard (try? await Task.sleep(for: delay)) != nil else { return }
                        continuation.yield(.input(.timer))
                    }
                }
            }
            if let stopped {
                stopped.resume()
                return
            }
        }
    }

    /// Runs one database call in its own task and feeds its answer (a failure is `.failed`).
    private func attempt(_ call: @escaping @Sendable (Moment) async throws -> LeaseMachine.Input) {
        let started = now
        Task { [continuation, logger] in
            let input: LeaseMachine.Input
            do {
                input = try await call(started)
            } catch {
                logger.debug("the lease: \(error)")
                input = .failed("\(error)")
            }
            continuation.yield(.input(input))
        }
    }
}
