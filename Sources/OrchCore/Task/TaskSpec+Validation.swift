extension TaskSpec {
    /// The longest stop grace period accepted.
    public static let maximumStopGracePeriod: Duration = .seconds(3600)
    /// The shortest health-check interval accepted.
    public static let minimumHealthInterval: Duration = .milliseconds(100)
    /// The bounds of `disconnect.stopAfter`.
    public static let minimumStopAfter: Duration = .seconds(1)
    public static let maximumStopAfter: Duration = .seconds(86_400)

    /// Every value out of range, each with its field's path in our JSON shape; empty when
    /// the spec can be run. Shape problems (wrong types, unknown fields) are the readers'.
    public func validationProblems() -> [SpecProblem] {
        var problems: [SpecProblem] = []
        func report(_ path: String, _ message: String) { problems.append(SpecProblem(path: path, message: message)) }

        if let id, let problem = TaskID.problem(with: id.rawValue) { report("id", problem) }
        if let name, let problem = Identifier.problem(with: name) { report("name", problem) }
        if image.isEmpty {
            report("image", "must not be empty")
        } else if image.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 32 } == true }) {
            report("image", "must not contain spaces or control characters")
        } else if image.hasPrefix("-") {
            report("image", "must not start with '-'")
        }
        if let command {
            if command.isEmpty { report("command", "must hold at least the program to run; omit it to use the image's") }
            else if command[0].isEmpty { report("command[0]", "the program must not be empty") }
        }
        for key in environment.keys.sorted() {
            if key.isEmpty || key.contains("=") || key.contains("\0") {
                report(join("environment", key), "a variable's name must be non-empty and contain no '='")
            } else if environment[key]!.contains("\0") {
                report(join("environment", key), "must not contain a NUL character")
            }
        }
        validatePorts(report)
        if resources.millicores < Resources.minimumMillicores {
            report("resources.cpus", "must be at least 0.01")
        }
        if resources.millicores > Resources.maximumMillicores {
            report("resources.cpus", "must be at most \(Resources.maximumMillicores / 1000)")
        }
        if resources.memoryBytes < Resources.minimumMemoryBytes {
            report("resources.memory", "must be at least 6 MiB (Docker's minimum), found \(ByteCount.format(resources.memoryBytes))")
        } else if resources.memoryBytes > Resources.maximumMemoryBytes {
            report("resources.memory", "must be at most 1 PiB, found \(ByteCount.format(resources.memoryBytes))")
        }
        if let limit = resources.cpuLimitMillicores {
            if limit < max(Resources.minimumMillicores, resources.millicores) {
                report("resources.cpuLimit", "must be at least resources.cpus (the reservation, \(resources.cpus)) and 0.01, found \(Double(limit) / 1000)")
            } else if limit > Resources.maximumMillicores {
                report("resources.cpuLimit", "must be at most \(Resources.maximumMillicores / 1000)")
            }
        }
        if let limit = resources.memoryMaxBytes {
            if limit < resources.memoryBytes {
                report("resources.memoryMax", "must be at least resources.memory (the reservation, \(ByteCount.format(resources.memoryBytes))), found \(ByteCount.format(limit))")
            } else if limit > Resources.maximumMemoryBytes {
                report("resources.memoryMax", "must be at most 1 PiB, found \(ByteCount.format(limit))")
            }
        }
        if let max = restartPolicy.maxRestarts, max < 0 {
            report("restartPolicy.maxRestarts", "must not be negative")
        }
        if stopGracePeriod < .zero || stopGracePeriod > Self.maximumStopGracePeriod {
            report("stopGracePeriod", "must be between 0s and 1h")
        }
        if let healthCheck { validateHealthCheck(healthCheck, report) }
        if let node = constraints.node, node.isEmpty { report("constraints.node", "must not be empty") }
        for key in constraints.labels.keys where key.isEmpty {
            report("constraints.labels", "a label's name must not be empty")
        }
        if let disconnect, disconnect.stopAfter < Self.minimumStopAfter || disconnect.stopAfter > Self.maximumStopAfter {
            report("disconnect.stopAfter", "must be between 1s and 24h")
        }
        return problems
    }

    private func validatePorts(_ report: (String, String) -> Void) {
        var containerPorts: Set<String> = []
        var hostPorts: Set<String> = []
        var published: Set<Int> = []
        for (index, port) in ports.enumerated() {
            let path = join("ports", index)
            if !(1...65535).contains(port.containerPort) {
                report(join(path, "containerPort"), "must be between 1 and 65535, found \(port.containerPort)")
            } else if !containerPorts.insert("\(port.containerPort)/\(port.protocol.rawValue)").inserted {
                report(join(path, "containerPort"), "\(port.containerPort)/\(port.protocol.rawValue) is listed twice")
            }
            if let host = port.hostPort {
                if !(1...65535).contains(host) {
                    report(join(path, "hostPort"), "must be between 1 and 65535, found \(host)")
                } else if !hostPorts.insert("\(host)/\(port.protocol.rawValue)").inserted {
                    report(join(path, "hostPort"), "\(host)/\(port.protocol.rawValue) is asked for twice")
                }
            }
            if let publish = port.publish {
                if !(1...65535).contains(publish) {
                    report(join(path, "publish"), "must be between 1 and 65535, found \(publish)")
                } else if port.protocol != .tcp {
                    report(join(path, "publish"), "only TCP ports are published on the load balancer")
                } else if !published.insert(publish).inserted {
                    report(join(path, "publish"), "\(publish) is published twice")
                }
            }
        }
    }

    private func validateHealthCheck(_ check: HealthCheck, _ report: (String, String) -> Void) {
        if !check.path.hasPrefix("/") || check.path.contains(where: \.isWhitespace) {
            report("healthCheck.path", "must start with '/' and contain no spaces, found \"\(check.path)\"")
        }
        if !ports.contains(where: { $0.containerPort == check.port && $0.protocol == .tcp }) {
            let published = ports.filter { $0.protocol == .tcp }.map { String($0.containerPort) }
            let list = published.isEmpty ? "none is published" : "published: " + published.joined(separator: ", ")
            report("healthCheck.port", "must be one of the task's published TCP ports (\(list)), found \(check.port)")
        }
        if check.interval < Self.minimumHealthInterval {
            report("healthCheck.interval", "must be at least 100ms")
        }
        if check.timeout <= .zero || check.timeout > check.interval {
            report("healthCheck.timeout", "must be more than 0s and at most the interval")
        }
        if check.failureThreshold < 1 {
            report("healthCheck.failureThreshold", "must be at least 1")
        }
    }
}
