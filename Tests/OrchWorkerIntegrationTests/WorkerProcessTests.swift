import Foundation
import OrchCore
import OrchRuntime
import OrchTestSupport
import OrchWire
import Testing

/// `orchctl worker` as a real process, against a test peer and the real Docker engine.
@Suite("orchctl worker as a process (Docker)", .serialized, .timeLimit(.minutes(3)))
struct WorkerProcessTests {
    func launch(_ peer: ScriptedManager, port peerPort: Int, stateDir: String, name: String, extra: [String] = []) throws -> LaunchedProcess {
        try LaunchedProcess(orchctl: [
            "worker", "--manager", "127.0.0.1:\(peerPort)", "--http", "127.0.0.1:0", "--name", name, "--state-dir", stateDir,
        ] + extra, environment: ["ORCH_JOIN_TOKEN": peer.joinToken.description])
    }

    @Test func aKilledWorkerRestartedAdoptsItsContainerAndStopsAStaleOne() async throws {
        let peer = ScriptedManager(heartbeatInterval: .milliseconds(100))
        peer.autoAck.withLock { $0 = true }
        let (port, listener) = try await peer.listen(tls: true)
        defer { listener.cancel() }
        let runtime = try await connectDocker()
        let stateDir = temporaryDirectory("adopt")
        var events = EventReader(peer)
        var worker = try launch(peer, port: port, stateDir: stateDir, name: "adopt")
        let hello = try await events.next("first hello") { if case .connected(1, let hello) = $0 { hello } else { nil } }
        let node = hello.nodeID
        do {

        let kept = TaskID(rawValue: "kept"), stale = TaskID(rawValue: "stale")
        try await peer.send(.assignTask(AssignTask(task: kept, attempt: 1, spec: sleeper())), on: 1)
        try await peer.send(.assignTask(AssignTask(task: stale, attempt: 1, spec: sleeper())), on: 1)
        let keptRunning = try await awaitStatus(peer, kept, "kept running") { $0.state == .running }
        let staleRunning = try await awaitStatus(peer, stale, "stale running") { $0.state == .running }

        worker.signal(SIGKILL)
        _ = try await worker.waitForExit()
        worker = try launch(peer, port: port, stateDir: stateDir, name: "adopt")
        let again = try await events.next("second hello") { if case .connected(2, let hello) = $0 { hello } else { nil } }
        #expect(again.nodeID == node, "the same node id from the state directory")
        let list = try await events.next("task list after restart") { if case .message(2, .taskList(let list)) = $0 { list } else { nil } }
        #expect(list.entries.contains { $0.task == kept && $0.attempt == 1 && $0.state == .running && $0.container == keptRunning.container })
        #expect(list.entries.contains { $0.task == stale && $0.state == .running && $0.container == staleRunning.container })

        // The manager still wants `kept` (it sends the assignment again) and no longer `stale`.
        try await peer.send(.assignTask(AssignTask(task: kept, attempt: 1, spec: sleeper())), on: 2)
        try await peer.send(.stopTask(StopTask(task: stale, attempt: 1)), on: 2)
        _ = try await waitForStatus(&events, stale, "stale stopped") { $0.state == .completed }
        let labels = [ContainerLabel.node: node.rawValue]
        let deadline = ContinuousClock.now + .seconds(10)
        while try await runtime.list(labels: labels).count > 1, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        let containers = try await runtime.list(labels: labels)
        #expect(containers.map(\.id) == [keptRunning.container].compactMap { $0 }, "one container: the adopted one, not a second")
        #expect(containers.first?.state == "running")
        worker.signal(SIGKILL)
        } catch {
            worker.signal(SIGKILL)
            await removeContainers(of: node, runtime)
            try? await runtime.shutdown()
            throw error
        }
        await removeContainers(of: node, runtime)
        try? await runtime.shutdown()
    }

    @Test func aPermanentlyRefusedWorkerExitsNonZeroWithTheReason() async throws {
        let peer = ScriptedManager()
        peer.refusals.withLock { $0 = [Refused(code: .noCommonVersion, permanent: true, reason: "this manager speaks protocol 7 to 9")] }
        let (port, listener) = try await peer.listen(tls: true)
        defer { listener.cancel() }
        let worker = try launch(peer, port: port, stateDir: temporaryDirectory("refused"), name: "refused")
        let status = try await worker.waitForExit()
        #expect(status == 3)
        #expect(worker.output.contains("the manager refused this worker: this manager speaks protocol 7 to 9"), "output: \(worker.output)")
    }

    @Test func sigtermSaysGoodbyeRestartingAndLeavesTheContainersRunning() async throws {
        for drain in [false, true] {
            let peer = ScriptedManager(heartbeatInterval: .milliseconds(100))
            peer.autoAck.withLock { $0 = true }
            let (port, listener) = try await peer.listen(tls: true)
            defer { listener.cancel() }
            let runtime = try await connectDocker()
            var events = EventReader(peer)
            let worker = try launch(peer, port: port, stateDir: temporaryDirectory("term"), name: "term", extra: drain ? ["--drain"] : [])
            var node: NodeID?
            do {
                let hello = try await events.next("hello") { if case .connected(1, let hello) = $0 { hello } else { nil } }
                node = hello.nodeID
                let task = TaskID(rawValue: "survivor")
                try await peer.send(.assignTask(AssignTask(task: task, attempt: 1, spec: sleeper())), on: 1)
                _ = try await waitForStatus(&events, task, "running") { $0.state == .running }

                worker.signal(SIGTERM)
                let goodbye = try await events.next("goodbye") { if case .message(1, .goodbye(let goodbye)) = $0 { goodbye } else { nil } }
                #expect(goodbye.reason == (drain ? .draining : .restarting))
                #expect(try await worker.waitForExit() == 0, "output: \(worker.output)")
                let containers = try await runtime.list(labels: [ContainerLabel.node: hello.nodeID.rawValue])
                #expect(containers.map(\.state) == ["running"], "the container outlives its worker")
            } catch {
                // A failure here is this test's, not the run's: the runtime's HTTP client is
                // shut down (dropped running, it traps and takes every test with it).
                if let node { await removeContainers(of: node, runtime) }
                try? await runtime.shutdown()
                throw error
            }
            if let node { await removeContainers(of: node, runtime) }
            try? await runtime.shutdown()
        }
    }

    @Test func badOptionsAreOneClearLine() async throws {
        let worker = try LaunchedProcess(orchctl: ["worker", "--manager", "nowhere"])
        #expect(try await worker.waitForExit() != 0)
        #expect(worker.output.contains("--manager: \"nowhere\" is not host:port"), "output: \(worker.output)")
    }
}
