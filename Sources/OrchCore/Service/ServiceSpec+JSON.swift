import Foundation

/// A service file (docs/SERVICES.md): `{"name": "web", "replicas": 3, "task": {...a task
/// file's fields...}, "update": {"parallelism": 1, "order": "start-first",
/// "healthyDeadline": "60s", "minHealthyTime": "5s", "autoRollback": true}}`; `update` and
/// each of its fields optional. Every problem is reported at once, with its path.
extension ServiceSpec {
    /// The most replicas a service may ask for.
    public static let maximumReplicas = 1000

    public init(json: JSONValue) throws(TaskSpecError) {
        var reader = FieldReader()
        let parts = reader.serviceParts(json)
        if parts?.name == nil, !reader.hasProblem(at: "name") { reader.report("name", "a service needs a name") }
        if parts?.task == nil, !reader.hasProblem(at: "task") { reader.report("task", "a service needs a task template (the fields of a task file)") }
        guard reader.problems.isEmpty, let parts, let name = parts.name, let task = parts.task else {
            throw TaskSpecError(problems: reader.problems)
        }
        self.init(name: name, replicas: parts.replicas ?? 1, task: task, update: parts.update ?? UpdatePolicy())
    }

    /// Reads a service file's bytes.
    public static func decode(_ data: Data) throws(TaskSpecError) -> ServiceSpec {
        try ServiceSpec(json: try TaskFile.parse(data, what: "service file"))
    }

    /// Why `name` cannot name a service, or nil: it is a DNS label (`NAME.service.orch`):
    /// lowercase letters, digits and dashes, 1 to 63 of them, no dash at either end.
    public static func nameProblem(_ name: String) -> String? {
        let allowed = name.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }
        guard !name.isEmpty, name.count <= 63, allowed, name.first != "-", name.last != "-" else {
            return "must be a DNS label: 1 to 63 lowercase letters, digits and dashes, not starting or ending with a dash"
        }
        return nil
    }
}

/// A change to a service (`PUT /services/{name}`): the fields of a service file, each
/// optional; those given replace the service's own. A new template makes a new version.
public struct ServiceChange: Sendable, Hashable {
    /// When given, it must be the service's name.
    public var name: String?
    public var replicas: Int?
    public var task: TaskSpec?
    public var update: UpdatePolicy?

    public init(name: String? = nil, replicas: Int? = nil, task: TaskSpec? = nil, update: UpdatePolicy? = nil) {
        self.name = name
        self.replicas = replicas
        self.task = task
        self.update = update
    }

    public init(json: JSONValue) throws(TaskSpecError) {
        var reader = FieldReader()
        let parts = reader.serviceParts(json)
        guard reader.problems.isEmpty, let parts else { throw TaskSpecError(problems: reader.problems) }
        self = parts
        if name == nil, replicas == nil, task == nil, update == nil {
            throw TaskSpecError(problems: [SpecProblem(path: "", message: "nothing to change: give replicas, task or update")])
        }
    }

    public static func decode(_ data: Data) throws(TaskSpecError) -> ServiceChange {
        try ServiceChange(json: try TaskFile.parse(data, what: "service change"))
    }
}

extension FieldReader {
    /// The fields of a service file, each checked where given.
    mutating func serviceParts(_ json: JSONValue) -> ServiceChange? {
        guard let fields = fields(json, at: "", .init(known: ["name", "replicas", "task", "update"])) else { return nil }
        var parts = ServiceChange()
        parts.name = string(fields["name"], at: "name")
        if let name = parts.name, let problem = ServiceSpec.nameProblem(name) { report("name", problem) }
        if fields["replicas"] != nil {
            parts.replicas = integer(fields["replicas"], at: "replicas")
            if let replicas = parts.replicas, !(0...ServiceSpec.maximumReplicas).contains(replicas) {
                report("replicas", "must be from 0 to \(ServiceSpec.maximumReplicas), not \(replicas)")
            }
        }
        if let value = fields["task"] {
            if case .object(let object) = value, object["id"] != nil, object["id"] != .null {
                report("task.id", "a service's tasks are named by the service (NAME.SLOT); leave id out")
            }
            var stripped = value
            if case .object(var object) = value { object["id"] = nil; stripped = .object(object) }
            parts.task = taskSpec(stripped, at: "task")
            if let spec = parts.task {
                for problem in spec.validationProblems() where !hasProblem(at: problem.path.isEmpty ? "task" : "task.\(problem.path)") {
                    report(problem.path.isEmpty ? "task" : "task.\(problem.path)", problem.message)
                }
            }
        }
        if fields["update"] != nil { parts.update = updatePolicy(fields["update"], at: "update") }
        return parts
    }

    mutating func updatePolicy(_ value: JSONValue?, at path: String) -> UpdatePolicy? {
        var policy = UpdatePolicy()
        guard let value else { return policy }
        guard let fields = fields(value, at: path, .init(known: ["parallelism", "order", "healthyDeadline", "minHealthyTime", "autoRollback"])) else {
            return nil
        }
        if let parallelism = integer(fields["parallelism"], at: fields.path("parallelism")) {
            if parallelism >= 1 { policy.parallelism = parallelism } else { report(fields.path("parallelism"), "must be at least 1") }
        }
        if let text = string(fields["order"], at: fields.path("order")) {
            if let order = UpdatePolicy.Order(rawValue: text) {
                policy.order = order
            } else {
                report(fields.path("order"), "must be start-first or stop-first, not \"\(text)\"")
            }
        }
        if let deadline = duration(fields["healthyDeadline"], at: fields.path("healthyDeadline")) {
            if deadline > .zero { policy.healthyDeadline = deadline } else { report(fields.path("healthyDeadline"), "must be more than 0") }
        }
        if let minimum = duration(fields["minHealthyTime"], at: fields.path("minHealthyTime")) {
            if minimum >= .zero { policy.minHealthyTime = minimum } else { report(fields.path("minHealthyTime"), "must not be negative") }
        }
        if let rollback = fields["autoRollback"] {
            if case .bool(let flag) = rollback { policy.autoRollback = flag } else {
                report(fields.path("autoRollback"), "expected true or false, found \(rollback.kindDescription)")
            }
        }
        return policy
    }
}
