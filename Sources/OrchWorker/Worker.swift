import Foundation
import Hummingbird
import Logging
import NIOCore
import OrchCore
import OrchRuntime
import OrchSecurity
import OrchWire
import ServiceLifecycle
import Synchronization

/// A worker: dials the manager and keeps that connection, runs what it is assigned on the
/// container runtime, pushes heartbeats, metrics and task status, serves logs over the
/// cluster protocol and its own HTTP API for operators on its host.
///
/// Run it as a `Service`: on graceful shutdown (SIGINT, SIGTERM) it says goodbye
/// ("restarting", or "draining" with `drain`) and leaves its containers running, to be
/// adopted when it comes back.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    public let node: NodeID
    public let capacity: Capacity
    let runtime: any ContainerRuntime
    let supervisor: TaskSupervisor
    let client: WireClient
    /// Its certificate for the cluster port: joined with the join token, renewed at half its life.
    public let membership: ClusterMembership
    let logs: LogRelay
    /// The routing mesh: HAProxy balancing every published port over the cluster's replicas.
    public let loadBalancer: LoadBalancer
    private let metrics: MetricsSource
    private let submissions = Mutex<(next: UInt64, waiting: [UInt64: CheckedContinuation<SubmitResult, Never>])>((1, [:]))
    private let logger: Logger
    /// The HTTP API's real address once it listens.
    public let httpAddress = Mutex<String?>(nil)
    /// The token its HTTP API asks for (`<state>/api.token`, made at the first start, 0600;
    /// also left for this user's orchctl in ``LocalTokens``).
    public let apiToken: String

    public init(configuration: WorkerConfiguration, runtime: any ContainerRuntime, logger: Logger = Logger(label: "orch.worker")) throws {
        self.configuration = configuration
        self.runtime = runtime
        self.logger = logger
        if let refusal = LoopbackAddress.refusal(
            of: "the worker's API", carrying: "its token", host: configuration.httpHost, port: configuration.httpPort) {
            throw WorkerError.exposed(refusal)
        }
        node = try NodeIdentity.loadOrCreate(in: configuration.stateDirectory)
        apiToken = try LocalTokens.loadOrCreate(at: configuration.apiTokenPath)
        var sampler = MachineSampler(diskPath: configuration.stateDirectory)
        let first = try? sampler.sample()
        let metrics = MetricsSource(sampler)
        self.metrics = metrics
        capacity = Capacity(
            millicores: configuration.cpus.map { UInt32(($0 * 1000).rounded()) } ?? UInt32((first?.cpuCount ?? 1) * 1000),
            memoryBytes: configuration.memoryBytes.map { UInt64($0) } ?? first?.memory.totalBytes ?? 0,
            diskBytes: first?.disk.totalBytes ?? 0)
        let loadBalancer = LoadBalancer(
            settings: .init(haproxy: configuration.haproxy, directory: "\(configuration.stateDirectory)/haproxy", bindAddress: configuration.publishAddress),
            logger: logger)
        self.loadBalancer = loadBalancer
        if let reason = loadBalancer.unavailable { logger.warning("no routing mesh on this worker: \(reason)") }
        // The manager learns from this label where published ports listen (and warns about the rest).
        var labels = configuration.labels.filter { !$0.key.hasPrefix(NodeLabel.reservedPrefix) }
        if loadBalancer.unavailable == nil { labels[NodeLabel.mesh] = "haproxy" }
        let hello = Hello(
            nodeID: node, name: configuration.name, addresses: ["\(configuration.httpHost):\(configuration.httpPort)"],
            capacity: capacity, labels: labels)
        let managers = ManagerAddresses(
            ([(configuration.managerHost, configuration.managerPort)] + configuration.otherManagers).map { ManagerAddresses.Address(host: $0.host, port: $0.port) })
        membership = try ClusterMembership(node: node, directory: configuration.stateDirectory, managers: managers)
        let client = WireClient(managers: managers, hello: hello, tls: membership.tlsHandler, logger: logger)
        self.client = client
        supervisor = TaskSupervisor(
            node: node, runtime: runtime, publishAddress: configuration.publishAddress,
            keptOutput: KeptOutput(directory: "\(configuration.stateDirectory)/output"), logger: logger,
            managerSilence: configuration.managerSilence,
            write: { try await client.send($0) },
            dropConnection: { await client.dropConnection(reason: $0) },
            metrics: { metrics.metrics(runningTasks: $0) },
            lastContact: LastContact.read(in: configuration.stateDirectory))
        logs = LogRelay(runtime: runtime, send: { try await client.send($0) })
    }

    public func run() async throws {
        if configuration.httpPort != 0 { leaveAPIToken(port: configuration.httpPort) }
        logger.info("worker \(configuration.name) is node \(node), offering \(capacity.millicores) millicores and \(ByteCount.format(Int(capacity.memoryBytes)))")
        let running = AsyncStream<String>.makeStream()
        let app = Application(
            router: WorkerAPI(worker: self).router(),
            server: .http1WithAPIErrors(),
            configuration: ApplicationConfiguration(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: "orch-worker"),
            onServerRunning: { channel in
                let address = "\(channel.localAddress?.ipAddress ?? "127.0.0.1"):\(channel.localAddress?.port ?? 0)"
                running.continuation.yield(address)
                running.continuation.finish()
            },
            logger: logger)
        do {
            try await serve(app, running: running.stream)
        } catch is ShutdownRequested {
            return
        }
    }

    private struct ShutdownRequested: Error {}

    private func serve(_ app: some ApplicationProtocol, running: AsyncStream<String>) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await app.runService() }
            var addresses = running.makeAsyncIterator()
            guard let address = await addresses.next() else { return }
            // The token first: whoever learns the address (httpAddress, the log) finds it.
            if configuration.httpPort == 0 { leaveAPIToken(port: Int(address.split(separator: ":").last ?? "") ?? 0) }
            httpAddress.withLock { $0 = address }
            logger.info("listening on \(address)")
            await client.advertise(addresses: [address])

            // Container events are followed and existing containers adopted before the
            // manager is dialed, so that no exit of an assigned task can be missed.
            let ready = AsyncStream<Void>.makeStream()
            group.addTask { await self.supervisor.run() }
            group.addTask { await self.keepLastContact() }
            group.addTask { await self.watchEvents(ready: ready.continuation) }
            for await _ in ready.stream { break }
            if let dns = await containerDNS() { group.addTask { try? await dns.run() } }
            group.addTask {
                // A log stream lives on one connection: when it drops, its readers stop.
                for await state in self.client.states {
                    if case .disconnected = state { await self.logs.endAll() }
                }
            }
            group.addTask {
                // A certificate first (joining with the token if it has none for this
                // cluster), then the connection held for good, renewed meanwhile.
                try await self.membership.ensureJoined(token: try self.configuration.joinToken.map(JoinToken.init(parsing:)), logger: self.logger)
                let renewal = Task { await self.membership.keepRenewed(logger: self.logger) }
                defer { renewal.cancel() }
                try await self.client.run(WireClientHandlers(
                    connected: { welcome in
                        await self.loadBalancer.welcomed(tables: welcome.serviceTables)
                        await self.supervisor.connected(welcome)
                    },
                    disconnected: { await self.supervisor.disconnected() },
                    received: { await self.received($0) }))
            }
            group.addTask {
                // Graceful shutdown: say goodbye, leave the containers running, end everything.
                try? await gracefulShutdown()
                await self.loadBalancer.shutdown()
                let reason: Goodbye.Reason = self.configuration.drain ? .draining : .restarting
                try? await self.client.send(.goodbye(Goodbye(reason: reason, message: "worker \(self.configuration.name) is stopping")))
                self.logger.info("stopping (\(reason == .draining ? "draining" : "restarting")); containers keep running")
                throw ShutdownRequested()
            }
        }
    }

    /// The name service of this host's containers (``ContainerDNS``) on the bridge's gateway,
    /// with the load balancer listening there too; nil when there is no load balancer, no
    /// bridge, or another worker of this host serves it already.
    private func containerDNS() async -> ContainerDNS? {
        guard loadBalancer.unavailable == nil else { return nil }
        let gateway: String
        do {
            guard let found = try await runtime.bridgeGateway() else { return nil }
            gateway = found
        } catch {
            logger.warning("no NAME.service.orch for containers: the bridge network: \(error)")
            return nil
        }
        do {
            let balancer = loadBalancer
            let dns = try await ContainerDNS.bind(address: gateway, logger: logger) { await balancer.publishedPorts(of: $0) }
            await loadBalancer.listenForContainers(on: gateway)
            await supervisor.useDNS([gateway])
            logger.info("containers resolve NAME.service.orch at \(gateway):53 (the load balancer listens there too)\(dns.upstream.map { "; other names go to \($0)" } ?? "")")
            return dns
        } catch {
            logger.info("containers keep the engine's DNS: \(gateway):53 is taken (by another worker of this host?): \(error)")
            return nil
        }
    }

    /// Leaves the API's token for orchctl run by this user on this host (``LocalTokens``).
    private func leaveAPIToken(port: Int) {
        do {
            try LocalTokens.write(apiToken, host: configuration.httpHost, port: port)
        } catch {
            logger.warning("cannot leave the API token for orchctl in \(LocalTokens.directory): \(error); it is in \(configuration.apiTokenPath)")
        }
    }

    /// The attempts this worker holds, as its API shows them.
    public func tasks() async -> [WorkerTaskDTO] { await supervisor.snapshot() }

    // MARK: - Messages from the manager

    private func received(_ message: WireMessage) async {
        switch message {
        case .assignTask, .stopTask, .ack, .heartbeat:
            // The machine's: handled at once, in order.
            await supervisor.received(message)
        case .logRequest(let request):
            await supervisor.received(message)   // the manager was heard from
            await logs.open(request, source: await supervisor.output(of: request.task, attempt: request.attempt))
        case .logCredit(let credit):
            await supervisor.received(message)
            await logs.credit(credit)
        case .logEnd(let end):
            await supervisor.received(message)
            await logs.end(end.streamID)
        case .serviceTable(let table):
            await supervisor.received(message)   // drains before stops
            await loadBalancer.apply(table)
        case .submitResult(let result):
            await supervisor.received(message)
            let waiter = submissions.withLock { $0.waiting.removeValue(forKey: result.requestID) }
            waiter?.resume(returning: result)
        default:
            await supervisor.received(message)
            logger.debug("ignoring \(message.kind) from the manager")
        }
    }

    // MARK: - Container events

    /// Follows the runtime's events for this node's containers; when the stream breaks (the
    /// engine restarted), subscribes again and looks for exits missed meanwhile.
    private func watchEvents(ready: AsyncStream<Void>.Continuation) async {
        defer { ready.finish() }
        var backoff = ReconnectBackoff(initial: .milliseconds(200), maximum: .seconds(5))
        var random = SystemRandomNumberGenerator()
        var adopted = false
        while !Task.isCancelled {
            do {
                let events = try await runtime.events(labels: await supervisor.ownLabels)
                // Subscribed first, then adopted: no exit falls between the two.
                try await supervisor.adopt()
                await supervisor.engineAnswers()
                adopted = true
                ready.finish()
                backoff.reset()
                // A stream that ends without an error is subscribed again; if the engine is
                // gone, that fails and says so (a killed engine's stream ends in an error).
                for try await event in events { await supervisor.containerEvent(event) }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("container events interrupted\(adopted ? "" : " before adoption"): \(error)")
                await supervisor.engineUnavailable("\(error)")
                ready.finish()   // the manager is dialed all the same; exits are found on the next adoption
            }
            try? await Task.sleep(for: backoff.nextDelay(using: &random))
        }
    }

    // MARK: - Metrics

    func machineMetrics() async -> MachineMetrics {
        let running = await supervisor.runningCount
        return metrics.metrics(runningTasks: running)
    }

    // MARK: - Submissions from the worker's API

    /// Forwards a task to the manager, pinned to this node, and waits for its id.
    func submit(_ spec: TaskSpec, timeout: Duration = .seconds(10)) async throws -> TaskID {
        guard await supervisor.isConnected else { throw WorkerError.notConnected }
        var spec = spec
        spec.constraints.node = node.rawValue
        let requestID = submissions.withLock { state in
            defer { state.next += 1 }
            return state.next
        }
        let timer = Task {
            try await Task.sleep(for: timeout)
            let waiter = submissions.withLock { $0.waiting.removeValue(forKey: requestID) }
            waiter?.resume(returning: SubmitResult(requestID: requestID, task: nil, error: nil))
        }
        defer { timer.cancel() }
        let result = await withCheckedContinuation { continuation in
            submissions.withLock { $0.waiting[requestID] = continuation }
            Task { [spec] in
                do {
                    try await client.send(.submitTask(SubmitTask(requestID: requestID, spec: spec)))
                } catch {
                    let waiter = submissions.withLock { $0.waiting.removeValue(forKey: requestID) }
                    waiter?.resume(returning: SubmitResult(requestID: requestID, task: nil, error: nil))
                }
            }
        }
        if let task = result.task { return task }
        if let error = result.error { throw WorkerError.submitRefused(error) }
        throw await client.isConnected ? WorkerError.submitTimedOut : WorkerError.notConnected
    }
}

/// The machine's metrics, sampled on demand (for each heartbeat and the API's /stats).
final class MetricsSource: Sendable {
    private let sampler: Mutex<MachineSampler>

    init(_ sampler: MachineSampler) { self.sampler = Mutex(sampler) }

    func metrics(runningTasks running: Int) -> MachineMetrics {
        guard let sample = try? sampler.withLock({ try $0.sample() }) else { return MachineMetrics(runningTasks: UInt32(running)) }
        return MachineMetrics(
            cpuMillicoresUsed: sample.cpuMillicoresUsed, memoryUsedBytes: sample.memory.usedBytes,
            memoryTotalBytes: sample.memory.totalBytes, diskUsedBytes: sample.disk.usedBytes, diskTotalBytes: sample.disk.totalBytes,
            load1Hundredths: sample.load.load1, load5Hundredths: sample.load.load5, load15Hundredths: sample.load.load15,
            runningTasks: UInt32(running))
    }

}

extension Worker {
    /// Writes when the manager was last heard from into the state directory, every second
    /// while it changes (see ``TaskSupervisor/lastContact``).
    private func keepLastContact() async {
        var written: Date?
        while !Task.isCancelled {
            let contact = await supervisor.lastContact
            if contact != written {
                do {
                    try LastContact.write(contact, in: configuration.stateDirectory)
                    written = contact
                } catch {
                    logger.warning("cannot keep the last contact with the manager in \(configuration.stateDirectory): \(error)")
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}

/// `<state>/last-contact`: the wall time (seconds since 1970) the manager was last heard from.
enum LastContact {
    static func path(in directory: String) -> String { "\(directory)/last-contact" }

    static func read(in directory: String) -> Date? {
        guard let text = try? String(contentsOfFile: path(in: directory), encoding: .utf8),
              let seconds = Double(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
        return Date(timeIntervalSince1970: seconds)
    }

    static func write(_ date: Date, in directory: String) throws {
        try String(format: "%.3f\n", date.timeIntervalSince1970).write(toFile: path(in: directory), atomically: true, encoding: .utf8)
    }
}
