import Foundation

/// What a task's restart policy says once its attempt has ended (DESIGN.md, "Restart
/// policies"): never / on-failure / always, a maximum of restarts, and a backoff that
/// doubles from 1 s up to 5 minutes, reset after 10 minutes of clean running.
public enum RestartDecision: Sendable, Hashable {
    /// Place it again once `after` has passed.
    case restart(after: Duration)
    /// Leave it ended; `reason` says why when the policy gave up.
    case leave(reason: String?)

    public static let initialBackoff: Duration = .seconds(1)
    public static let maximumBackoff: Duration = .seconds(300)
    /// A run this long resets the restart count.
    public static let cleanRun: Duration = .seconds(600)

    /// The decision for `record`, whose attempt just ended (state completed, failed or lost).
    public static func decide(for record: TaskRecord, now: Date) -> RestartDecision {
        guard record.desiredState == .run else { return .leave(reason: nil) }
        let policy = record.spec.restartPolicy
        let wanted: Bool
        switch policy.mode {
        case .never: wanted = false
        case .onFailure: wanted = record.state == .failed || record.state == .lost
        case .always: wanted = true
        }
        guard wanted else { return .leave(reason: nil) }
        let restarts = effectiveRestartCount(record, now: now)
        if let maximum = policy.maxRestarts, restarts >= maximum {
            return .leave(reason: "gave up after \(restarts) restart\(restarts == 1 ? "" : "s")")
        }
        return .restart(after: backoff(afterRestarts: restarts))
    }

    /// The restart count that counts: 0 again once the last attempt ran cleanly for 10 minutes.
    public static func effectiveRestartCount(_ record: TaskRecord, now: Date) -> Int {
        if let started = record.startedAt, now.timeIntervalSince(started) >= Double(cleanRun.components.seconds) { return 0 }
        return record.restartCount
    }

    /// 1 s, 2 s, 4 s, ... up to 5 minutes.
    public static func backoff(afterRestarts restarts: Int) -> Duration {
        let exponent = min(max(restarts, 0), 16)
        return min(initialBackoff * (1 << exponent), maximumBackoff)
    }
}
