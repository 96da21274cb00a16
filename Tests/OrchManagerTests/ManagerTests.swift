import Foundation
import Logging
import NIOCore
import NIOPosix
import OrchCore
@testable import OrchManager
import OrchSecurity
import OrchStore
import OrchTestSupport
import OrchWire
import Testing

/// An in-process manager on a temporary data directory, with short heartbeat timings.
final class ManagerHarness: Sendable {
    let manager: Manager
    let running: Task<Void, any Error>
    let wirePort: Int
    /// The join token the manager made in its data directory.
    let joinToken: String

    init(manager: Manager, running: Task<Void, any Error>, wirePort: Int, joinToken: String) {
        self.manager = manager
        self.running = running
        self.wirePort = wirePort
        self.joinToken = joinToken
    }

    var cluster: Cluster { manager.cluster }

    static func start(
        data: String = temporaryDataDirectory(), scheduler: SchedulerKind = .epvm, grace: Duration = .seconds(2),
        restartWindow: Duration = .seconds(1), certificateLifetime: Duration? = nil
    ) async throws -> ManagerHarness {
        var configuration = ManagerConfiguration(dataDirectory: data)
        if let certificateLifetime { configuration.certificateLifetime = certificateLifetime }
        configuration.httpPort = 0
        configuration.wirePort = 0
        configuration.scheduler = scheduler
        configuration.heartbeatInterval = .milliseconds(100)
        configuration.heartbeatGrace = grace
        configuration.restartWindow = restartWindow
        let manager = try await Manager(configuration: configuration, logger: Logger(label: "test.manager"))
        let running = Task { try await manager.run() }
        let deadline = ContinuousClock.now + .seconds(10)
        while manager.wireAddress.withLock({ $0 }) == nil {
            guard ContinuousClock.now < deadline else { throw TestTimeout(what: "the manager to listen") }
            try await Task.sleep(for: .milliseconds(10))
        }
        let port = Int(manager.wireAddress.withLock { $0 }!.split(separator: ":").last!)!
        let token = try String(contentsOfFile: "\(data)/join.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return ManagerHarness(manager: manager, running: running, wirePort: port, joinToken: token)
    }

    func stop() async {
        running.cancel()
        _ = await withDeadline(ContinuousClock.now + .seconds(10)) { [running] in _ = await running.result }
    }

    func worker(
        _ name: String, millicores: UInt32 = 2000, memoryBytes: UInt64 = 4 << 30, autoRun: Bool = true, node: NodeID? = nil,
        sharing membership: ClusterMembership? = nil
    ) -> SimulatedWorker {
        SimulatedWorker(
            name: name, managerPort: wirePort, node: node, joinToken: joinToken, membership: membership,
            millicores: millicores, memoryBytes: memoryBytes, autoRun: autoRun)
    }

    /// A certificate for `node`, joined with the manager's token (kept in memory).
    func joined(_ node: NodeID) async throws -> ClusterMembership {
        let membership = ClusterMembership(node: node, host: "127.0.0.1", port: wirePort)
        try await membership.join(token: try JoinToken(parsing: joinToken))
        return membership
    }

    func submit(_ spec: TaskSpec) async throws -> TaskID {
        try await cluster.submit(spec).record.id
    }

    /// Waits until `condition` holds for the task's record.
    @discardableResult
    func waitFor(_ id: TaskID, _ what: String, within timeout: Duration = .seconds(10), _ condition: @Sendable (TaskRecord) -> Bool) async throws -> TaskRecord {
        let deadline = ContinuousClock.now + timeout
        var last: TaskRecord?
        while ContinuousClock.now < deadline {
            last = await cluster.task(id)
            if let last, condition(last) { return last }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestTimeout(what: "\(id) to be \(what) (last: \(last.map { "\($0.state) on \($0.node?.rawValue ?? "-"), attempt \($0.attempt), \($0.error ?? "")" } ?? "none"))")
    }

    func waitForNode(_ id: NodeID, _ state: NodeDTO.State, within timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await cluster.listNodes().first(where: { $0.id == id })?.state == state { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestTimeout(what: "node \(id) to be \(state)")
    }
}

func temporaryDataDirectory() -> String { temporaryDirectory("manager") }

func task(_ millicores: Int = 500, memory: Int = 64 << 20, policy: RestartMode = .onFailure, id: String? = nil, health: Bool = false) -> TaskSpec {
    TaskSpec(
        id: id.map { TaskID(rawValue: $0) }, image: "orch-busybox:latest", command: ["sleep", "300"],
        ports: health ? [PortSpec(containerPort: 8080)] : [],
        resources: Resources(millicores: millicores, memoryBytes: memory), restartPolicy: RestartPolicy(mode: policy),
        healthCheck: health ? HealthCheck(path: "/health", port: 8080) : nil)
}

@Suite("Manager with simulated workers over loopback TCP", .serialized, .timeLimit(.minutes(3)))
struct ManagerTests {
    @Test func tasksArePlacedAcrossWorkersByReservationAndRun() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        let one = harness.worker("one", millicores: 1000), two = harness.worker("two", millicores: 1000)
        let runs = [one.start(), two.start()]
        defer { runs.forEach { $0.cancel() } }
        try await harness.waitForNode(one.node, .up)
        try await harness.waitForNode(two.node, .up)
        var ids: [TaskID] = []
        for _ in 0..<4 { ids.append(try await harness.submit(task(500))) }
        for id in ids { try await harness.waitFor(id, "running") { $0.state == .running } }
        let placed = await ids.asyncMap { await harness.cluster.task($0)?.node }
        #expect(placed.filter { $0 == one.node }.count == 2 && placed.filter { $0 == two.node }.count == 2,
                "500m tasks on two 1000m nodes: two each")
        // Both nodes are full: a fifth waits, with the reason, until capacity appears.
        let fifth = try await harness.submit(task(500))
        let waiting = try await harness.waitFor(fifth, "waiting") { $0.error?.contains("no node has") == true }
        #expect(waiting.state == .pending)
        _ = try await harness.cluster.stop(ids[0])
        try await harness.waitFor(ids[0], "completed") { $0.state == .completed }
        try await harness.waitFor(fifth, "placed once capacity appears") { $0.state == .running }
        let nodes = await harness.cluster.listNodes()
        #expect(nodes.map(\.reserved.millicores).sorted() == [1000, 1000])
    }

    @Test func aStoppedTaskEndsCompletedAndIsNotRestarted() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        let one = harness.worker("one")
        let run = one.start()
        defer { run.cancel() }
        let id = try await harness.submit(task(policy: .always))
        try await harness.waitFor(id, "running") { $0.state == .running }
        let stopping = try await harness.cluster.stop(id).record
        #expect(stopping.desiredState == .stop && [.stopping, .completed].contains(stopping.state))
        let done = try await harness.waitFor(id, "completed") { $0.state == .completed }
        #expect(done.exitCode == 143)
        try await Task.sleep(for: .milliseconds(1500))
        #expect(await harness.cluster.task(id)?.state == .completed, "no policy restarts a stopped task")
        #expect(Set(one.attempts(of: id)) == [1], "no second attempt (a re-sent assignment of attempt 1 is idempotent)")
    }

    @Test func aSilentWorkerGoesDownAndItsTasksRunOnTheOther() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        let one = harness.worker("one"), two = harness.worker("two")
        let runOne = one.start()
        try await harness.waitForNode(one.node, .up)
        let id = try await harness.submit(task())
        try await harness.waitFor(id, "running on one") { $0.state == .running && $0.node == one.node }
        let runTwo = two.start()
        defer { runTwo.cancel() }
        try await harness.waitForNode(two.node, .up)
        runOne.cancel()   // the worker goes away without a word
        try await harness.waitForNode(one.node, .down, within: .seconds(5))
        let moved = try await harness.waitFor(id, "running on two") { $0.state == .running && $0.node == two.node }
        #expect(moved.attempt == 2)
        let history = try await harness.manager.store.history(of: id).map(\.message)
        #expect(history.contains("node lost"))
    }

    @Test func goodbyeDrainingMovesTasksAtOnceAndRestartingKeepsThemForTheWindow() async throws {
        let harness = try await ManagerHarness.start(grace: .seconds(5), restartWindow: .milliseconds(800))
        defer { Task { await harness.stop() } }
        let one = harness.worker("one"), two = harness.worker("two")
        let runOne = one.start(), runTwo = two.start()
        defer { runTwo.cancel() }
        try await harness.waitForNode(one.node, .up)
        try await harness.waitForNode(two.node, .up)
        let a = try await harness.submit(TaskSpec(image: "i", constraints: PlacementConstraints(node: "one")))
        try await harness.waitFor(a, "running on one") { $0.state == .running }
        // Restarting: the task is kept while the window runs.
        try await one.client.send(.goodbye(Goodbye(reason: .restarting, message: "upgrade")))
        try await harness.waitForNode(one.node, .restarting)
        runOne.cancel()
        try await Task.sleep(for: .milliseconds(400))
        #expect(await harness.cluster.task(a)?.state == .running, "kept during the restart window")
        // Its policy is "never": once the window has passed, the lost task fails.
        let lost = try await harness.waitFor(a, "failed after the window") { $0.state == .failed }
        #expect(lost.error?.contains("was lost") == true)

        // Draining: moved at once (well before the 5 s grace).
        let b = try await harness.submit(TaskSpec(image: "i", restartPolicy: RestartPolicy(mode: .onFailure)))   // only two is up
        try await harness.waitFor(b, "running on two") { $0.state == .running }
        let three = harness.worker("three")
        let runThree = three.start()
        defer { runThree.cancel() }
        try await harness.waitForNode(three.node, .up)
        try await two.client.send(.goodbye(Goodbye(reason: .draining, message: "maintenance")))
        let started = ContinuousClock.now
        let moved = try await harness.waitFor(b, "running on three", within: .seconds(3)) { $0.state == .running && $0.node == three.node }
        #expect(moved.attempt == 2)
        #expect(ContinuousClock.now - started < .seconds(2), "moved at once, not after the 5 s grace")
        #expect(two.stops.withLock { $0 }.contains(StopTask(task: b, attempt: 1)), "the draining node is told to stop the old attempt")
    }

    @Test func aLiveTwinIsRefusedForNowAndAnUnknownVersionForGood() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        let one = harness.worker("one")
        let run = one.start()
        defer { run.cancel() }
        try await harness.waitForNode(one.node, .up)
        // Another process with the same id (and certificate) while the first heartbeats:
        // refused, but not for good (it may be the same worker whose old connection is half-open).
        let twin = harness.worker("twin", node: one.node, sharing: one.membership)
        let twinRun = twin.start()
        defer { twinRun.cancel() }
        let refusal = await withDeadline(ContinuousClock.now + .seconds(10)) { () -> String? in
            for await state in twin.client.states {
                if case .disconnected(let reason, _) = state, reason.contains("refused for now") { return reason }
            }
            return nil
        }
        #expect(refusal??.contains("is connected already") == true, "refused: \(String(describing: refusal))")
        #expect(await harness.cluster.listNodes().first { $0.id == one.node }?.name == "one", "the live node keeps its connection")

        let future = WireClient(
            host: "127.0.0.1", port: harness.wirePort,
            hello: Hello(oldestVersion: 9, newestVersion: 10, nodeID: NodeID(rawValue: "future"), name: "future", addresses: [],
                         capacity: Capacity(millicores: 1000, memoryBytes: 1 << 30, diskBytes: 0)),
            tls: one.membership.tlsHandler)
        let refusedVersion = await withDeadline(ContinuousClock.now + .seconds(10)) {
            await Task { try await future.run(WireClientHandlers(received: { _ in })) }.result
        }
        guard case .failure(WireClientError.refused(let versionRefusal))? = refusedVersion else {
            Issue.record("expected a refusal, got \(String(describing: refusedVersion))")
            return
        }
        #expect(versionRefusal.code == .noCommonVersion && versionRefusal.permanent)
    }

    @Test func aWrongJoinSecretIsRefusedForGoodAndJoinsNothing() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        var token = try JoinToken(parsing: harness.joinToken)
        token.secret = String(token.secret.reversed())
        let membership = ClusterMembership(node: NodeID(rawValue: "intruder"), host: "127.0.0.1", port: harness.wirePort)
        do {
            try await membership.join(token: token)
            Issue.record("joined with a wrong secret")
        } catch WireClientError.refused(let refused) {
            #expect(refused.code == .badToken && refused.permanent)
            #expect(refused.reason.contains("join token"))
        }
        #expect(membership.credentials.certificate == nil)
        #expect(await harness.cluster.listNodes().isEmpty)
    }

    @Test func aJoinWithACertificateRequestThatIsNotOneIsRefusedForGood() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        let token = try JoinToken(parsing: harness.joinToken)
        let context = try ClusterTLS.joiningContext()
        let channel = try await WireDialer.connect(
            host: "127.0.0.1", port: harness.wirePort, tls: { try ClusterTLS.joiningHandler(context: context, fingerprint: token.caFingerprint) })
        let answer = try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(.joinRequest(JoinRequest(nodeID: NodeID(rawValue: "garbled"), secret: token.secret, csr: [0x30, 0x02, 0x05, 0x00])))
            var messages = inbound.makeAsyncIterator()
            return try await messages.next()
        }
        guard case .refused(let refused)? = answer else {
            Issue.record("expected a refusal, got \(String(describing: answer))")
            return
        }
        #expect(refused.permanent && refused.reason.contains("certificate request"), "\(refused)")
        #expect(await harness.cluster.listNodes().isEmpty)
    }

    @Test func aWorkerRenewsItsCertificateAtHalfItsLifeAndReconnectsWithTheNewOne() async throws {
        let harness = try await ManagerHarness.start(grace: .seconds(30), certificateLifetime: .seconds(4))
        defer { Task { await harness.stop() } }
        let one = harness.worker("renewing")
        let run = one.start()
        defer { run.cancel() }
        try await harness.waitForNode(one.node, .up)
        let first = try #require(one.membership.credentials.certificate)
        let renewal = Task { await one.membership.keepRenewed(logger: Logger(label: "test.renewal")) }
        defer { renewal.cancel() }
        let deadline = ContinuousClock.now + .seconds(10)
        while one.membership.credentials.certificate?.serialNumber == first.serialNumber, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let renewed = try #require(one.membership.credentials.certificate)
        #expect(renewed.serialNumber != first.serialNumber, "renewed within 10 s")
        #expect(renewed.publicKey == first.publicKey, "the same key, a new certificate")
        // Not before half its life (2 s after it was issued), nor long after.
        let issuedAt = first.notValidBefore.addingTimeInterval(ClusterCA.backdating)
        let renewedAt = renewed.notValidBefore.addingTimeInterval(ClusterCA.backdating)
        #expect(renewedAt.timeIntervalSince(issuedAt) >= 1.9 && renewedAt.timeIntervalSince(issuedAt) < 4)
        #expect(await one.client.isConnected, "the connection held meanwhile is not touched")
        // Past the first certificate's end, a new connection is made with the new one.
        while Date() < first.notValidAfter.addingTimeInterval(0.5) { try await Task.sleep(for: .milliseconds(50)) }
        await one.client.wire.dropConnection(reason: "test")
        let again = ContinuousClock.now + .seconds(10)
        try await Task.sleep(for: .milliseconds(100))
        while !(await one.client.isConnected), ContinuousClock.now < again { try await Task.sleep(for: .milliseconds(20)) }
        #expect(await one.client.isConnected, "reconnected with the renewed certificate")
    }

    @Test func aWorkerDialingAgainReplacesItsHalfOpenConnection() async throws {
        let harness = try await ManagerHarness.start(grace: .seconds(10))
        defer { Task { await harness.stop() } }
        let node = NodeID(rawValue: "sim-again")
        // The old connection: welcomed, then silent, never closed (its host rebooted).
        let membership = try await harness.joined(node)
        let old = try await WireDialer.connect(host: "127.0.0.1", port: harness.wirePort, tls: membership.tlsHandler)
        let channel = old.channel
        try await old.executeThenClose { inbound, outbound in
            try await outbound.write(.hello(Hello(
                nodeID: node, name: "again", addresses: [], capacity: Capacity(millicores: 1000, memoryBytes: 1 << 30, diskBytes: 0))))
            var messages = inbound.makeAsyncIterator()
            guard case .welcome? = try await messages.next() else {
                Issue.record("the first connection was not welcomed")
                return
            }
            try await Task.sleep(for: .milliseconds(400))   // silent for more than two heartbeat intervals
            let again = harness.worker("again", node: node, sharing: membership)
            let run = again.start()
            defer { run.cancel() }
            let closed = await withDeadline(ContinuousClock.now + .seconds(5)) { () -> Bool in
                (try? await channel.closeFuture.get()) != nil
            }
            #expect(closed == true, "the half-open connection is closed by the manager")
            let deadline = ContinuousClock.now + .seconds(5)
            while !(await again.client.isConnected), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(await again.client.isConnected, "the worker dialing again is welcomed, not refused for good")
            try await harness.waitForNode(node, .up)
        }
    }

    @Test func aStaleAttemptIsStoppedWhenItsWorkerReconnects() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        let one = harness.worker("one")
        // This worker comes back holding an attempt the manager never gave it.
        one.held.withLock { $0[TaskID(rawValue: "ghost")] = (attempt: 4, state: .running) }
        let run = one.start()
        defer { run.cancel() }
        let deadline = ContinuousClock.now + .seconds(10)
        while one.stops.withLock({ $0.isEmpty }), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(one.stops.withLock { $0 } == [StopTask(task: TaskID(rawValue: "ghost"), attempt: 4)])
    }

    @Test func aFailedTaskIsRestartedWithBackoffByItsPolicy() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        let one = harness.worker("one")
        let run = one.start()
        defer { run.cancel() }
        let restarted = try await harness.submit(task(policy: .onFailure))
        let never = try await harness.submit(task(policy: .never))
        try await harness.waitFor(restarted, "running") { $0.state == .running }
        try await harness.waitFor(never, "running") { $0.state == .running }
        let failedAt = ContinuousClock.now
        await one.report(restarted, state: .failed, exitCode: 1)
        await one.report(never, state: .failed, exitCode: 2)
        let pending = try await harness.waitFor(restarted, "pending for its backoff") { $0.state == .pending }
        #expect(pending.restartCount == 1)
        let again = try await harness.waitFor(restarted, "running again") { $0.state == .running && $0.attempt == 2 }
        #expect(ContinuousClock.now - failedAt >= .milliseconds(900), "the first restart waits about 1 s")
        #expect(again.restartCount == 1)
        let left = try await harness.waitFor(never, "failed") { $0.state == .failed }
        #expect(left.exitCode == 2 && left.attempt == 1)
        #expect(await one.client.unacknowledged.isEmpty, "terminal statuses are acknowledged once recorded")
    }

    @Test func anUnhealthyTaskIsStoppedAndPlacedAgain() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        let one = harness.worker("one")
        let run = one.start()
        defer { run.cancel() }
        let id = try await harness.submit(task(policy: .onFailure, health: true))
        try await harness.waitFor(id, "running") { $0.state == .running }
        await one.report(id, state: .running, health: .healthy)
        try await harness.waitFor(id, "healthy") { $0.health == .healthy }
        await one.report(id, state: .running, health: .unhealthy, error: "GET /health answered 503 Service Unavailable (3 times in a row)")
        try await harness.waitFor(id, "running again as attempt 2", within: .seconds(10)) { $0.state == .running && $0.attempt == 2 }
        #expect(one.stops.withLock { $0 }.contains(StopTask(task: id, attempt: 1)))
        let history = try await harness.manager.store.history(of: id).map(\.message)
        #expect(history.contains("health check failed: GET /health answered 503 Service Unavailable (3 times in a row)"), "the worker's words are kept: \(history)")
    }

    @Test func aRestartedManagerKeepsEveryTaskAndNodeAndReconciles() async throws {
        let data = temporaryDataDirectory()
        let first = try await ManagerHarness.start(data: data, grace: .seconds(3))
        let one = first.worker("one")
        let run = one.start()
        defer { run.cancel() }
        let id = try await first.submit(task())
        let waiting = try await first.submit(task(64_000))
        try await first.waitFor(id, "running") { $0.state == .running }
        try await first.waitFor(waiting, "waiting") { $0.error != nil }
        await first.stop()

        var configuration = ManagerConfiguration(dataDirectory: data)
        configuration.httpPort = 0
        configuration.wirePort = first.wirePort   // the worker dials the same address again
        configuration.heartbeatInterval = .milliseconds(100)
        configuration.heartbeatGrace = .seconds(3)
        let manager = try await Manager(configuration: configuration, logger: Logger(label: "test.manager.2"))
        #expect(await manager.cluster.task(id)?.state == .running, "every task comes back")
        #expect(await manager.cluster.task(waiting)?.state == .pending)
        #expect(await manager.cluster.listNodes().map(\.id) == [one.node], "and every node")
        let second = ManagerHarness(manager: manager, running: Task { try await manager.run() }, wirePort: first.wirePort, joinToken: first.joinToken)
        defer { Task { await second.stop() } }
        try await second.waitForNode(one.node, .up)
        try await Task.sleep(for: .seconds(1))
        let record = try await second.waitFor(id, "still running on one") { $0.state == .running && $0.node == one.node }
        #expect(record.attempt == 1, "reconciled, not placed again")
        #expect(one.attempts(of: id).allSatisfy { $0 == 1 })
    }

    @Test func aMalformedFrameGetsAnErrorFrameAndTheManagerGoesOn() async throws {
        let harness = try await ManagerHarness.start()
        defer { Task { await harness.stop() } }
        let raw = try await rawConnection(harness.wirePort, tls: try await harness.joined(NodeID(rawValue: "raw-malformed")))
        let answer = try await raw.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: [0, 0, 0, 3, 0x01, 0xff, 0xff]))   // a hello cut short
            var bytes = ByteBuffer()
            for try await chunk in inbound { bytes.writeImmutableBuffer(chunk) }
            return bytes
        }
        var frame = answer
        guard case .error(let error)? = try Frame.decode(from: &frame) else {
            Issue.record("expected an error frame")
            return
        }
        #expect(error.code == .malformedFrame)
        let one = harness.worker("after")
        let run = one.start()
        defer { run.cancel() }
        try await harness.waitForNode(one.node, .up)
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
