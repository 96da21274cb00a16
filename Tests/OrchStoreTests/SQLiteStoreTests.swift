import Foundation
import OrchCore
@testable import OrchStore
import Testing

@Suite("SQLite store (real files)", .timeLimit(.minutes(2)))
struct SQLiteStoreTests {
    @Test func anEmptyFileIsMigratedToTheCurrentSchema() async throws {
        let path = temporaryDatabase()
        #expect(!FileManager.default.fileExists(atPath: path))
        let store = try SQLiteStore(path: path)
        #expect(try await store.appliedMigrations() == [
            "v1: tasks, task history, nodes", "v2: a task's spec apart from its state", "v3: the state's revision",
            "v4: REST API tokens, hashed", "v5: nodes removed from the cluster", "v6: services",
        ])
        #expect(try await store.load() == StoreSnapshot(tasks: [], nodes: []))
        // Opening it again migrates nothing twice.
        let again = try SQLiteStore(path: path)
        #expect(try await again.appliedMigrations().count == 6)
    }

    @Test func compactingKeepsTheLastVersionOfEachTaskAndNodeAndEveryHistoryLine() throws {
        var first = record("c1")
        let other = record("c2")
        let history = TaskHistoryEntry(task: first.id, at: first.createdAt, state: .pending, message: "accepted")
        var placed = first
        try placed.apply(.placed(on: NodeID(rawValue: "n")), at: first.createdAt)
        let node = NodeRecord(id: NodeID(rawValue: "n"), name: "n", addresses: [], capacity: NodeCapacity(millicores: 1, memoryBytes: 1, diskBytes: 1),
                              labels: [:], joinedAt: first.createdAt, lastSeenAt: first.createdAt)
        let changes: [StoreChange] = [.saveTask(first), .appendHistory(history), .saveNode(node), .saveTask(other), .saveTask(placed), .deleteNode(node.id)]
        #expect(changes.compacted() == [.appendHistory(history), .saveTask(other), .saveTask(placed), .deleteNode(node.id)])
        first = placed
        #expect([StoreChange]().compacted().isEmpty)
    }

    @Test func aFileThatIsNotADatabaseIsAClearError() async throws {
        let path = temporaryDatabase()
        try Data("this is not sqlite, just text that is long enough to be a header".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: (any Error).self) { try SQLiteStore(path: path) }
    }
}
