import AsyncHTTPClient
import NIOCore
import OrchCore

/// Runs a task's HTTP health check next to its container: GET on the published host port
/// and path, every `interval`, each try bounded by `timeout`. The first success makes the
/// task healthy; `failureThreshold` failures in a row make it unhealthy.
public struct HealthProber: Sendable {
    private let client: HTTPClient

    public init(client: HTTPClient = .shared) { self.client = client }

    /// One try: whether the check answered 2xx or 3xx in time.
    public func probe(_ check: HealthCheck, host: String, port: Int) async -> Bool {
        var request = HTTPClientRequest(url: "http://\(host):\(port)\(check.path.hasPrefix("/") ? "" : "/")\(check.path)")
        request.method = .GET
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(check.timeout.nanoseconds))
            _ = try? await response.body.collect(upTo: 64 << 10)
            return (200..<400).contains(response.status.code)
        } catch {
            return false
        }
    }

    /// Checks until cancelled, calling `changed` with every new health.
    public func watch(
        _ check: HealthCheck, host: String, port: Int, changed: @Sendable (TaskHealth) async -> Void
    ) async {
        var tracker = HealthTracker(failureThreshold: check.failureThreshold)
        while !Task.isCancelled {
            let passed = await probe(check, host: host, port: port)
            if Task.isCancelled { return }
            if let health = tracker.record(passed: passed) { await changed(health) }
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
