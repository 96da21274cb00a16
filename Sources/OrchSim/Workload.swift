import OrchCore

/// What a simulated container does once started, read from its task's spec (as a real
/// container's command decides what it does): the environment variable `SIM_BEHAVIOUR`.
///
/// - `forever`: runs until stopped;
/// - `exit:CODE:MS`: exits with CODE after about MS milliseconds (±20 %);
/// - `instant:CODE`: exits with CODE at once, before its start is even answered.
///
/// `SIM_HEALTH=flaky:MS` makes a task with a health check turn unhealthy about MS
/// milliseconds after it was first found healthy; otherwise it stays healthy.
enum Behaviour: Hashable {
    case forever
    case exit(code: Int32, after: Duration)
    case instant(code: Int32)

    static let key = "SIM_BEHAVIOUR"
    static let healthKey = "SIM_HEALTH"

    init(_ spec: TaskSpec) {
        let parts = (spec.environment[Self.key] ?? "forever").split(separator: ":").map(String.init)
        switch parts.first {
        case "exit" where parts.count == 3:
            self = .exit(code: Int32(parts[1]) ?? 1, after: .milliseconds(Int(parts[2]) ?? 1000))
        case "instant" where parts.count == 2:
            self = .instant(code: Int32(parts[1]) ?? 1)
        default:
            self = .forever
        }
    }

    var text: String {
        switch self {
        case .forever: "forever"
        case .exit(let code, let after): "exit:\(code):\(after.milliseconds)"
        case .instant(let code): "instant:\(code)"
        }
    }

    /// The health check turns unhealthy this long after it first passed; nil: stays healthy.
    static func flakyAfter(_ spec: TaskSpec) -> Duration? {
        guard let text = spec.environment[healthKey], text.hasPrefix("flaky:"), let millis = Int(text.dropFirst(6)) else { return nil }
        return .milliseconds(millis)
    }
}

/// The tasks the simulated clients submit: busybox-like images, small resources, the three
/// restart policies with small maxima, some with a disconnect policy, a health check or a
/// fixed host port.
enum Workload {
    static let images = ["busybox:1.36", "busybox:1.37", "alpine:3.20"]

    static func spec(id: TaskID?, using random: inout SimRandom) -> TaskSpec {
        let behaviour: Behaviour
        switch random.weighted([50, 20, 22, 8]) {
        case 0: behaviour = .forever
        case 1: behaviour = .exit(code: 0, after: .milliseconds(random.int(500...8_000)))
        case 2: behaviour = .exit(code: random.pick([1, 137]), after: .milliseconds(random.int(300...8_000)))
        default: behaviour = .instant(code: random.pick([0, 1]))
        }
        let policy: RestartPolicy
        switch random.weighted([30, 35, 35]) {
        case 0: policy = .never
        case 1: policy = RestartPolicy(mode: .onFailure, maxRestarts: random.int(0...3))
        default: policy = RestartPolicy(mode: .always, maxRestarts: random.int(0...3))
        }
        var environment = [Behaviour.key: behaviour.text]
        var ports: [PortSpec] = []
        var healthCheck: HealthCheck?
        if random.chance(0.2) {
            ports.append(PortSpec(containerPort: 8080))
            healthCheck = HealthCheck(path: "/healthz", port: 8080, interval: .milliseconds(500), timeout: .milliseconds(200), failureThreshold: 2)
            if random.chance(0.3) { environment[Behaviour.healthKey] = "flaky:\(random.int(1_000...10_000))" }
        }
        if random.chance(0.1) {
            ports.append(PortSpec(containerPort: 80, hostPort: 9000 + random.int(0...2)))
        }
        let command = ["sh", "-c", "simulated \(behaviour.text)"]
        return TaskSpec(
            id: id, name: nil, image: random.pick(images), command: command, environment: environment, ports: ports,
            resources: Resources(millicores: 100 * random.int(1...5), memoryBytes: random.pick([32, 64, 64, 128]) << 20),
            restartPolicy: policy, stopGracePeriod: .seconds(random.pick([1, 2, 3, 5, 10])), healthCheck: healthCheck,
            disconnect: random.chance(0.3) ? DisconnectPolicy(stopAfter: .seconds(random.pick([3, 5, 10, 10]))) : nil)
    }

    /// The same task with another spec: a re-submission that must be refused as a conflict
    /// while the first one exists.
    static func altered(_ spec: TaskSpec) -> TaskSpec {
        var other = spec
        other.image = spec.image == images[0] ? images[1] : images[0]
        return other
    }
}
