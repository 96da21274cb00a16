import OrchControl
import OrchCore
import Testing

/// The routing mesh's decisions on a worker: which configuration HAProxy starts with, and
/// which runtime API commands follow each table.
@Suite struct LoadBalancerPlanTests {
    static let settings = LoadBalancerPlan.Settings(bindAddress: "127.0.0.2", socketPath: "/run/w1/admin.sock")

    static func endpoint(_ task: String, _ hostPort: Int, _ state: ServiceTable.State = .ready, address: String = "127.0.0.3") -> ServiceTable.Endpoint {
        .init(task: TaskID(rawValue: task), address: address,
              ports: [PublishedPort(containerPort: 80, protocol: .tcp, hostIP: address, hostPort: hostPort)], state: state)
    }

    static func table(_ index: UInt64, _ endpoints: [ServiceTable.Endpoint], publish: [UInt16] = [8080], service: String = "web") -> ServiceTable {
        ServiceTable(service: service, index: index, listeners: publish.map { .init(publish: $0, containerPort: 80) }, endpoints: endpoints, drain: .seconds(2))
    }

    static func commands(_ actions: [LoadBalancerPlan.Action]) -> [String] {
        actions.flatMap { action -> [String] in
            if case .commands(let lines) = action { return lines }
            return []
        }
    }

    @Test func theFirstPublishedPortStartsHAProxyWithTheReadyServers() throws {
        var plan = LoadBalancerPlan(settings: Self.settings)
        let actions = plan.apply(Self.table(1, [Self.endpoint("t1", 32768), Self.endpoint("t2", 32769, .draining), Self.endpoint("t3", 32770, .down)]))
        guard case .start(let config) = try #require(actions.first), actions.count == 1 else {
            Issue.record("expected one start, got \(actions)")
            return
        }
        for line in ["stats socket /run/w1/admin.sock mode 600 level admin", "mode tcp", "option clitcpka", "option srvtcpka",
                     "option redispatch 1", "listen web_8080", "bind 127.0.0.2:8080", "balance leastconn", "server t1 127.0.0.3:32768"] {
            #expect(config.contains(line), "config lacks \(line)")
        }
        #expect(!config.contains("t2") && !config.contains("t3"), "only ready endpoints are in a fresh configuration")
        #expect(plan.running == ["web_8080": ["t1": .init(address: "127.0.0.3", port: 32768, state: .ready)]])
    }

    @Test func endpointChangesAreRuntimeCommandsNeverARestart() {
        var plan = LoadBalancerPlan(settings: Self.settings)
        _ = plan.apply(Self.table(1, [Self.endpoint("t1", 32768), Self.endpoint("t2", 32769)]))
        // t3 joins ready, t1 drains, t2 is gone.
        let next = plan.apply(Self.table(2, [Self.endpoint("t1", 32768, .draining), Self.endpoint("t3", 32770)]))
        #expect(Self.commands(next) == [
            "set server web_8080/t1 state drain",
            "add server web_8080/t3 127.0.0.3:32770", "enable server web_8080/t3",
            "set server web_8080/t2 state maint", "del server web_8080/t2",
        ])
        #expect(next.count == 1)
        // Unhealthy, then healthy again.
        #expect(Self.commands(plan.apply(Self.table(3, [Self.endpoint("t1", 32768, .draining), Self.endpoint("t3", 32770, .down)])))
                == ["set server web_8080/t3 state maint"])
        #expect(Self.commands(plan.apply(Self.table(4, [Self.endpoint("t1", 32768, .draining), Self.endpoint("t3", 32770)])))
                == ["set server web_8080/t3 state ready"])
        // The same table again: nothing to do.
        #expect(plan.apply(Self.table(4, [Self.endpoint("t1", 32768, .draining), Self.endpoint("t3", 32770)])).isEmpty)
    }

    @Test func anOlderTableIsIgnored() {
        var plan = LoadBalancerPlan(settings: Self.settings)
        _ = plan.apply(Self.table(5, [Self.endpoint("t1", 32768)]))
        #expect(plan.apply(Self.table(4, [])).isEmpty)
        #expect(plan.tables["web"]?.index == 5)
    }

    @Test func aServerMovedElsewhereIsDeletedAndAddedAgain() {
        var plan = LoadBalancerPlan(settings: Self.settings)
        _ = plan.apply(Self.table(1, [Self.endpoint("t1", 32768)]))
        #expect(Self.commands(plan.apply(Self.table(2, [Self.endpoint("t1", 40000)]))) == [
            "set server web_8080/t1 state maint", "del server web_8080/t1",
            "add server web_8080/t1 127.0.0.3:40000", "enable server web_8080/t1",
        ])
    }

    @Test func aNewPublishedPortOrAnotherServiceStartsItAgainAndTheLastOneGoneStopsIt() throws {
        var plan = LoadBalancerPlan(settings: Self.settings)
        _ = plan.apply(Self.table(1, [Self.endpoint("t1", 32768)]))
        let another = plan.apply(Self.table(1, [Self.endpoint("a1", 32800)], publish: [9090], service: "api"))
        guard case .start(let config)? = another.first else {
            Issue.record("expected a start, got \(another)")
            return
        }
        #expect(config.contains("listen web_8080") && config.contains("listen api_9090") && config.contains("server a1 127.0.0.3:32800"))
        #expect(plan.apply(ServiceTable(service: "api", index: 2, listeners: [], endpoints: [], drain: .zero)).count == 1)
        #expect(plan.apply(ServiceTable(service: "web", index: 2, listeners: [], endpoints: [], drain: .zero)) == [.stop])
        #expect(plan.running == nil)
    }

    @Test func afterHAProxyDiedItStartsAgainFromTheTables() {
        var plan = LoadBalancerPlan(settings: Self.settings)
        _ = plan.apply(Self.table(1, [Self.endpoint("t1", 32768)]))
        _ = plan.apply(Self.table(2, [Self.endpoint("t1", 32768), Self.endpoint("t2", 32769)]))
        let again = plan.exited()
        guard case .start(let config)? = again.first else {
            Issue.record("expected a start, got \(again)")
            return
        }
        #expect(config.contains("server t1 127.0.0.3:32768") && config.contains("server t2 127.0.0.3:32769"))
    }

    @Test func aDeletionRefusedIsTriedAgainAndTheServerNotAddedMeanwhile() {
        var plan = LoadBalancerPlan(settings: Self.settings)
        _ = plan.apply(Self.table(1, [Self.endpoint("t1", 32768), Self.endpoint("t2", 32769)]))
        _ = plan.apply(Self.table(2, [Self.endpoint("t1", 32768)]))
        plan.deleteRefused("web_8080/t2")   // connections still on it
        #expect(Self.commands(plan.apply(Self.table(3, [Self.endpoint("t1", 32768, .draining)])))
                == ["set server web_8080/t1 state drain", "del server web_8080/t2"])
        plan.deleted("web_8080/t2")
        #expect(plan.leaving.isEmpty)
    }

    @Test func aWelcomeReplacesEveryTable() {
        var plan = LoadBalancerPlan(settings: Self.settings)
        _ = plan.apply(Self.table(1, [Self.endpoint("t1", 32768)]))
        _ = plan.apply(Self.table(1, [Self.endpoint("a1", 32800)], publish: [9090], service: "api"))
        // The manager's tables after a reconnect no longer list api: it was removed meanwhile.
        #expect(plan.welcomed(tables: 1).isEmpty && plan.isSyncing, "nothing changes until the announced tables are in")
        #expect(plan.tables.keys.sorted() == ["api", "web"])
        let actions = plan.received(Self.table(7, [Self.endpoint("t1", 32768)]))
        #expect(plan.tables.keys.sorted() == ["web"] && !plan.isSyncing)
        guard case .start(let config)? = actions.first else {
            Issue.record("expected a start without api, got \(actions)")
            return
        }
        #expect(!config.contains("api_9090"))
        #expect(plan.welcomed(tables: 0) == [.stop])
    }

    @Test func anHTTPPortBalancesRequestsAndRetriesThemAndAModeChangeStartsItAgain() throws {
        var plan = LoadBalancerPlan(settings: Self.settings)
        _ = plan.apply(Self.table(1, [Self.endpoint("t1", 32768)]))
        var http = Self.table(2, [Self.endpoint("t1", 32768)])
        http.listeners = [.init(publish: 8080, containerPort: 80, mode: .http)]
        let actions = plan.apply(http)
        guard case .start(let config)? = actions.first else {
            Issue.record("a change of mode is a new start, got \(actions)")
            return
        }
        #expect(config.contains("mode http") && config.contains("retry-on conn-failure empty-response") && config.contains("disable-l7-retry if METH_POST"))
    }

    @Test func thePortsListenForContainersTooOnceTheGatewayIsKnown() throws {
        var plan = LoadBalancerPlan(settings: Self.settings)
        _ = plan.apply(Self.table(1, [Self.endpoint("t1", 32768)]))
        let actions = plan.listenForContainers(on: "172.17.0.1")
        guard case .start(let config)? = actions.first else {
            Issue.record("a new address is a new start, got \(actions)")
            return
        }
        #expect(config.contains("bind 127.0.0.2:8080") && config.contains("bind 172.17.0.1:8080"))
        #expect(plan.listenForContainers(on: "172.17.0.1").isEmpty)
    }
}
