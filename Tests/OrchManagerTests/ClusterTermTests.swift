import Foundation
import Logging
import OrchControl
import OrchCore
@testable import OrchManager
import OrchTestSupport
import Testing

/// The cluster actor's terms, in process: a follower serves nothing; leading loads a state
/// for the epoch taken over, and only for it; stepping down ends every wait and stream of
/// the term at once and leaves an empty follower.
@Suite struct ClusterTermTests {
    func follower() -> Cluster {
        Cluster(
            configuration: ManagerConfiguration(dataDirectory: temporaryDirectory("term")), snapshot: StoreSnapshot(tasks: [], nodes: []),
            directory: LeaderDirectory(name: "m1", alone: false), metrics: ManagerMetrics(), logger: Logger(label: "test"))
    }

    func snapshot() -> StoreSnapshot {
        let spec = TaskSpec(id: TaskID(rawValue: "kept"), image: "orch-busybox:latest")
        let record = TaskRecord(id: TaskID(rawValue: "kept"), spec: spec, now: Date(timeIntervalSince1970: 1_800_000_000))
        return StoreSnapshot(tasks: [record], nodes: [], revision: 7)
    }

    @Test func aFollowerRefusesRequestsAndServesNothing() async throws {
        let cluster = follower()
        #expect(await !cluster.isActing)
        await #expect(throws: ClusterError.self) { _ = try await cluster.submit(TaskSpec(image: "orch-busybox:latest")) }
        #expect(await cluster.takeBatches() == nil)
        #expect(!cluster.directory.info.acting)
    }

    @Test func leadingLoadsTheStateOnlyForTheEpochTakenOver() async throws {
        let cluster = follower()
        #expect(await !cluster.lead(snapshot: snapshot(), epoch: 3), "no take-over began for epoch 3")
        await cluster.takeOver(epoch: 3)
        #expect(await !cluster.lead(snapshot: snapshot(), epoch: 2), "another epoch's state is not taken")
        #expect(await cluster.lead(snapshot: snapshot(), epoch: 3))
        #expect(await cluster.task(TaskID(rawValue: "kept")) != nil && cluster.directory.info.acting && cluster.directory.info.epoch == 3)
        #expect(await cluster.revision == 7)
    }

    @Test func steppingDownEndsEveryWaitAndStreamOfTheTerm() async throws {
        let cluster = follower()
        await cluster.takeOver(epoch: 5)
        #expect(await cluster.lead(snapshot: snapshot(), epoch: 5))
        let generation = await cluster.termGeneration
        #expect(await cluster.serves(generation))
        let last = await cluster.lastEvent
        let waiting = Task { await cluster.events(after: last, limit: 10, task: nil, node: nil, service: nil, wait: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(200))
        let started = ContinuousClock.now
        await cluster.stepDown(reason: "the lease was lost")
        _ = await waiting.value
        #expect(ContinuousClock.now - started < .seconds(5), "the events wait ends at once")
        #expect(await !cluster.serves(generation), "a stream of that term ends")
        #expect(await cluster.task(TaskID(rawValue: "kept")) == nil && !cluster.directory.info.acting, "an empty follower")
        await #expect(throws: ClusterError.self) { _ = try await cluster.submit(TaskSpec(image: "orch-busybox:latest")) }
    }
}
