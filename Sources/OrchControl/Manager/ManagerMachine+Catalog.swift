import OrchCore

/// The catalog: for every service, where its tasks can be reached and which of them are
/// ready (``ServiceEndpoint``). It is derived, never stored: a service is marked whenever one
/// of its tasks changes or a node holding one comes or goes, and its endpoints are worked
/// out again at the end of the input; when they differ, its index moves on and the shell is
/// told (`catalogChanged`), so that blocking queries are answered and workers' load
/// balancers follow.
extension ManagerMachine {
    /// Works the marked services' endpoints out again.
    mutating func refreshCatalog() {
        guard !catalogDirty.isEmpty else { return }
        let names = catalogDirty.sorted()
        catalogDirty = []
        defer { for name in names { refreshMeshTable(name) } }
        for name in names {
            guard services[name] != nil else {
                if catalog.removeValue(forKey: name) != nil { emit(.catalogChanged(name, nil)) }
                continue
            }
            let endpoints = (serviceTasks[name] ?? []).compactMap { id -> ServiceEndpoint? in
                guard let record = tasks[id], let node = record.node, let entry = nodes[node] else { return nil }
                return ServiceEndpoint.of(
                    record, nodeName: entry.record.name, nodeAddress: entry.record.addresses.first.map(Self.host(of:)),
                    nodeUp: entry.state == .up && entry.connection != nil)
            }.sorted { ($0.slot, $0.version, $0.task) < ($1.slot, $1.version, $1.task) }
            if let current = catalog[name], current.endpoints == endpoints { continue }
            let entry = ServiceCatalog(service: name, index: nextCatalogIndex(), endpoints: endpoints)
            catalog[name] = entry
            emit(.catalogChanged(name, entry))
        }
    }

    // MARK: - The routing mesh

    /// Sends `service`'s table to every connected worker when its published ports or its
    /// endpoints changed (WIRE.md, "Service tables"); a service that stopped publishing, or
    /// is gone, gets one empty table that takes it off the load balancers.
    mutating func refreshMeshTable(_ name: String) {
        let table = meshTable(name)
        if table == nil, meshTables[name] == nil { return }
        if let table, let sent = meshTables[name], sent.listeners == table.listeners, sent.endpoints == table.endpoints { return }
        let message: ServiceTable
        if let table {
            message = table
            meshTables[name] = table
        } else {
            message = ServiceTable(service: name, index: nextCatalogIndex(), listeners: [], endpoints: [], drain: .zero)
            meshTables[name] = nil
        }
        for connection in meshConnections { emit(.send(connection, .serviceTable(message))) }
    }

    /// The table of `name`, or nil when it publishes no port (or is gone).
    func meshTable(_ name: String) -> ServiceTable? {
        guard let template = services[name]?.template else { return nil }
        let listeners = template.ports.compactMap { port -> ServiceTable.Listener? in
            guard let publish = port.publish, port.protocol == .tcp else { return nil }
            return ServiceTable.Listener(
                publish: UInt16(clamping: publish), containerPort: UInt16(clamping: port.containerPort), mode: port.publishMode)
        }
        guard !listeners.isEmpty else { return nil }
        let entry = catalog[name]
        let endpoints = (entry?.endpoints ?? []).map { endpoint in
            ServiceTable.Endpoint(
                task: endpoint.task, address: endpoint.address, ports: endpoint.ports,
                state: endpoint.ready ? .ready : endpoint.draining && endpoint.health != .unhealthy ? .draining : .down)
        }
        return ServiceTable(
            service: name, index: entry?.index ?? catalogIndex, listeners: listeners, endpoints: endpoints,
            drain: configuration.meshDrain)
    }

    /// The last table sent for each service that publishes a port: what every connected
    /// worker's load balancer holds once the messages on their way arrive.
    public var sentMeshTables: [String: ServiceTable] { meshTables }

    /// The connections of nodes that are up, in a stable order.
    var meshConnections: [ConnectionID] { nodes.values.compactMap { $0.state == .up ? $0.connection : nil }.sorted() }

    /// After a `welcome`: every table, so that a worker's load balancer starts complete.
    mutating func sendMeshTables(to connection: ConnectionID) {
        for name in meshTables.keys.sorted() { emit(.send(connection, .serviceTable(meshTables[name]!))) }
    }

    /// Past every revision handed out and every index before: a watcher's index from an
    /// earlier run of the manager does not match by chance.
    mutating func nextCatalogIndex() -> UInt64 {
        catalogIndex = max(issued, catalogIndex + 1)
        return catalogIndex
    }

    /// Marks the services of the tasks on `node` (it came up or went away).
    mutating func nodeReachabilityChanged(_ node: NodeID) {
        guard let entry = nodes[node] else { return }
        for id in entry.tasks { if let service = tasks[id]?.replica?.service { catalogDirty.insert(service) } }
    }

    /// `HOST` of `HOST:PORT` (`[V6]:PORT` too).
    static func host(of address: String) -> String {
        if address.hasPrefix("["), let end = address.firstIndex(of: "]") {
            return String(address[address.index(after: address.startIndex)..<end])
        }
        guard let colon = address.lastIndex(of: ":") else { return address }
        return String(address[..<colon])
    }

    /// The endpoints of `service`, as of the last input.
    public func endpoints(of service: String) throws(ClusterError) -> ServiceCatalog {
        guard services[service] != nil else { throw .serviceNotFound(service) }
        return catalog[service] ?? ServiceCatalog(service: service, index: catalogIndex, endpoints: [])
    }

    /// Every service's endpoints (a worker's load balancer starts from these).
    public var fullCatalog: [ServiceCatalog] { catalog.keys.sorted().compactMap { catalog[$0] } }
}
