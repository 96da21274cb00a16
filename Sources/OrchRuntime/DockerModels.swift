// The parts of the Engine API's JSON that this program reads and writes, with Docker's keys.
// swiftlint:disable identifier_name

struct VersionResponse: Decodable {
    var ApiVersion: String
    var MinAPIVersion: String?
    var Version: String?
}

struct ErrorResponse: Decodable {
    var message: String
}

struct CreateContainerRequest: Encodable {
    struct HostConfig: Encodable {
        var Init = true
        var Memory: Int
        /// The soft limit: the reservation, when a higher hard limit is given.
        var MemoryReservation: Int?
        /// The CPU weight of the reservation; a cap only with `NanoCpus`.
        var CpuShares: Int
        var NanoCpus: Int?
        var PortBindings: [String: [PortBinding]]
        var RestartPolicy = ["Name": "no"]
        var Dns: [String]?
    }

    struct PortBinding: Codable {
        var HostIp: String?
        var HostPort: String?
    }

    struct Empty: Encodable {}

    var Image: String
    var Cmd: [String]?
    var Env: [String]
    var Labels: [String: String]
    var ExposedPorts: [String: Empty]
    var StopTimeout: Int
    var HostConfig: HostConfig
}

struct CreateContainerResponse: Decodable {
    var Id: String
}

struct InspectResponse: Decodable {
    struct State: Decodable {
        var Status: String
        var Running: Bool
        var ExitCode: Int
        var Error: String?
        var OOMKilled: Bool?
        var StartedAt: String?
        var FinishedAt: String?
    }

    struct Config: Decodable {
        var Image: String?
        var Labels: [String: String]?
    }

    struct HostConfig: Decodable {
        var Memory: Int?
        var MemoryReservation: Int?
        var NanoCpus: Int?
        var CpuShares: Int?
    }

    struct NetworkSettings: Decodable {
        var Ports: [String: [CreateContainerRequest.PortBinding]?]?
    }

    var Id: String
    var Name: String
    var State: State
    var Config: Config
    var HostConfig: HostConfig?
    var NetworkSettings: NetworkSettings?
}

struct ContainerListEntry: Decodable {
    var Id: String
    var Names: [String]?
    var Image: String
    var Labels: [String: String]?
    var State: String
}

struct StatsResponse: Decodable {
    struct CPUStats: Decodable {
        struct Usage: Decodable { var total_usage: Int? }
        var cpu_usage: Usage?
        var online_cpus: Int?
    }

    struct MemoryStats: Decodable {
        var usage: Int?
        var limit: Int?
    }

    struct PidsStats: Decodable { var current: Int? }

    var cpu_stats: CPUStats?
    var memory_stats: MemoryStats?
    var pids_stats: PidsStats?
}

struct EventMessage: Decodable {
    struct Actor: Decodable {
        var ID: String?
        var Attributes: [String: String]?
    }

    var `Type`: String?
    var Action: String?
    var id: String?
    var Actor: Actor?
    var timeNano: Int64?
    var time: Int64?
}

/// A line of a pull's progress stream; a failed pull answers 200 and reports its error here.
struct PullProgressMessage: Decodable {
    var status: String?
    var error: String?
}

/// `GET /networks/{id}`: only what the bridge's gateway needs.
struct NetworkInspect: Decodable {
    struct IPAM: Decodable {
        struct Config: Decodable {
            var Gateway: String?
        }
        var Config: [Config]?
    }
    var IPAM: IPAM?
}
