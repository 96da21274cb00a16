import Foundation
import OrchControl
import OrchCore
import Testing

/// The catalog: which tasks of a service are endpoints, which are ready, and when its index
/// moves (the machine's view, then single endpoints from records).
@Suite struct CatalogTests {
    typealias Cluster = ServiceMachineTests.Cluster

    static func changes(_ effects: [ManagerMachine.Effect]) -> [(String, ServiceCatalog?)] {
        effects.compactMap { if case .catalogChanged(let name, let catalog) = $0 { (name, catalog) } else { nil } }
    }

    @Test func runningReplicasAreReadyEndpointsAndAnEndedOneLeavesAtANewIndex() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web()) }
        let created = try c.h.machine.endpoints(of: "web")
        #expect(created.endpoints.isEmpty, "no endpoint before a replica runs")
        c.run(for: .seconds(3))
        let catalog = try c.h.machine.endpoints(of: "web")
        #expect(catalog.endpoints.count == 3 && catalog.ready.count == 3)
        #expect(catalog.endpoints.map(\.slot) == [1, 2, 3])
        #expect(catalog.endpoints.allSatisfy { $0.address == "127.0.0.1" && $0.nodeName != nil })
        #expect(catalog.index > created.index)

        // Nothing about the endpoints changes: no change is announced, the index stays.
        let quiet = c.feed(.received(c.connections[0], .heartbeat(Heartbeat(sequence: 99, metrics: MachineMetrics()))))
        #expect(Self.changes(quiet).isEmpty)

        // Slot 2's container exits: it is gone from the endpoints, at a newer index.
        let slot2 = try #require(c.running.first { $0.replica?.slot == 2 })
        let connection = c.connections[slot2.node == NodeID(rawValue: "w1") ? 0 : 1]
        let statusID = c.next()
        let ended = c.feed(.received(connection, .taskStatus(TaskStatus(
            statusID: statusID, task: slot2.id, attempt: UInt64(slot2.attempt), state: .failed,
            container: slot2.containerID, exitCode: 1))))
        let announced = try #require(Self.changes(ended).last?.1)
        #expect(!announced.endpoints.contains { $0.task == slot2.id })
        #expect(announced.index > catalog.index)
        #expect(try c.h.machine.endpoints(of: "web") == announced)
    }

    @Test func aDisconnectedNodesEndpointsAreNotReady() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web(replicas: 2)) }
        c.run(for: .seconds(3))
        #expect(try c.h.machine.endpoints(of: "web").ready.count == 2)
        let changes = Self.changes(c.feed(.disconnected(c.connections[1])))
        let catalog = try #require(changes.last?.1)
        let onW2 = catalog.endpoints.filter { $0.node == NodeID(rawValue: "w2") }
        #expect(onW2.count == 1 && onW2.allSatisfy { $0.draining && !$0.ready })
        #expect(catalog.ready.map(\.node) == [NodeID(rawValue: "w1")])
    }

    @Test func aRemovedServiceLeavesTheCatalog() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web(replicas: 1)) }
        c.run(for: .seconds(3))
        _ = c.ask { .removeService($0, "web") }
        var effects = c.outbox
        c.run(for: .seconds(3))
        effects += c.outbox
        #expect(c.service == nil)
        #expect(throws: ClusterError.serviceNotFound("web")) { try c.h.machine.endpoints(of: "web") }
        #expect(Self.changes(effects).contains { $0.0 == "web" && $0.1 == nil } || c.h.machine.fullCatalog.isEmpty)
        #expect(c.h.machine.fullCatalog.isEmpty)
    }

    @Test func aRestartedManagerStartsItsIndexPastTheStoresRevision() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web(replicas: 2)) }
        c.run(for: .seconds(3))
        let before = try c.h.machine.endpoints(of: "web")
        let snapshot = c.h.snapshot
        let restarted = ManagerMachine(configuration: .init(), snapshot: snapshot, now: .zero, wallOrigin: Date(), seed: 1)
        let after = try restarted.endpoints(of: "web")
        // Its nodes are not back yet: the endpoints are listed, none ready.
        #expect(after.endpoints.map(\.task) == before.endpoints.map(\.task))
        #expect(after.ready.isEmpty)
        #expect(after.index >= snapshot.revision && after.index != before.index)
    }

    // MARK: - One endpoint

    static func record(state: TaskState = .running, desired: DesiredState = .run, health: TaskHealth = .none, hostIP: String = "127.0.0.5") -> TaskRecord {
        var record = TaskRecord(id: TaskID(rawValue: "t1"), spec: TaskSpec(image: "x"), now: Date())
        record.replica = ServiceSlot(service: "web", version: 2, slot: 3)
        record.node = NodeID(rawValue: "n1")
        record.containerID = ContainerID(rawValue: "c1")
        record.state = state
        record.desiredState = desired
        record.health = health
        record.hostPorts = [PublishedPort(containerPort: 8080, protocol: .tcp, hostIP: hostIP, hostPort: 32001)]
        return record
    }

    @Test func anEndpointIsReadyOnlyRunningHealthyToKeepRunningOnANodeThatIsUp() throws {
        let ready = try #require(ServiceEndpoint.of(Self.record(), nodeName: "a", nodeAddress: "10.0.0.1", nodeUp: true))
        #expect(ready.ready && !ready.draining && ready.address == "127.0.0.5" && ready.hostPort() == 32001 && ready.slot == 3 && ready.version == 2)
        #expect(ServiceEndpoint.of(Self.record(health: .healthy), nodeName: nil, nodeAddress: nil, nodeUp: true)?.ready == true)
        #expect(ServiceEndpoint.of(Self.record(health: .starting), nodeName: nil, nodeAddress: nil, nodeUp: true)?.ready == false)
        #expect(ServiceEndpoint.of(Self.record(health: .unhealthy), nodeName: nil, nodeAddress: nil, nodeUp: true)?.ready == false)
        let stopping = try #require(ServiceEndpoint.of(Self.record(desired: .stop), nodeName: nil, nodeAddress: nil, nodeUp: true))
        #expect(stopping.draining && !stopping.ready)
        #expect(ServiceEndpoint.of(Self.record(state: .stopping, desired: .stop), nodeName: nil, nodeAddress: nil, nodeUp: true)?.draining == true)
        #expect(ServiceEndpoint.of(Self.record(), nodeName: nil, nodeAddress: nil, nodeUp: false)?.ready == false)
        #expect(ServiceEndpoint.of(Self.record(state: .scheduled), nodeName: nil, nodeAddress: nil, nodeUp: true) == nil, "not published yet")
        #expect(ServiceEndpoint.of(Self.record(state: .failed), nodeName: nil, nodeAddress: nil, nodeUp: true) == nil)
        #expect(ServiceEndpoint.of(Self.record(hostIP: "0.0.0.0"), nodeName: nil, nodeAddress: "10.0.0.1", nodeUp: true)?.address == "10.0.0.1",
                "a port published on every address is reached at the node's address")
        var single = Self.record()
        single.replica = nil
        #expect(ServiceEndpoint.of(single, nodeName: nil, nodeAddress: nil, nodeUp: true) == nil, "a task of no service")
    }

    // MARK: - The routing mesh's tables

    static func tables(_ effects: [ManagerMachine.Effect], on connection: ConnectionID) -> [ServiceTable] {
        ManagerMachineTests.sent(effects, on: connection).compactMap { if case .serviceTable(let table) = $0 { table } else { nil } }
    }

    static func published(_ command: String = "v1") -> ServiceSpec {
        var spec = Cluster.web(command)
        spec.task.ports = [PortSpec(containerPort: 80, publish: 8080)]
        return spec
    }

    /// Every worker gets a service's table whenever its endpoints change; a worker that
    /// joins gets every table right after its welcome, which counts them.
    @Test func everyWorkerFollowsAPublishedServicesEndpoints() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Self.published()) }
        c.run(for: .seconds(3))
        let catalog = try c.h.machine.endpoints(of: "web")
        #expect(catalog.ready.count == 3)

        // A third worker joins: its welcome says one table follows, and it follows.
        _ = c.h.feed(.connected(ConnectionID(rawValue: 3)))
        _ = c.h.feed(.authenticated(ConnectionID(rawValue: 3), NodeID(rawValue: "w3")))
        let hello = c.h.feed(.received(ConnectionID(rawValue: 3), .hello(Hello(
            nodeID: NodeID(rawValue: "w3"), name: "w3", addresses: ["127.0.0.9:0"],
            capacity: Capacity(millicores: 2000, memoryBytes: 4 << 30, diskBytes: 0)))))
        let messages = ManagerMachineTests.sent(hello, on: ConnectionID(rawValue: 3))
        guard case .welcome(let welcome)? = messages.first else {
            Issue.record("expected the welcome first, got \(messages)")
            return
        }
        #expect(welcome.serviceTables == 1)
        guard messages.count >= 2, case .serviceTable(let table) = messages[1] else {
            Issue.record("expected the table right after the welcome, got \(messages)")
            return
        }
        #expect(table.service == "web" && table.listeners == [.init(publish: 8080, containerPort: 80)])
        #expect(table.endpoints.count == 3 && table.endpoints.allSatisfy { $0.state == .ready })
        #expect(Set(table.endpoints.map(\.task)) == Set(catalog.ready.map(\.task)))

        // Slot 1's replica fails: both first workers are told, with a newer index.
        let slot1 = try #require(c.running.first { $0.replica?.slot == 1 })
        let connection = c.connections[slot1.node == NodeID(rawValue: "w1") ? 0 : 1]
        let failed = c.feed(.received(connection, .taskStatus(TaskStatus(
            statusID: c.next(), task: slot1.id, attempt: UInt64(slot1.attempt), state: .failed, container: slot1.containerID, exitCode: 1))))
        for link in c.connections {
            let update = try #require(Self.tables(failed, on: link).last, "no table on \(link)")
            #expect(!update.endpoints.contains { $0.task == slot1.id })
            #expect(update.index > table.index)
        }
    }

    @Test func aRemovedServiceLeavesTheLoadBalancersWithAnEmptyTable() throws {
        var c = Cluster()
        _ = c.ask { .createService($0, Self.published()) }
        c.run(for: .seconds(3))
        let before = Self.tables(c.history, on: c.connections[0])
        #expect(before.last?.endpoints.count == 3)
        _ = c.ask { .removeService($0, "web", by: nil) }
        c.run(for: .seconds(3))
        let seen = Self.tables(c.history, on: c.connections[0])
        #expect(c.h.machine.service("web") == nil)
        let last = try #require(seen.last)
        #expect(last.listeners.isEmpty && last.endpoints.isEmpty, "the last table takes it off: \(last)")
    }

    /// A worker without HAProxy says so in its hello (no `orch.mesh` label): the service
    /// names where its published ports do not listen, and stops saying it once they all do.
    @Test func aServicePublishingAPortWarnsOfUpWorkersWithoutALoadBalancer() throws {
        let mesh = [NodeLabel.mesh: "haproxy"]
        var c = Cluster(labels: { $0 == 1 ? mesh : [:] })
        _ = c.ask { .createService($0, Self.published()) }
        c.run(for: .seconds(2))
        let record = try #require(c.h.machine.service("web"))
        let warnings = c.h.machine.serviceDTO(record, withTasks: false).warnings
        #expect(warnings.count == 1 && warnings[0].contains("port 8080 listens not on w2") && warnings[0].contains("--haproxy PATH"), "\(warnings)")

        var none = Cluster()
        _ = none.ask { .createService($0, Self.published()) }
        let unmeshed = none.h.machine.serviceDTO(try #require(none.h.machine.service("web")), withTasks: false).warnings
        #expect(unmeshed.first?.contains("listens on no worker (none of the 2 up runs a load balancer)") == true, "\(unmeshed)")

        var all = Cluster(labels: { _ in mesh })
        _ = all.ask { .createService($0, Self.published()) }
        #expect(all.h.machine.serviceDTO(try #require(all.h.machine.service("web")), withTasks: false).warnings.isEmpty)
        // A service that publishes nothing needs no load balancer.
        var plain = Cluster()
        _ = plain.ask { .createService($0, Cluster.web()) }
        #expect(plain.h.machine.serviceDTO(try #require(plain.h.machine.service("web")), withTasks: false).warnings.isEmpty)
    }

    @Test func aServiceThatPublishesNothingSendsNoTables() {
        var c = Cluster()
        _ = c.ask { .createService($0, Cluster.web()) }
        c.run(for: .seconds(2))
        #expect(Self.tables(c.history, on: c.connections[0]).isEmpty)
        #expect(c.running.count == 3)
    }

    @Test func aTaskOfItsOwnCannotPublish() {
        var h = ManagerMachineTests.Harness()
        _ = h.join("w1", connection: 1)
        h.commitAll()
        let request = h.request()
        let effects = h.feed(.submit(request, TaskSpec(image: "orch-busybox:latest", ports: [PortSpec(containerPort: 80, publish: 8080)]), by: nil))
        let answer = effects.compactMap { if case .answer(request, let answer) = $0 { answer } else { nil } }.first
        guard case .refused(.invalidTask(let problems))? = answer else {
            Issue.record("expected invalidTask, got \(String(describing: answer))")
            return
        }
        #expect(problems.map(\.path) == ["ports[0].publish"])
        #expect(h.machine.taskTable.tasks.isEmpty)
    }
}
