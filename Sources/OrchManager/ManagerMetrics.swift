import CoreMetrics
import OrchCore
import Prometheus

/// The manager's metrics, through swift-metrics onto its own Prometheus registry (no
/// process-wide bootstrap, so that several managers can live in one test process).
public final class ManagerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let placements: CoreMetrics.Counter
    private let heartbeats: CoreMetrics.Counter
    private let submissions: CoreMetrics.Counter
    private let restarts: CoreMetrics.Counter
    private let heartbeatApply: CoreMetrics.Timer
    private let tasksByState: [TaskState: CoreMetrics.Gauge]
    private let nodesByState: [NodeDTO.State: CoreMetrics.Gauge]

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["orch_heartbeat_apply_seconds"] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1),
        ]
        placements = CoreMetrics.Counter(label: "orch_placements_total", dimensions: [], factory: factory)
        heartbeats = CoreMetrics.Counter(label: "orch_heartbeats_total", dimensions: [], factory: factory)
        submissions = CoreMetrics.Counter(label: "orch_task_submissions_total", dimensions: [], factory: factory)
        restarts = CoreMetrics.Counter(label: "orch_task_restarts_total", dimensions: [], factory: factory)
        heartbeatApply = CoreMetrics.Timer(label: "orch_heartbeat_apply_seconds", dimensions: [], factory: factory)
        tasksByState = Dictionary(uniqueKeysWithValues: TaskState.allCases.map {
            ($0, CoreMetrics.Gauge(label: "orch_tasks", dimensions: [("state", $0.rawValue)], factory: factory))
        })
        nodesByState = Dictionary(uniqueKeysWithValues: NodeDTO.State.allCases.map {
            ($0, CoreMetrics.Gauge(label: "orch_nodes", dimensions: [("state", $0.rawValue)], factory: factory))
        })
    }

    func placed() { placements.increment() }
    func heartbeat() { heartbeats.increment() }
    /// From a heartbeat read off its connection to its node state updated (queueing included).
    func heartbeatApplied(after duration: Duration) { heartbeatApply.recordNanoseconds(duration.nanoseconds) }
    func submitted() { submissions.increment() }
    func taskEvent(_ event: TaskEvent) {
        if case .requeued = event { restarts.increment() }
    }

    /// The Prometheus text, with the gauges set from `counts` first.
    func render(tasks: [TaskState: Int], nodes: [NodeDTO.State: Int]) -> String {
        for (state, gauge) in tasksByState { gauge.record(tasks[state] ?? 0) }
        for (state, gauge) in nodesByState { gauge.record(nodes[state] ?? 0) }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}
