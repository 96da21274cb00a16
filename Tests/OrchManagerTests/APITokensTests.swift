import Foundation
import OrchCore
@testable import OrchManager
import OrchSecurity
import OrchStore
import Synchronization
import Testing

/// A store around an in-memory SQLite store whose token writes can be held (to let
/// another request in between) or made to fail.
final class GatedTokenStore: ManagerStore, Sendable {
    let inner: SQLiteStore
    /// Held token writes wait until `release()`; `failing` makes them throw.
    let holding = Mutex(false)
    let failing = Mutex(false)
    private let waiting = Mutex<[CheckedContinuation<Void, Never>]>([])
    let held = Mutex(0)

    init() throws { inner = try SQLiteStore() }

    func load() async throws -> StoreSnapshot { try await inner.load() }
    func apply(_ batches: [StoreBatch]) async throws { try await inner.apply(batches) }
    func history(of task: TaskID) async throws -> [TaskHistoryEntry] { try await inner.history(of: task) }
    func loadTokens() async throws -> [APITokenRecord] { try await inner.loadTokens() }
    func recordTokenUse(name: String, hash: String, at: Date) async throws { try await inner.recordTokenUse(name: name, hash: hash, at: at) }

    func saveToken(_ token: APITokenRecord) async throws {
        if failing.withLock({ $0 }) { throw CocoaError(.fileWriteOutOfSpace) }
        if holding.withLock({ $0 }) {
            await withCheckedContinuation { continuation in
                waiting.withLock { $0.append(continuation) }
                held.withLock { $0 += 1 }
            }
        }
        try await inner.saveToken(token)
    }

    func release() {
        holding.withLock { $0 = false }
        for continuation in waiting.withLock({ list in defer { list = [] }; return list }) { continuation.resume() }
    }
}

/// The REST tokens' bookkeeping against a store that is slow or failing at the worst moment.
@Suite struct APITokensTests {
    @Test func aTokenRevokedWhileItIsBeingStoredStaysRevoked() async throws {
        let store = try GatedTokenStore()
        let tokens = try await APITokens(store: store)
        _ = try await tokens.create(name: "admin", role: .admin)
        store.holding.withLock { $0 = true }
        let creating = Task { try await tokens.create(name: "ci", role: .operator) }
        let deadline = ContinuousClock.now + .seconds(5)
        while store.held.withLock({ $0 }) == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try #require(store.held.withLock { $0 } == 1, "the creation is held in the store")
        // The revocation comes while the creation is being written.
        store.holding.withLock { $0 = false }
        try await tokens.revoke("ci")
        store.release()
        let created = try await creating.value
        #expect(tokens.authenticate(created.token) == nil, "revoked before it was in force: it never is")
        #expect(!tokens.list().contains { $0.name == "ci" })
        #expect(try await store.loadTokens().first { $0.name == "ci" }?.revokedAt != nil)
    }

    @Test func aStoreThatFailsLeavesNoTokenInForceAndTheLastAdminStays() async throws {
        let store = try GatedTokenStore()
        let tokens = try await APITokens(store: store)
        let admin = try await tokens.create(name: "admin", role: .admin)
        store.failing.withLock { $0 = true }
        await #expect(throws: (any Error).self) { try await tokens.create(name: "ci", role: .operator) }
        #expect(!tokens.list().contains { $0.name == "ci" }, "a token not stored is not listed")
        store.failing.withLock { $0 = false }
        // The name is free again, and the last admin token is not revoked.
        let ci = try await tokens.create(name: "ci", role: .operator)
        #expect(tokens.authenticate(ci.token)?.role == .operator)
        await #expect(throws: (any Error).self) { try await tokens.revoke("admin") }
        #expect(tokens.authenticate(admin.token)?.name == "admin")
        _ = try await tokens.create(name: "second", role: .admin)
        try await tokens.revoke("admin")
        #expect(tokens.authenticate(admin.token) == nil)
    }

    @Test func concurrentJoinRotationsLeaveTheTokenAndItsHashAgreeing() async throws {
        let data = temporaryDataDirectory()
        let ca = try ClusterCA.loadOrCreate(in: data)
        let secret = try JoinSecret(in: data, ca: ca)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<16 { group.addTask { _ = try? await secret.rotate() } }
        }
        let token = try JoinToken(parsing: try String(contentsOfFile: data + "/join.token", encoding: .utf8))
        let stored = try String(contentsOfFile: data + "/join.sha256", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(stored == JoinToken.hash(secret: token.secret), "the two files agree")
        #expect(secret.matches(token.secret), "the token on disk is the one in force")
        #expect(!secret.matches(token.secret + "0"))
        #expect(try JoinSecret(in: data, ca: ca).matches(token.secret), "kept across a restart")
    }
}
