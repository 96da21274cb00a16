import Foundation

/// Which replica of which service a task is.
public struct ServiceSlot: Sendable, Hashable, Codable {
    public var service: String
    public var version: ServiceVersion
    /// `NAME.slot`, from 1.
    public var slot: Int

    public init(service: String, version: ServiceVersion, slot: Int) {
        self.service = service
        self.version = version
        self.slot = slot
    }
}

/// Everything the manager keeps about one service: its spec as it stands, the templates of
/// the versions it may still run, its deploy and what happened to it.
public struct ServiceRecord: Sendable, Hashable, Codable {
    public var name: String
    public var replicas: Int
    public var update: UpdatePolicy
    /// The newest version made (each change of the template makes one).
    public var latestVersion: ServiceVersion
    /// The templates by version: the newest ones and those a deploy names.
    public var templates: [ServiceVersion: TaskSpec]
    /// The last deploy (running or ended); nil until the first change of the template.
    public var deploy: DeployRecord?
    /// The newest events, oldest first (at most ``ServiceRecord/eventLimit``).
    public var events: [ServiceEvent]
    /// Asked to be removed: its tasks stop, then it is forgotten.
    public var removing: Bool
    public var createdAt: Date
    public var updatedAt: Date
    /// The manager's revision when this record last changed.
    public var revision: UInt64 = 0

    public static let eventLimit = 50
    /// Templates kept beyond those a deploy names.
    public static let templateLimit = 5

    enum CodingKeys: String, CodingKey {
        case name, replicas, update, latestVersion, templates, deploy, events, removing, createdAt, updatedAt, revision
    }

    /// A new service at version 1, as created at `now`.
    public init(_ spec: ServiceSpec, now: Date) {
        name = spec.name
        replicas = spec.replicas
        update = spec.update
        latestVersion = 1
        var template = spec.task
        template.id = nil
        templates = [1: template]
        events = []
        removing = false
        createdAt = now
        updatedAt = now
    }

    /// The version the replicas are to run: the deploy's target, else the only one there is.
    public var version: ServiceVersion { deploy?.target ?? latestVersion }

    /// The template of the version the replicas are to run.
    public var template: TaskSpec { templates[version] ?? templates[latestVersion]! }

    /// The service as a file would give it now.
    public var spec: ServiceSpec { ServiceSpec(name: name, replicas: replicas, task: template, update: update) }

    public mutating func record(_ message: String, at date: Date) {
        events.append(ServiceEvent(at: date, message: message))
        if events.count > Self.eventLimit { events.removeFirst(events.count - Self.eventLimit) }
    }

    /// Forgets templates no deploy names, beyond the newest few.
    public mutating func pruneTemplates() {
        var keep = Set(templates.keys.sorted().suffix(Self.templateLimit))
        keep.insert(latestVersion)
        if let deploy { keep.formUnion([deploy.from, deploy.to]) }
        templates = templates.filter { keep.contains($0.key) }
    }
}

/// A deploy as kept: ``Deploy`` with wall-clock dates (a moment means nothing after a restart).
public struct DeployRecord: Sendable, Hashable, Codable {
    public var from: ServiceVersion
    public var to: ServiceVersion
    public var state: Deploy.State
    public var startedAt: Date
    public var endedAt: Date?
    public var reason: String?
    /// What happened during the deploy, oldest first.
    public var events: [ServiceEvent]
    /// It goes back to `from` (see ``Deploy/rollback``).
    public var rollback: Bool

    public init(from: ServiceVersion, to: ServiceVersion, state: Deploy.State, startedAt: Date, reason: String? = nil) {
        self.from = from
        self.to = to
        self.state = state
        self.startedAt = startedAt
        self.reason = reason
        rollback = state == .rollingBack || state == .rolledBack
        events = []
    }

    public var target: ServiceVersion { rollback ? from : to }
    public var isActive: Bool { state == .running || state == .rollingBack }
}

public struct ServiceEvent: Sendable, Hashable, Codable {
    public var at: Date
    public var message: String

    public init(at: Date, message: String) {
        self.at = at
        self.message = message
    }
}

extension Deploy.State: Codable {}

extension UpdatePolicy: Codable {
    enum CodingKeys: String, CodingKey { case parallelism, order, healthyDeadline, minHealthyTime, autoRollback }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            parallelism: try container.decode(Int.self, forKey: .parallelism),
            order: Order(rawValue: try container.decode(String.self, forKey: .order)) ?? .startFirst,
            healthyDeadline: .milliseconds(try container.decode(Int64.self, forKey: .healthyDeadline)),
            minHealthyTime: .milliseconds(try container.decode(Int64.self, forKey: .minHealthyTime)),
            autoRollback: try container.decode(Bool.self, forKey: .autoRollback))
    }

    /// Durations in milliseconds (the store's encoding; the API shows text, see `json`).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(parallelism, forKey: .parallelism)
        try container.encode(order.rawValue, forKey: .order)
        try container.encode(healthyDeadline.milliseconds, forKey: .healthyDeadline)
        try container.encode(minHealthyTime.milliseconds, forKey: .minHealthyTime)
        try container.encode(autoRollback, forKey: .autoRollback)
    }

    /// The policy as a service file writes it.
    public var json: JSONValue {
        .object([
            "parallelism": .number(Double(parallelism)),
            "order": .string(order.rawValue),
            "healthyDeadline": .string(DurationText.format(healthyDeadline)),
            "minHealthyTime": .string(DurationText.format(minHealthyTime)),
            "autoRollback": .bool(autoRollback),
        ])
    }
}

extension ServiceSpec {
    /// The service as a file writes it: every default filled in, the template without an id.
    public var json: JSONValue {
        var task = task.json
        if case .object(var fields) = task { fields["id"] = nil; task = .object(fields) }
        return .object(["name": .string(name), "replicas": .number(Double(replicas)), "task": task, "update": update.json])
    }
}
