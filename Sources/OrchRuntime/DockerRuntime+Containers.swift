import Foundation
import OrchCore

extension DockerRuntime {
    public func ping() async throws {
        let body = try await request(.GET, "/_ping", operation: "answer a ping", timeout: .seconds(5))
        guard String(buffer: body) == "OK" else {
            throw RuntimeError.invalidResponse(operation: "answer a ping", reason: "expected OK, got \(String(buffer: body))")
        }
    }

    public func create(_ config: ContainerConfig) async throws -> ContainerID {
        var bindings: [String: [CreateContainerRequest.PortBinding]] = [:]
        var exposed: [String: CreateContainerRequest.Empty] = [:]
        for port in config.ports {
            let key = "\(port.containerPort)/\(port.protocol.rawValue)"
            exposed[key] = .init()
            bindings[key, default: []].append(
                .init(HostIp: config.publishAddress, HostPort: port.hostPort.map(String.init) ?? ""))
        }
        let body = CreateContainerRequest(
            Image: config.image, Cmd: config.command,
            Env: config.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            Labels: config.labels, ExposedPorts: exposed,
            StopTimeout: Int(config.stopGracePeriod.components.seconds),
            HostConfig: .init(
                Memory: config.resources.memoryMaxBytes ?? config.resources.memoryBytes,
                MemoryReservation: config.resources.memoryMaxBytes == nil ? nil : config.resources.memoryBytes,
                CpuShares: config.resources.cpuShares, NanoCpus: config.resources.cpuLimitMillicores.map { $0 * 1_000_000 },
                PortBindings: bindings, Dns: config.dns.isEmpty ? nil : config.dns))
        let query = config.name.map { [("name", $0)] } ?? []
        let operation = "create a container from \(config.image)"
        let answer = try await request(
            .POST, "/containers/create", query: query, json: body, operation: operation,
            notFound: .imageUnavailable(image: config.image, reason: "not present locally"))
        return ContainerID(rawValue: try Self.decode(CreateContainerResponse.self, from: answer, operation: operation).Id)
    }

    public func start(_ id: ContainerID) async throws {
        _ = try await request(
            .POST, "/containers/\(id)/start", operation: "start container \(id.short)",
            notFound: .containerNotFound(id.rawValue))
    }

    public func stop(_ id: ContainerID, grace: Duration) async throws {
        // 304 (already stopped) is a success for us; the engine waits `t` seconds, then kills.
        let seconds = max(0, Int((Double(grace.milliseconds) / 1000).rounded(.up)))
        do {
            _ = try await request(
                .POST, "/containers/\(id)/stop", query: [("t", String(seconds))], operation: "stop container \(id.short)",
                timeout: grace + .seconds(30), notFound: .containerNotFound(id.rawValue))
        } catch RuntimeError.engine(_, status: 304, _) {
            return   // already stopped
        }
    }

    public func remove(_ id: ContainerID) async throws {
        _ = try await request(
            .DELETE, "/containers/\(id)", query: [("force", "true"), ("v", "true")],
            operation: "remove container \(id.short)", notFound: .containerNotFound(id.rawValue))
    }

    public func bridgeGateway() async throws -> String? {
        let operation = "inspect the bridge network"
        let body = try await request(.GET, "/networks/bridge", operation: operation)
        let network = try Self.decode(NetworkInspect.self, from: body, operation: operation)
        return network.IPAM?.Config?.compactMap(\.Gateway).first { !$0.contains(":") }
    }

    public func inspect(_ id: ContainerID) async throws -> ContainerInfo {
        let operation = "inspect container \(id.short)"
        let body = try await request(
            .GET, "/containers/\(id)/json", operation: operation, notFound: .containerNotFound(id.rawValue))
        let inspect = try Self.decode(InspectResponse.self, from: body, operation: operation)
        var ports: [PublishedPort] = []
        for (key, bindings) in inspect.NetworkSettings?.Ports ?? [:] {
            guard let (port, proto) = Self.parsePortKey(key) else { continue }
            for binding in bindings ?? [] {
                guard let host = binding.HostPort.flatMap({ Int($0) }) else { continue }
                ports.append(PublishedPort(containerPort: port, protocol: proto, hostIP: binding.HostIp ?? "", hostPort: host))
            }
        }
        ports.sort { ($0.containerPort, $0.hostIP, $0.hostPort) < ($1.containerPort, $1.hostIP, $1.hostPort) }
        let state = inspect.State
        return ContainerInfo(
            id: ContainerID(rawValue: inspect.Id),
            name: inspect.Name.hasPrefix("/") ? String(inspect.Name.dropFirst()) : inspect.Name,
            image: inspect.Config.Image ?? "", labels: inspect.Config.Labels ?? [:],
            status: state.Status, running: state.Running, exitCode: state.ExitCode,
            error: state.Error.flatMap { $0.isEmpty ? nil : $0 }, oomKilled: state.OOMKilled ?? false,
            publishedPorts: ports, memoryLimitBytes: inspect.HostConfig?.Memory ?? 0,
            memoryReservationBytes: inspect.HostConfig?.MemoryReservation ?? 0,
            nanoCPUs: inspect.HostConfig?.NanoCpus ?? 0, cpuShares: inspect.HostConfig?.CpuShares ?? 0,
            startedAt: state.StartedAt.flatMap(Self.parseTime), finishedAt: state.FinishedAt.flatMap(Self.parseTime))
    }

    public func stats(_ id: ContainerID) async throws -> ContainerStats {
        let operation = "report stats of container \(id.short)"
        let body = try await request(
            .GET, "/containers/\(id)/stats", query: [("stream", "false"), ("one-shot", "true")],
            operation: operation, notFound: .containerNotFound(id.rawValue))
        let stats = try Self.decode(StatsResponse.self, from: body, operation: operation)
        return ContainerStats(
            memoryUsageBytes: stats.memory_stats?.usage ?? 0, memoryLimitBytes: stats.memory_stats?.limit ?? 0,
            cpuUsageNanoseconds: stats.cpu_stats?.cpu_usage?.total_usage ?? 0,
            onlineCPUs: stats.cpu_stats?.online_cpus ?? 0, processes: stats.pids_stats?.current ?? 0)
    }

    public func list(labels: [String: String]) async throws -> [ContainerSummary] {
        let operation = "list containers"
        let body = try await request(
            .GET, "/containers/json", query: [("all", "true"), ("filters", Self.labelFilter(labels))], operation: operation)
        return try Self.decode([ContainerListEntry].self, from: body, operation: operation).map { entry in
            let name = entry.Names?.first ?? ""
            return ContainerSummary(
                id: ContainerID(rawValue: entry.Id), name: name.hasPrefix("/") ? String(name.dropFirst()) : name,
                image: entry.Image, labels: entry.Labels ?? [:], state: entry.State)
        }
    }

    // MARK: - Helpers

    /// `{"label":["a=b","c=d"]}` (and, for events, the type), as the engine's `filters` parameter.
    static func labelFilter(_ labels: [String: String], type: String? = nil) -> String {
        var filters: [String: [String]] = ["label": labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }]
        if let type { filters["type"] = [type] }
        let data = (try? JSONEncoder().encode(filters)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// `"8080/tcp"` as (8080, .tcp).
    static func parsePortKey(_ key: String) -> (Int, PortProtocol)? {
        let parts = key.split(separator: "/")
        guard let port = parts.first.flatMap({ Int($0) }) else { return nil }
        let proto = parts.count > 1 ? PortProtocol(rawValue: String(parts[1])) : .tcp
        return proto.map { (port, $0) }
    }

    /// Docker's RFC 3339 times with nanoseconds; its zero time ("0001-01-01T00:00:00Z") is nil.
    static func parseTime(_ text: String) -> Date? {
        guard !text.hasPrefix("0001-") else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var trimmed = text
        // ISO8601DateFormatter reads at most milliseconds; Docker writes nanoseconds.
        if let dot = text.firstIndex(of: "."), let zone = text[dot...].firstIndex(where: { $0 == "Z" || $0 == "+" || $0 == "-" }) {
            let fraction = text[text.index(after: dot)..<zone].prefix(3)
            trimmed = String(text[..<dot]) + "." + fraction + String(text[zone...])
        }
        return formatter.date(from: trimmed) ?? {
            formatter.formatOptions = [.withInternetDateTime]
            return formatter.date(from: text)
        }()
    }
}
