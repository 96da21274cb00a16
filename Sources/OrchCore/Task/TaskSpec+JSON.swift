// The task file in our own JSON shape (see docs/TASKS.md):
//
//   {"id": "web-1", "name": "web", "image": "orch-busybox:latest",
//    "command": ["httpd", "-f", "-p", "8080"], "environment": {"MODE": "demo"},
//    "ports": [{"containerPort": 8080, "protocol": "tcp", "hostPort": 18080}],
//    "resources": {"cpus": 0.5, "memory": "128MiB"},
//    "restartPolicy": {"mode": "on-failure", "maxRestarts": 5},
//    "stopGracePeriod": "10s",
//    "healthCheck": {"path": "/health", "port": 8080, "interval": "10s", "timeout": "2s", "failureThreshold": 3},
//    "constraints": {"node": "worker-1", "labels": {"disk": "ssd"}}}
//
// Reading never stops at the first problem: every field is checked and every problem is
// returned with its path. Unknown fields are refused (a typo must not silently vanish).

extension TaskSpec: Codable {
    enum Key {
        static let all = ["id", "name", "image", "command", "environment", "ports", "resources",
                          "restartPolicy", "stopGracePeriod", "healthCheck", "constraints", "disconnect"]
    }

    /// Reads a spec in our shape from any decoder; throws ``TaskSpecError`` listing every problem.
    public init(from decoder: any Decoder) throws {
        try self.init(json: JSONValue(from: decoder))
    }

    /// Reads a spec in our shape; every problem is reported at once, with its path.
    public init(json: JSONValue) throws(TaskSpecError) {
        var reader = FieldReader()
        let spec = reader.taskSpec(json, at: "")
        if let spec, reader.problems.isEmpty {
            let problems = spec.validationProblems()
            if problems.isEmpty {
                self = spec
                return
            }
            throw TaskSpecError(problems: problems)
        }
        let valueProblems = spec?.validationProblems().filter { !reader.hasProblem(at: $0.path) } ?? []
        throw TaskSpecError(problems: reader.problems + valueProblems)
    }

    /// Writes the normalized spec: every default filled in, sizes in bytes, durations as text.
    public func encode(to encoder: any Encoder) throws {
        try json.encode(to: encoder)
    }

    /// The normalized spec as a JSON value.
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "image": .string(image),
            "environment": .object(environment.mapValues(JSONValue.string)),
            "ports": .array(ports.map { port in
                var fields: [String: JSONValue] = [
                    "containerPort": .number(Double(port.containerPort)),
                    "protocol": .string(port.protocol.rawValue),
                ]
                if let host = port.hostPort { fields["hostPort"] = .number(Double(host)) }
                if let publish = port.publish {
                    fields["publish"] = .number(Double(publish))
                    fields["publishMode"] = .string(port.publishMode.rawValue)
                }
                return .object(fields)
            }),
            "resources": resources.json,
            "stopGracePeriod": .string(DurationText.format(stopGracePeriod)),
            "constraints": .object(
                ["labels": .object(constraints.labels.mapValues(JSONValue.string))]
                    .merging(constraints.node.map { ["node": JSONValue.string($0)] } ?? [:]) { a, _ in a }),
        ]
        var restart: [String: JSONValue] = ["mode": .string(restartPolicy.mode.rawValue)]
        if let max = restartPolicy.maxRestarts { restart["maxRestarts"] = .number(Double(max)) }
        object["restartPolicy"] = .object(restart)
        if let id { object["id"] = .string(id.rawValue) }
        if let name { object["name"] = .string(name) }
        if let command { object["command"] = .array(command.map(JSONValue.string)) }
        if let check = healthCheck {
            object["healthCheck"] = .object([
                "path": .string(check.path),
                "port": .number(Double(check.port)),
                "interval": .string(DurationText.format(check.interval)),
                "timeout": .string(DurationText.format(check.timeout)),
                "failureThreshold": .number(Double(check.failureThreshold)),
            ])
        }
        if let disconnect { object["disconnect"] = .object(["stopAfter": .string(DurationText.format(disconnect.stopAfter))]) }
        return .object(object)
    }
}

// MARK: - Reading our shape

extension FieldReader {
    /// Reads our task shape; nil only when `value` is not an object at all.
    mutating func taskSpec(_ value: JSONValue, at path: String) -> TaskSpec? {
        guard let fields = fields(value, at: path, Keys(known: TaskSpec.Key.all)) else { return nil }
        var spec = TaskSpec(image: "")
        if let id = string(fields["id"], at: fields.path("id")) { spec.id = TaskID(rawValue: id) }
        spec.name = string(fields["name"], at: fields.path("name"))
        if fields["image"] == nil {
            report(fields.path("image"), "is required")
        } else {
            spec.image = string(fields["image"], at: fields.path("image")) ?? ""
        }
        spec.command = command(fields["command"], at: fields.path("command"))
        spec.environment = environment(fields["environment"], at: fields.path("environment")) ?? [:]
        spec.ports = ports(fields["ports"], at: fields.path("ports"))
        if let value = fields["resources"] { spec.resources = resources(value, at: fields.path("resources")) }
        if let value = fields["restartPolicy"] {
            spec.restartPolicy = restartPolicy(value, at: fields.path("restartPolicy"))
        }
        if let grace = duration(fields["stopGracePeriod"], at: fields.path("stopGracePeriod")) {
            spec.stopGracePeriod = grace
        }
        if let value = fields["healthCheck"] {
            spec.healthCheck = healthCheck(value, at: fields.path("healthCheck"), ports: spec.ports)
        }
        if let value = fields["constraints"] { spec.constraints = constraints(value, at: fields.path("constraints")) }
        if let value = fields["disconnect"] { spec.disconnect = disconnect(value, at: fields.path("disconnect")) }
        return spec
    }

    /// An array of arguments, or a string run by `/bin/sh -c`.
    private mutating func command(_ value: JSONValue?, at path: String) -> [String]? {
        if case .string(let line)? = value { return ["/bin/sh", "-c", line] }
        return strings(value, at: path)
    }

    /// An object of names to values, or Docker's array of "NAME=value".
    private mutating func environment(_ value: JSONValue?, at path: String) -> [String: String]? {
        guard case .array(let entries)? = value else { return stringMap(value, at: path) }
        var environment: [String: String] = [:]
        for (index, entry) in entries.enumerated() {
            guard let text = string(entry, at: join(path, index)) else { continue }
            guard let equals = text.firstIndex(of: "=") else {
                report(join(path, index), "expected \"NAME=value\", found \"\(text)\"")
                continue
            }
            environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        return environment
    }

    private mutating func ports(_ value: JSONValue?, at path: String) -> [PortSpec] {
        guard let elements = array(value, at: path) else { return [] }
        var ports: [PortSpec] = []
        for (index, element) in elements.enumerated() {
            let elementPath = join(path, index)
            switch element {
            case .number, .string:
                if let port = portShorthand(element, at: elementPath) { ports.append(port) }
            default:
                let keys = Keys(known: ["containerPort", "protocol", "hostPort", "publish", "publishMode"])
                guard let fields = fields(element, at: elementPath, keys) else { continue }
                var port = PortSpec(containerPort: 0)
                if fields["containerPort"] == nil { report(fields.path("containerPort"), "is required") }
                port.containerPort = integer(fields["containerPort"], at: fields.path("containerPort")) ?? 0
                port.hostPort = integer(fields["hostPort"], at: fields.path("hostPort"))
                port.publish = integer(fields["publish"], at: fields.path("publish"))
                if let text = string(fields["publishMode"], at: fields.path("publishMode")) {
                    if let mode = PublishMode(rawValue: text) {
                        port.publishMode = mode
                    } else {
                        report(fields.path("publishMode"), "must be tcp or http, found \"\(text)\"")
                    }
                    if fields["publish"] == nil { report(fields.path("publishMode"), "needs publish (the port to publish)") }
                }
                if let text = string(fields["protocol"], at: fields.path("protocol")) {
                    port.protocol = portProtocol(text, at: fields.path("protocol")) ?? .tcp
                }
                ports.append(port)
            }
        }
        return ports
    }

    /// `8080` or `"8080/udp"`.
    mutating func portShorthand(_ value: JSONValue, at path: String) -> PortSpec? {
        if case .number = value {
            return integer(value, at: path).map { PortSpec(containerPort: $0) }
        }
        guard case .string(let text) = value else { return nil }
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let number = parts.first.flatMap({ Int($0) }) else {
            report(path, "expected a port such as 8080 or \"8080/tcp\", found \"\(text)\"")
            return nil
        }
        let proto = parts.count == 2 ? portProtocol(parts[1], at: path) : .tcp
        return proto.map { PortSpec(containerPort: number, protocol: $0) }
    }

    mutating func portProtocol(_ text: String, at path: String) -> PortProtocol? {
        if let proto = PortProtocol(rawValue: text.lowercased()) { return proto }
        report(path, "unknown protocol \"\(text)\"; expected tcp or udp")
        return nil
    }

    private mutating func resources(_ value: JSONValue, at path: String) -> Resources {
        var resources = Resources.default
        guard let fields = fields(value, at: path, Keys(known: ["cpus", "memory", "cpuLimit", "memoryMax"])) else { return resources }
        if let millicores = millicores(fields["cpus"], at: fields.path("cpus")) { resources.millicores = millicores }
        if let memory = bytes(fields["memory"], at: fields.path("memory")) { resources.memoryBytes = memory }
        resources.cpuLimitMillicores = millicores(fields["cpuLimit"], at: fields.path("cpuLimit"))
        resources.memoryMaxBytes = bytes(fields["memoryMax"], at: fields.path("memoryMax"))
        return resources
    }

    /// `{"mode": "on-failure", "maxRestarts": 3}` or just `"always"`.
    private mutating func restartPolicy(_ value: JSONValue, at path: String) -> RestartPolicy {
        if case .string(let text) = value {
            return restartMode(text, at: path).map { RestartPolicy(mode: $0) } ?? .never
        }
        guard let fields = fields(value, at: path, Keys(known: ["mode", "maxRestarts"])) else { return .never }
        var policy = RestartPolicy.never
        if let text = string(fields["mode"], at: fields.path("mode")) {
            policy.mode = restartMode(text, at: fields.path("mode")) ?? .never
        }
        policy.maxRestarts = integer(fields["maxRestarts"], at: fields.path("maxRestarts"))
        return policy
    }

    private mutating func restartMode(_ text: String, at path: String) -> RestartMode? {
        if let mode = RestartMode(rawValue: text) { return mode }
        let expected = RestartMode.allCases.map(\.rawValue).joined(separator: ", ")
        let hint = RestartMode(rawValue: text.lowercased()).map { "; did you mean '\($0.rawValue)'?" } ?? ""
        report(path, "unknown restart mode \"\(text)\"; expected one of \(expected)\(hint)")
        return nil
    }

    /// The full object, or just a path (`"/health"`) checked on the first published TCP port.
    private mutating func healthCheck(_ value: JSONValue, at path: String, ports: [PortSpec]) -> HealthCheck? {
        let firstPort = ports.first { $0.protocol == .tcp }?.containerPort
        if case .string(let checkPath) = value {
            if firstPort == nil { report(path, "needs a published TCP port to check; add one to ports") }
            return HealthCheck(path: checkPath, port: firstPort ?? 0)
        }
        let keys = Keys(known: ["path", "port", "interval", "timeout", "failureThreshold"])
        guard let fields = fields(value, at: path, keys) else { return nil }
        var check = HealthCheck(path: "/", port: firstPort ?? 0)
        if let checkPath = string(fields["path"], at: fields.path("path")) { check.path = checkPath }
        if let port = integer(fields["port"], at: fields.path("port")) {
            check.port = port
        } else if fields["port"] == nil, firstPort == nil {
            report(fields.path("port"), "is required when the task publishes no TCP port")
        }
        if let interval = duration(fields["interval"], at: fields.path("interval")) { check.interval = interval }
        if let timeout = duration(fields["timeout"], at: fields.path("timeout")) { check.timeout = timeout }
        if let threshold = integer(fields["failureThreshold"], at: fields.path("failureThreshold")) {
            check.failureThreshold = threshold
        }
        return check
    }

    /// `{"stopAfter": "10s"}`.
    private mutating func disconnect(_ value: JSONValue, at path: String) -> DisconnectPolicy? {
        guard let fields = fields(value, at: path, Keys(known: ["stopAfter"])) else { return nil }
        if fields["stopAfter"] == nil { report(fields.path("stopAfter"), "is required") }
        return duration(fields["stopAfter"], at: fields.path("stopAfter")).map(DisconnectPolicy.init(stopAfter:))
    }

    private mutating func constraints(_ value: JSONValue, at path: String) -> PlacementConstraints {
        guard let fields = fields(value, at: path, Keys(known: ["node", "labels"])) else { return .none }
        return PlacementConstraints(
            node: string(fields["node"], at: fields.path("node")),
            labels: stringMap(fields["labels"], at: fields.path("labels")) ?? [:])
    }
}

extension Resources {
    /// `{"cpus": 0.5, "memory": 134217728}`, with `cpuLimit` and `memoryMax` when given.
    var json: JSONValue {
        var fields: [String: JSONValue] = ["cpus": .number(cpus), "memory": .number(Double(memoryBytes))]
        if let limit = cpuLimitMillicores { fields["cpuLimit"] = .number(Double(limit) / 1000) }
        if let limit = memoryMaxBytes { fields["memoryMax"] = .number(Double(limit)) }
        return .object(fields)
    }
}
