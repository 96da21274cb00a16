import AsyncHTTPClient
import NIOCore
import OrchCore

/// Runs a task's HTTP health check next to its container: GET on the published host port
/// and path, every `interval`, each try bounded by `timeout`. The first success makes the
/// task healthy; `failureThreshold` failures in a row make it unhealthy.
public struct HealthProber: Sendable {
    private let client: HTTPClient

    public init(client: HTTPClient = .shared) { self.client = client }

    /// One try: nil when the check answered 2xx or 3xx in time, else what went wrong
    /// (`GET /health answered 503`, `GET /health: no answer within 1s`).
    public func probe(_ check: HealthCheck, host: String, port: Int) async -> String? {
        let path = (check.path.hasPrefix("/") ? "" : "/") + check.path
        var request = HTTPClientRequest(url: "http://\(host):\(port)\(path)")
        request.method = .GET
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(check.timeout.nanoseconds))
            _ = try? await response.body.collect(upTo: 64 << 10)
            if (200..<400).contains(response.status.code) { return nil }
            return "GET \(path) answered \(response.status.code)\(response.status.reasonPhrase.isEmpty ? "" : " " + response.status.reasonPhrase)"
        } catch {
            return "GET \(path): \(Self.describe(error, timeout: check.timeout))"
        }
    }

    static func describe(_ error: any Error, timeout: Duration) -> String {
        let text = "\(error)"
        if let client = error as? HTTPClientError, client == .deadlineExceeded || client == .readTimeout || client == .connectTimeout {
            return "no answer within \(DurationText.format(timeout))"
        }
        if text.contains("connectionRefused") || text.contains("Connection refused") { return "connection refused" }
        if text.contains("remoteConnectionClosed") { return "the connection was closed without an answer" }
        return String(text.prefix(200))
    }

    /// Checks until cancelled, calling `changed` with every new health (with the last
    /// failure when it is unhealthy).
    public func watch(
        _ check: HealthCheck, host: String, port: Int, changed: @Sendable (TaskHealth, _ failure: String?) async -> Void
    ) async {
        var tracker = HealthTracker(failureThreshold: check.failureThreshold)
        while !Task.isCancelled {
            let failure = await probe(check, host: host, port: port)
            if Task.isCancelled { return }
            if let health = tracker.record(passed: failure == nil) {
                let times = tracker.failureThreshold == 1 ? "" : " (\(tracker.failureThreshold) times in a row)"
                await changed(health, health == .unhealthy ? failure.map { $0 + times } : nil)
            }
            try? await Task.sleep(for: check.interval)
        }
    }
}

/// Turns check results into health: the first pass is healthy, `failureThreshold` failures
/// in a row are unhealthy. Returns the health only when it changes.
public struct HealthTracker: Sendable, Hashable {
    public let failureThreshold: Int
    public private(set) var health: TaskHealth = .starting
    private var failures = 0

    public init(failureThreshold: Int) { self.failureThreshold = max(1, failureThreshold) }

    public mutating func record(passed: Bool) -> TaskHealth? {
        let next: TaskHealth
        if passed {
            failures = 0
            next = .healthy
        } else {
            failures += 1
            next = failures >= failureThreshold ? .unhealthy : health
        }
        defer { health = next }
        return next == health ? nil : next
    }
}
