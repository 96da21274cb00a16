/// Cube's task event file, translated to our ``TaskSpec``.
///
/// ```json
/// {"ID": "6a3e…", "State": 2, "Timestamp": "2024-05-01T10:00:00Z",
///  "Task": {"ID": "0f7c…", "Name": "web-1", "Image": "orch-busybox:latest",
///           "Cpu": 0.5, "Memory": 134217728, "Disk": 1,
///           "ExposedPorts": {"8080/tcp": {}}, "PortBindings": {"8080/tcp": "8080"},
///           "RestartPolicy": "on-failure", "HealthCheck": "/health"}}
/// ```
///
/// Keys match case-insensitively, as Go's decoder does. The translation, field by field
/// (also in docs/TASKS.md):
///
/// | Cube | ours |
/// |---|---|
/// | `ID` (event) | kept as the submission's event id; no effect |
/// | `State` (event) | 3 (Completed) asks to stop the task; any other value asks to run it |
/// | `Timestamp` | accepted and ignored |
/// | `Task.ID` | `id` |
/// | `Task.Name` | `name` |
/// | `Task.Image` | `image` |
/// | `Task.Cpu` | `resources.cpus` (0 or absent: the default 0.1) |
/// | `Task.Memory` | `resources.memory`, in bytes (0 or absent: the default 64 MiB) |
/// | `Task.ExposedPorts` | `ports`, each key `PORT/PROTO`, host port chosen by Docker |
/// | `Task.PortBindings` | `ports[].hostPort` for that container port (Cube ignores it; we honour it) |
/// | `Task.RestartPolicy` | `""`/`no` → never, `on-failure` → on-failure, `always`/`unless-stopped` → always |
/// | `Task.HealthCheck` | `healthCheck.path`, checked on the lowest published TCP port |
/// | `Task.Disk`, `Task.State`, `Task.ContainerID`, `Task.HostPorts`, `Task.StartTime`, `Task.FinishTime`, `Task.RestartCount` | accepted and ignored |
/// | any other key | ignored, as Go ignores it, and listed in ``TaskSubmission/ignoredFields`` |
///
/// A Cube task has no command or environment: the image's own command runs.
public enum CubeTaskEvent {
    /// Cube's task states, by their integer values.
    public enum State: Int, Sendable, CaseIterable {
        case pending = 0, scheduled, running, completed, failed
    }

    static let eventKeys = ["ID", "State", "Timestamp", "Task"]
    static let taskKeys = ["ID", "Name", "Image", "Cpu", "Memory", "ExposedPorts", "PortBindings",
                           "RestartPolicy", "HealthCheck"]
    /// Filled in by Cube itself; real files carry them; we accept and ignore them.
    static let ignoredTaskKeys = ["Disk", "State", "ContainerID", "HostPorts", "StartTime", "FinishTime",
                                  "RestartCount"]

    /// Whether `json` has Cube's shape: a top-level `Task` object.
    public static func isCubeShaped(_ json: JSONValue) -> Bool {
        guard case .object(let object) = json else { return false }
        return object.contains { key, value in
            if key.lowercased() == "task", case .object = value { return true }
            return false
        }
    }

    /// Translates a Cube task event; problems carry Cube's own paths (`Task.Memory`).
    public static func translate(_ json: JSONValue) throws(TaskSpecError) -> TaskSubmission {
        var reader = FieldReader()
        let lenient = { (known: [String]) in FieldReader.Keys(known: known, caseInsensitive: true, refuseUnknown: false) }
        guard let event = reader.fields(json, at: "", lenient(eventKeys)),
              let task = event["Task"].flatMap({ reader.fields($0, at: "Task", lenient(taskKeys + ignoredTaskKeys)) })
        else { throw TaskSpecError(problems: reader.problems) }

        let eventID = reader.string(event["ID"], at: "ID")
        var intent = TaskSubmission.Intent.run
        if let state = reader.integer(event["State"], at: "State") {
            guard let cubeState = State(rawValue: state) else {
                reader.report("State", "expected a Cube task state from 0 to 4, found \(state)")
                throw TaskSpecError(problems: reader.problems)
            }
            if cubeState == .completed { intent = .stop }
        }
        if event["Timestamp"] != nil { _ = reader.string(event["Timestamp"], at: "Timestamp") }
        for key in ignoredTaskKeys where task[key] != nil { reader.ignore(task.path(key)) }

        var spec = TaskSpec(image: "")
        if let id = reader.string(task["ID"], at: "Task.ID") { spec.id = TaskID(rawValue: id) }
        spec.name = reader.string(task["Name"], at: "Task.Name").flatMap { $0.isEmpty ? nil : $0 }
        if task["Image"] == nil { reader.report("Task.Image", "is required") }
        spec.image = reader.string(task["Image"], at: "Task.Image") ?? ""
        if let millicores = reader.millicores(task["Cpu"], at: "Task.Cpu"), millicores > 0 {
            spec.resources.millicores = millicores
        }
        if let memory = reader.bytes(task["Memory"], at: "Task.Memory"), memory > 0 {
            spec.resources.memoryBytes = memory
        }
        spec.ports = reader.cubePorts(exposed: task["ExposedPorts"], bindings: task["PortBindings"])
        if let policy = reader.string(task["RestartPolicy"], at: "Task.RestartPolicy") {
            spec.restartPolicy = reader.cubeRestartPolicy(policy)
        }
        if let path = reader.string(task["HealthCheck"], at: "Task.HealthCheck"), !path.isEmpty {
            let port = spec.ports.filter { $0.protocol == .tcp }.map(\.containerPort).min()
            if port == nil { reader.report("Task.HealthCheck", "needs a published TCP port; add one to ExposedPorts") }
            spec.healthCheck = HealthCheck(path: path, port: port ?? 0)
        }

        let valueProblems = spec.validationProblems()
            .map { SpecProblem(path: cubePath($0.path), message: $0.message) }
            .filter { !reader.hasProblem(at: $0.path) }
        let problems = reader.problems + valueProblems
        guard problems.isEmpty else { throw TaskSpecError(problems: problems) }
        return TaskSubmission(spec: spec, format: .cube(eventID: eventID), intent: intent, ignoredFields: reader.ignored)
    }

    /// Where a field of our spec came from in Cube's file, for error messages.
    static func cubePath(_ path: String) -> String {
        let mapping: [(String, String)] = [
            ("id", "Task.ID"), ("name", "Task.Name"), ("image", "Task.Image"),
            ("resources.cpus", "Task.Cpu"), ("resources.memory", "Task.Memory"),
            ("ports", "Task.ExposedPorts"), ("healthCheck", "Task.HealthCheck"),
            ("restartPolicy", "Task.RestartPolicy"),
        ]
        for (ours, theirs) in mapping where path == ours || path.hasPrefix(ours + ".") || path.hasPrefix(ours + "[") {
            return theirs
        }
        return "Task"
    }
}

extension FieldReader {
    /// `ExposedPorts {"8080/tcp": {}}` and `PortBindings {"8080/tcp": "18080"}`, sorted by port.
    mutating func cubePorts(exposed: JSONValue?, bindings: JSONValue?) -> [PortSpec] {
        var ports: [String: PortSpec] = [:]
        if let exposed {
            if case .object(let object) = exposed {
                for key in object.keys {
                    if let port = portShorthand(.string(key), at: join("Task.ExposedPorts", key)) {
                        ports[key.lowercased()] = port
                    }
                }
            } else {
                report("Task.ExposedPorts", "expected an object such as {\"8080/tcp\": {}}, found \(exposed.kindName)")
            }
        }
        if let bindings {
            guard case .object(let object) = bindings else {
                report("Task.PortBindings", "expected an object such as {\"8080/tcp\": \"8080\"}, found \(bindings.kindName)")
                return ports.values.sorted { $0.containerPort < $1.containerPort }
            }
            for (key, value) in object {
                let path = join("Task.PortBindings", key)
                guard var port = portShorthand(.string(key), at: path) else { continue }
                switch value {
                case .string(let text) where text.isEmpty: continue
                case .string(let text):
                    guard let host = Int(text) else {
                        report(path, "expected a host port such as \"8080\", found \"\(text)\"")
                        continue
                    }
                    port.hostPort = host
                case .number: port.hostPort = integer(value, at: path)
                default:
                    report(path, "expected a host port such as \"8080\", found \(value.kindName)")
                    continue
                }
                ports[key.lowercased()] = port
            }
        }
        return ports.values.sorted { ($0.containerPort, $0.protocol.rawValue) < ($1.containerPort, $1.protocol.rawValue) }
    }

    mutating func cubeRestartPolicy(_ text: String) -> RestartPolicy {
        switch text.lowercased() {
        case "", "no": return .never
        case "on-failure": return RestartPolicy(mode: .onFailure)
        case "always", "unless-stopped": return RestartPolicy(mode: .always)
        default:
            report("Task.RestartPolicy", "unknown restart policy \"\(text)\"; expected \"\", always, unless-stopped or on-failure")
            return .never
        }
    }
}
