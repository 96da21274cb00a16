import Foundation
import OrchCore
@testable import OrchStore
import OrchTestSupport
import Testing

func temporaryDatabase() -> String {
    let directory = NSTemporaryDirectory() + "orch-store-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    return directory + "/manager.sqlite"
}

func record(_ id: String, at seconds: Double = 0) -> TaskRecord {
    TaskRecord(
        id: TaskID(rawValue: id),
        spec: TaskSpec(
            name: "web", image: "orch-busybox:latest", command: ["httpd", "-f"], environment: ["A": "1"],
            ports: [PortSpec(containerPort: 8080, hostPort: 18080)], resources: Resources(millicores: 250, memoryBytes: 64 << 20),
            restartPolicy: RestartPolicy(mode: .onFailure, maxRestarts: 3),
            healthCheck: HealthCheck(path: "/health", port: 8080)),
        now: Date(timeIntervalSince1970: 1_700_000_000 + seconds))
}


/// The two stores: a SQLite file, or a database on a PostgreSQL server of the test's own.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// A store under test: `open()` opens it, again and again, on the same state.
struct OpenedStore {
    let open: () async throws -> any ManagerStore
}

/// Runs `body` with a new, empty store of `kind`.
func withStore(_ kind: StoreKind, _ body: (OpenedStore) async throws -> Void) async throws {
    switch kind {
    case .sqlite:
        let path = temporaryDatabase()
        try await body(OpenedStore { try SQLiteStore(path: path, durability: .powerLoss) })
    case .postgres:
        try await PostgresServer.with { server in
            try await body(OpenedStore { try await PostgresStore(url: server.url()) })
        }
    }
}

/// The store's suite, against SQLite and PostgreSQL alike: what the manager keeps comes
/// back field for field from a store opened again, in one order, and what it forgets goes.
@Suite("The store, SQLite and PostgreSQL (real files, real servers)", .serialized, .timeLimit(.minutes(3)))
struct StoreSuiteTests {
    @Test(arguments: StoreKind.allCases) func tokensAreKeptHashedAndARevocationSurvivesAReopen(kind: StoreKind) async throws {
        try await withStore(kind) { opened in
            let store = try await opened.open()
            let made = Date(timeIntervalSince1970: 1_800_000_000)
            let admin = APITokenRecord(name: "admin", role: .admin, hash: String(repeating: "a", count: 64), createdAt: made)
            var ci = APITokenRecord(name: "ci", role: .operator, hash: String(repeating: "b", count: 64), createdAt: made.addingTimeInterval(1))
            try await store.saveToken(admin)
            try await store.saveToken(ci)
            ci.revokedAt = made.addingTimeInterval(60)
            ci.lastUsedAt = made.addingTimeInterval(30)
            try await store.saveToken(ci)
            let reopened = try await opened.open()
            #expect(try await reopened.loadTokens() == [admin, ci])
            // A last use noted before the revocation and written after it changes nothing of it.
            try await reopened.recordTokenUse(name: "ci", hash: ci.hash, at: made.addingTimeInterval(90))
            try await reopened.recordTokenUse(name: "admin", hash: String(repeating: "c", count: 64), at: made.addingTimeInterval(90))
            #expect(try await reopened.loadTokens() == [admin, ci], "neither a revoked token nor another hash is touched")
            try await reopened.recordTokenUse(name: "admin", hash: admin.hash, at: made.addingTimeInterval(90))
            #expect(try await reopened.loadTokens().first?.lastUsedAt == made.addingTimeInterval(90))
            // Two tokens of one hash cannot both be kept (a hash names one token).
            await #expect(throws: (any Error).self) {
                try await reopened.saveToken(APITokenRecord(name: "copy", role: .viewer, hash: admin.hash, createdAt: made))
            }
        }
    }

    @Test(arguments: StoreKind.allCases) func tasksHistoryAndNodesSurviveAReopen(kind: StoreKind) async throws {
        try await withStore(kind) { opened in
            var task = record("t1")
            let node = NodeRecord(
                id: NodeID(rawValue: "n1"), name: "w1", addresses: ["127.0.0.1:5557"],
                capacity: NodeCapacity(millicores: 2000, memoryBytes: 1 << 30, diskBytes: 10 << 30), labels: ["zone": "a"],
                joinedAt: Date(timeIntervalSince1970: 1_700_000_000), lastSeenAt: Date(timeIntervalSince1970: 1_700_000_010))
            do {
                let store = try await opened.open()
                try await store.apply([.insertTask(task), .saveNode(node),
                                       .appendHistory(TaskHistoryEntry(task: task.id, at: task.createdAt, state: .pending, message: "accepted"))], revision: 1)
                try task.apply(.placed(on: node.id), at: task.createdAt.addingTimeInterval(1))
                // Where `logs --previous` reads, and where an id given again began its attempts.
                task.lastEnded = TaskRecord.EndedAttempt(node: node.id, attempt: 3)
                task.attemptBase = 2
                try await store.apply([.saveTask(task),
                                       .appendHistory(TaskHistoryEntry(task: task.id, at: task.updatedAt, state: .scheduled, message: "placed on n1"))], revision: 2)
            }
            let reopened = try await opened.open()
            let snapshot = try await reopened.load()
            #expect(snapshot.tasks == [task], "the record comes back field for field, spec included")
            #expect(snapshot.nodes == [node])
            #expect(try await reopened.history(of: task.id).map(\.message) == ["accepted", "placed on n1"])
            #expect(snapshot.revision == 2, "the revision of the last batch is kept")
            #expect(snapshot.removedNodes.isEmpty)
            try await reopened.apply([.deleteNode(node.id)], revision: 3)
            #expect(try await reopened.load().nodes.isEmpty)
            #expect(try await reopened.load().revision == 3)
            // A removed node stays removed, across a reopen: its certificate is refused for good.
            #expect(try await opened.open().load().removedNodes == [node.id])
        }
    }

    @Test(arguments: StoreKind.allCases) func aServiceItsDeployAndItsReplicasSurviveAReopenAndAreForgottenTogether(kind: StoreKind) async throws {
        try await withStore(kind) { opened in
            let now = Date(timeIntervalSince1970: 1_700_000_000)
            var service = ServiceRecord(
                ServiceSpec(name: "web", replicas: 2, task: record("x").spec, update: UpdatePolicy(parallelism: 2, order: .stopFirst, minHealthyTime: .milliseconds(1500))),
                now: now)
            service.latestVersion = 2
            service.templates[2] = TaskSpec(image: "orch-busybox:latest", command: ["httpd", "v2"])
            var deploy = DeployRecord(from: 1, to: 2, state: .running, startedAt: now)
            deploy.events.append(ServiceEvent(at: now, message: "deploy of version 2 (from 1) started"))
            service.deploy = deploy
            service.revision = 1
            var replica = record("r1")
            replica.replica = ServiceSlot(service: "web", version: 2, slot: 1)
            try replica.apply(.placed(on: NodeID(rawValue: "n1")), at: now)
            try replica.apply(.started(container: ContainerID(rawValue: "c1"), hostPorts: []), at: now.addingTimeInterval(1))
            try replica.apply(.healthChanged(.healthy), at: now.addingTimeInterval(2))
            do {
                let store = try await opened.open()
                try await store.apply([.saveService(service), .insertTask(replica), .saveTask(replica),
                                       .appendHistory(TaskHistoryEntry(task: replica.id, at: now, state: .pending, message: "accepted"))], revision: 1)
            }
            let reopened = try await opened.open()
            let snapshot = try await reopened.load()
            #expect(snapshot.services == [service], "the service comes back with its templates, policy and deploy")
            #expect(snapshot.tasks == [replica], "the replica keeps its slot and since when it is healthy")
            #expect(snapshot.tasks.first?.healthyAt == now.addingTimeInterval(2))
            try await reopened.apply([.deleteTask(replica.id), .deleteService("web")], revision: 2)
            let after = try await opened.open().load()
            #expect(after.services.isEmpty && after.tasks.isEmpty)
            #expect(try await reopened.history(of: replica.id).isEmpty, "a forgotten task's history goes with it")
        }
    }

    @Test(arguments: StoreKind.allCases) func concurrentWritersAreAllCommitted(kind: StoreKind) async throws {
        try await withStore(kind) { opened in
            let store = try await opened.open()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<8 {
                    group.addTask {
                        for index in 0..<50 {
                            let task = record("w\(writer)-\(index)", at: Double(index))
                            try await store.apply([.insertTask(task),
                                                   .appendHistory(TaskHistoryEntry(task: task.id, at: task.createdAt, state: .pending, message: "accepted"))], revision: UInt64(writer * 100 + index + 1))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let reopened = try await opened.open()
            let tasks = try await reopened.load().tasks
            #expect(tasks.count == 400)
            #expect(Set(tasks.map(\.id.rawValue)).count == 400)
            #expect(try await reopened.history(of: TaskID(rawValue: "w7-49")).count == 1)
        }
    }
}
