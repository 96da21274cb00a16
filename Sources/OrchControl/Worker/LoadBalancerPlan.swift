import OrchCore

/// What a worker's HAProxy should hold, and how to get it there: the pure half of the
/// routing mesh. Fed the manager's `service_table`s and what became of its own actions; it
/// answers with a configuration to (re)start HAProxy with (when the published ports
/// themselves change, or HAProxy is not running) or runtime API commands (every other
/// change: a server added, drained, put in maintenance, deleted). No config is rewritten
/// for a change of endpoints and nothing is reloaded for it.
///
/// Each published port is one `listen` section `SERVICE_PORT` bound on the worker's
/// advertise address, balancing by least connections over one server per endpoint, named
/// after its task. A (re)started HAProxy is given only the ready endpoints; after that the
/// plan keeps, for the running process, what each of its servers is.
public struct LoadBalancerPlan: Sendable {
    public struct Settings: Sendable, Hashable {
        /// Where every published port listens (the worker's advertise address).
        public var bindAddress: String
        /// Another address every published port listens on: the container bridge's gateway,
        /// where this host's containers reach services by name (`NAME.service.orch`).
        public var containerAddress: String?
        /// The runtime API's unix socket.
        public var socketPath: String
        public var connectTimeout: Duration
        /// Idle timeout of a client or server connection.
        public var idleTimeout: Duration

        public init(bindAddress: String, socketPath: String, connectTimeout: Duration = .seconds(2), idleTimeout: Duration = .seconds(60)) {
            self.bindAddress = bindAddress
            self.socketPath = socketPath
            self.connectTimeout = connectTimeout
            self.idleTimeout = idleTimeout
        }
    }

    /// One server of one `listen` section.
    public struct Server: Sendable, Hashable {
        public var address: String
        public var port: Int
        public var state: ServiceTable.State

        public init(address: String, port: Int, state: ServiceTable.State) {
            self.address = address
            self.port = port
            self.state = state
        }
    }

    public enum Action: Sendable, Hashable {
        /// Start HAProxy with this configuration, taking over from a running one (which
        /// finishes its connections); report `exited` when it ends or cannot start.
        case start(config: String)
        /// Send these runtime API commands, in order, on one connection.
        case commands([String])
        /// No port is published any more: stop HAProxy (it finishes its connections).
        case stop
    }

    public private(set) var settings: Settings

    /// Published ports listen on `address` too from the next start (nil: no more).
    public mutating func listenForContainers(on address: String?) -> [Action] {
        guard settings.containerAddress != address else { return [] }
        settings.containerAddress = address
        running = nil   // a running HAProxy starts again with the new binds
        return reconcile()
    }
    /// The newest table of each service that publishes a port.
    public private(set) var tables: [String: ServiceTable] = [:]
    /// What the running HAProxy holds, by section and server; nil while none runs.
    public private(set) var running: [String: [String: Server]]?
    /// The sections the running HAProxy was started with: a change of these is a new start.
    private var runningShape: [String: Shape] = [:]
    /// Servers put in maintenance to be deleted; deleted again on each change until HAProxy
    /// lets them go (it refuses while connections remain).
    public private(set) var leaving: Set<String> = []

    public init(settings: Settings) { self.settings = settings }

    // MARK: - Inputs

    /// A table from the manager. Older than the one held: ignored.
    public mutating func apply(_ table: ServiceTable) -> [Action] {
        if let held = tables[table.service], held.index > table.index { return [] }
        tables[table.service] = table.listeners.isEmpty ? nil : table
        return reconcile()
    }

    /// A new connection was welcomed: `count` tables follow, and replace all held once they
    /// are in (with none, at once).
    public mutating func welcomed(tables count: UInt32) -> [Action] {
        guard count > 0 else {
            syncing = nil
            return replaceAll([])
        }
        syncing = (Int(count), [])
        return []
    }

    /// A table from the manager: part of the set after a welcome, or a change on its own.
    public mutating func received(_ table: ServiceTable) -> [Action] {
        guard var sync = syncing else { return apply(table) }
        sync.tables.append(table)
        sync.remaining -= 1
        guard sync.remaining == 0 else {
            syncing = sync
            return []
        }
        syncing = nil
        return replaceAll(sync.tables)
    }

    /// Tables expected after a welcome, and those in so far.
    private var syncing: (remaining: Int, tables: [ServiceTable])?

    /// Whether tables announced by a welcome are still on their way.
    public var isSyncing: Bool { syncing != nil }

    /// After a connection to the manager: the tables it sends replace all of these; the ones
    /// it does not send are gone (the service was removed meanwhile).
    mutating func replaceAll(_ fresh: [ServiceTable]) -> [Action] {
        tables = [:]
        for table in fresh where !table.listeners.isEmpty { tables[table.service] = table }
        return reconcile()
    }

    /// HAProxy exited (or could not start): what to start again.
    public mutating func exited() -> [Action] {
        running = nil
        runningShape = [:]
        leaving = []
        return reconcile()
    }

    /// A `del server` HAProxy refused (connections remain): tried again on the next change.
    public mutating func deleteRefused(_ qualifiedName: String) { leaving.insert(qualifiedName) }

    /// A `del server` that went through.
    public mutating func deleted(_ qualifiedName: String) { leaving.remove(qualifiedName) }

    // MARK: - What should be

    /// What a section listens on and how it balances.
    public struct Shape: Sendable, Hashable {
        public var bind: UInt16
        public var mode: PublishMode
    }

    public typealias Section = (shape: Shape, servers: [String: Server])

    /// Every section with its servers, as the tables say.
    public var desired: [String: Section] {
        var sections: [String: Section] = [:]
        for table in tables.values {
            for listener in table.listeners {
                var servers: [String: Server] = [:]
                for endpoint in table.endpoints {
                    guard let port = endpoint.hostPort(for: listener.containerPort) else { continue }
                    servers[Self.serverName(endpoint.task)] = Server(address: endpoint.address, port: port, state: endpoint.state)
                }
                sections[Self.sectionName(table.service, listener.publish)] = (Shape(bind: listener.publish, mode: listener.mode), servers)
            }
        }
        return sections
    }

    /// `SERVICE_PORT`: a service name is lowercase letters, digits and dashes.
    public static func sectionName(_ service: String, _ publish: UInt16) -> String {
        "\(sanitized(service))_\(publish)"
    }

    /// A task id as a server name (HAProxy takes letters, digits, `-`, `_`, `.` and `:`).
    public static func serverName(_ task: TaskID) -> String { sanitized(task.rawValue) }

    static func sanitized(_ text: String) -> String {
        String(text.map { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) ? $0 : "_" })
    }

    /// A started HAProxy holds the ready servers only: nothing is connected to the others.
    static func initialServers(_ desired: [String: Section]) -> [String: [String: Server]] {
        desired.mapValues { section in section.servers.filter { $0.value.state == .ready } }
    }

    // MARK: - Getting there

    mutating func reconcile() -> [Action] {
        let desired = desired
        if desired.isEmpty {
            guard running != nil else { return [] }
            running = nil
            runningShape = [:]
            leaving = []
            return [.stop]
        }
        guard let current = running, runningShape == desired.mapValues(\.shape) else {
            // Not running, or the published ports changed: a configuration of its own. What
            // it holds from then on is what the configuration lists (the shell carries the
            // actions out in order: later commands reach the process started here).
            running = Self.initialServers(desired)
            runningShape = desired.mapValues(\.shape)
            leaving = []
            return [.start(config: config(desired))]
        }
        var commands: [String] = []
        var next = current
        for section in desired.keys.sorted() {
            let want = desired[section]!.servers
            let have = current[section] ?? [:]
            for name in want.keys.sorted() {
                let server = want[name]!
                let qualified = "\(section)/\(name)"
                if let held = have[name], held.address != server.address || held.port != server.port {
                    commands += ["set server \(qualified) state maint", "del server \(qualified)"]
                    next[section]?[name] = nil
                } else if let held = have[name] {
                    if held.state != server.state { commands.append("set server \(qualified) state \(Self.runtimeState(server.state))") }
                    next[section]?[name] = server
                    continue
                }
                // Not held (or just deleted): added if it takes connections.
                guard server.state == .ready, !leaving.contains(qualified) else { continue }
                commands += ["add server \(qualified) \(server.address):\(server.port)", "enable server \(qualified)"]
                next[section]?[name] = server
            }
            for name in have.keys.sorted() where want[name] == nil {
                let qualified = "\(section)/\(name)"
                commands += ["set server \(qualified) state maint", "del server \(qualified)"]
                next[section]?[name] = nil
            }
        }
        for qualified in leaving.sorted() where !commands.contains("del server \(qualified)") {
            commands.append("del server \(qualified)")
        }
        running = next
        return commands.isEmpty ? [] : [.commands(commands)]
    }

    static func runtimeState(_ state: ServiceTable.State) -> String {
        switch state {
        case .ready: "ready"
        case .draining: "drain"
        case .down: "maint"
        }
    }

    /// The whole configuration: the runtime API, TCP defaults (keepalive both ways, retries
    /// on another server when a connection is refused), one `listen` per published port.
    func config(_ desired: [String: Section]) -> String {
        let connect = Self.milliseconds(settings.connectTimeout), idle = Self.milliseconds(settings.idleTimeout)
        var lines = [
            "# Written by the worker at each start of its load balancer; changes go through the runtime API.",
            "global",
            "  stats socket \(settings.socketPath) mode 600 level admin",
            "defaults",
            "  mode tcp",
            "  timeout connect \(connect)ms",
            "  timeout client \(idle)ms",
            "  timeout server \(idle)ms",
            "  option clitcpka",
            "  option srvtcpka",
            "  retries 3",
            "  option redispatch 1",
        ]
        let initial = Self.initialServers(desired)
        for section in desired.keys.sorted() {
            let shape = desired[section]!.shape
            lines += ["listen \(section)", "  bind \(Self.bindHost(settings.bindAddress)):\(shape.bind)"]
            if let inside = settings.containerAddress, inside != settings.bindAddress {
                lines.append("  bind \(Self.bindHost(inside)):\(shape.bind)")
            }
            lines.append("  balance leastconn")
            if shape.mode == .http {
                // Each request on its own; one that found its server gone is tried on another.
                lines += ["  mode http", "  retry-on conn-failure empty-response response-timeout", "  http-request disable-l7-retry if METH_POST"]
            }
            for (name, server) in (initial[section] ?? [:]).sorted(by: { $0.key < $1.key }) {
                lines.append("  server \(name) \(Self.bindHost(server.address)):\(server.port)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// An IPv6 address in brackets.
    static func bindHost(_ address: String) -> String { address.contains(":") ? "[\(address)]" : address }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }
}
