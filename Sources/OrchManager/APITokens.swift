import Foundation
import OrchCore
import OrchHTTP
import OrchSecurity
import OrchStore
import Synchronization

/// The REST API's tokens: created, looked up on every request, revoked. Only each token's
/// SHA-256 is kept (in memory and in the store); a token is shown once, when created.
///
/// Looking a token up costs one hash and one dictionary read under a lock: no store read,
/// no actor hop. When each token was last used is kept in memory and written to the store
/// by ``flushLastUse()`` (the manager calls it every few seconds), not on every request.
final class APITokens: Sendable {
    private struct State {
        var byHash: [String: APITokenRecord] = [:]
        var byName: [String: APITokenRecord] = [:]
        /// Names whose `lastUsedAt` changed since the last flush.
        var used: Set<String> = []
    }

    private let store: any ManagerStore
    private let state = Mutex(State())

    init(store: any ManagerStore) async throws {
        self.store = store
        try await reload()
    }

    /// Reads the tokens from the store again: another manager sharing it may have made or
    /// revoked some. Uses noted since the last flush are kept.
    func reload() async throws {
        let records = try await store.loadTokens()
        state.withLock { state in
            var byName: [String: APITokenRecord] = [:], byHash: [String: APITokenRecord] = [:]
            for var record in records {
                if let known = state.byName[record.name], known.hash == record.hash, let used = known.lastUsedAt,
                   record.lastUsedAt.map({ $0 < used }) ?? true {
                    record.lastUsedAt = used
                }
                byName[record.name] = record
                if record.revokedAt == nil { byHash[record.hash] = record }
            }
            state.byName = byName
            state.byHash = byHash
        }
    }

    /// Whether any token was ever made (a first start makes the admin's).
    var isEmpty: Bool { state.withLock { $0.byName.isEmpty } }

    /// The token's record when it is valid (known, not revoked); notes its use.
    func authenticate(_ token: String) -> APITokenRecord? {
        let hash = Self.hash(token)
        let now = Date()
        return state.withLock { state in
            guard var record = state.byHash[hash] else { return nil }
            // A second's precision is plenty for "last used", and keeps the writes few.
            if record.lastUsedAt.map({ now.timeIntervalSince($0) >= 1 }) ?? true {
                record.lastUsedAt = now
                state.byHash[hash] = record
                state.byName[record.name] = record
                state.used.insert(record.name)
            }
            return record
        }
    }

    /// Makes a token named `name` with `role` (`token` when given, a new one otherwise);
    /// throws a 409 when a token of that name is live.
    func create(name: String, role: APIRole, token given: String? = nil) async throws -> CreatedAPITokenDTO {
        guard Self.isValidName(name) else {
            throw APIError(.badRequest, code: "invalid_token_name",
                           message: "a token's name is 1 to 64 letters, digits, '.', '_' or '-', not \"\(name)\"")
        }
        let token = given ?? LocalTokens.newToken()
        let record = APITokenRecord(name: name, role: role, hash: Self.hash(token), createdAt: Date())
        let taken = state.withLock { state in
            if let existing = state.byName[name], existing.revokedAt == nil { return true }
            // Reserved at once, so that two creations of one name cannot both succeed.
            state.byName[name] = record
            return false
        }
        if taken {
            throw APIError(.conflict, code: "token_exists", message: "a token named \(name) exists; revoke it first or choose another name")
        }
        do {
            try await store.saveToken(record)
        } catch {
            // Only our reservation is taken back (a revocation meanwhile replaced it).
            state.withLock { if $0.byName[name]?.hash == record.hash { $0.byName[name] = nil } }
            throw APIError(.serviceUnavailable, code: "store_unavailable", message: "the token could not be stored: \(error)")
        }
        // In force only if nobody revoked it while it was being stored; if somebody did, the
        // revocation is written again (this write may have landed after it).
        let revokedMeanwhile = state.withLock { state -> APITokenRecord? in
            guard let current = state.byName[name], current.hash == record.hash else { return nil }
            if current.revokedAt != nil { return current }
            state.byHash[record.hash] = record
            return nil
        }
        if let revokedMeanwhile { try? await store.saveToken(revokedMeanwhile) }
        return CreatedAPITokenDTO(name: name, role: role, token: token, createdAt: record.createdAt)
    }

    /// Revokes the live token named `name`: refused from now on. The last admin token is
    /// not revoked (nobody could make tokens again).
    func revoke(_ name: String) async throws {
        let outcome = state.withLock { state -> Result<APITokenRecord, APIError> in
            guard var record = state.byName[name], record.revokedAt == nil else {
                return .failure(APIError(.notFound, code: "token_not_found", message: "no token named \(name)"))
            }
            if record.role == .admin, !state.byName.values.contains(where: { $0.name != name && $0.role == .admin && $0.revokedAt == nil }) {
                return .failure(APIError(.conflict, code: "last_admin", message: "\(name) is the last admin token; make another admin token first"))
            }
            record.revokedAt = Date()
            state.byHash[record.hash] = nil
            state.byName[name] = record
            return .success(record)
        }
        let record = try outcome.get()
        do {
            try await store.saveToken(record)
        } catch {
            throw APIError(.serviceUnavailable, code: "store_unavailable", message: "the revocation could not be stored (the token is refused until the manager restarts): \(error)")
        }
    }

    /// The live tokens, oldest first.
    func list() -> [APITokenDTO] {
        state.withLock { state in
            state.byName.values.filter { $0.revokedAt == nil }.sorted { ($0.createdAt, $0.name) < ($1.createdAt, $1.name) }
                .map { APITokenDTO(name: $0.name, role: $0.role, createdAt: $0.createdAt, lastUsedAt: $0.lastUsedAt) }
        }
    }

    /// Writes the last uses noted since the previous flush: only the time, and only for a
    /// token still live with the same hash (a revocation written meanwhile is never undone).
    func flushLastUse() async {
        let changed = state.withLock { state -> [APITokenRecord] in
            defer { state.used = [] }
            return state.used.compactMap { state.byName[$0] }
        }
        for record in changed {
            guard let used = record.lastUsedAt else { continue }
            try? await store.recordTokenUse(name: record.name, hash: record.hash, at: used)
        }
    }

    // MARK: - Tokens

    static func hash(_ token: String) -> String { sha256Hex(Array(token.utf8)) }

    static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.count) && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }
}
