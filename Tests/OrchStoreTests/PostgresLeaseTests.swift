import Foundation
import OrchCore
@testable import OrchStore
import OrchTestSupport
import Testing

/// The managers' lease in PostgreSQL, on a real server: one holder at a time, judged by the
/// database's clock; renewed only by its holder and epoch; taken by another once expired,
/// with the next epoch; given up at once by a release; and every write fenced by the epoch,
/// so that a deposed leader commits nothing.
@Suite("The managers' lease in PostgreSQL (a real server of the test's own)", .serialized, .timeLimit(.minutes(2)))
struct PostgresLeaseTests {
    @Test func oneHolderAtATimeAndADeposedLeaderWritesNothing() async throws {
        try await PostgresServer.with { server in
            let a = try await PostgresStore(url: server.url())
            let b = try await PostgresStore(url: server.url())
            #expect(try await a.currentLease() == .free)
            #expect(try await a.acquireLease(holder: "a", for: .seconds(1)) == .held(epoch: 1))
            #expect(try await b.acquireLease(holder: "b", for: .seconds(1)) == .heldBy(holder: "a", epoch: 1), "held and live: not taken")
            #expect(try await a.renewLease(holder: "a", epoch: 1, for: .seconds(1)) == .held(epoch: 1))
            #expect(try await b.renewLease(holder: "b", epoch: 1, for: .seconds(1)) == .heldBy(holder: "a", epoch: 1), "only its holder renews it")
            let first = TaskRecord(id: TaskID(rawValue: "by-a"), spec: TaskSpec(image: "orch-busybox:latest"), now: Date(timeIntervalSince1970: 1_800_000_000))
            try await a.apply([StoreBatch(sequence: 1, changes: [.insertTask(first)])], fencedBy: 1)

            // Not renewed: expired by the database's clock, and taken with the next epoch.
            try await Task.sleep(for: .milliseconds(1300))
            #expect(try await b.acquireLease(holder: "b", for: .seconds(5)) == .held(epoch: 2))
            #expect(try await a.renewLease(holder: "a", epoch: 1, for: .seconds(1)) == .heldBy(holder: "b", epoch: 2))
            let late = TaskRecord(id: TaskID(rawValue: "late-a"), spec: TaskSpec(image: "orch-busybox:latest"), now: Date(timeIntervalSince1970: 1_800_000_001))
            await #expect(throws: StaleEpochError.self) {
                try await a.apply([StoreBatch(sequence: 2, changes: [.insertTask(late)])], fencedBy: 1)
            }
            try await b.apply([StoreBatch(sequence: 3, changes: [.appendHistory(TaskHistoryEntry(task: first.id, at: first.createdAt, state: .pending, message: "b leads"))])], fencedBy: 2)
            let snapshot = try await b.load()
            #expect(snapshot.tasks.map(\.id) == [first.id], "nothing of the deposed leader's late write: \(snapshot.tasks.map(\.id))")
            #expect(snapshot.revision == 3)

            // A release hands it over at once.
            try await b.releaseLease(holder: "b", epoch: 2)
            #expect(try await a.currentLease() == .free)
            #expect(try await a.acquireLease(holder: "a", for: .seconds(5)) == .held(epoch: 3))
        }
    }

    @Test func ofManyTakingAFreeLeaseAtOnceExactlyOneHasIt() async throws {
        try await PostgresServer.with { server in
            let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
                for _ in 0..<5 { group.addTask { try await PostgresStore(url: server.url()) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let answers = try await withThrowingTaskGroup(of: LeaseAnswer.self) { group in
                for (index, store) in stores.enumerated() { group.addTask { try await store.acquireLease(holder: "m\(index)", for: .seconds(5)) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let held = answers.filter { if case .held = $0 { true } else { false } }
            #expect(held == [.held(epoch: 1)], "\(answers)")
            #expect(answers.count == 5)
        }
    }
}
