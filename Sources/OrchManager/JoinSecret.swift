import Foundation
import OrchCore
import OrchSecurity
import OrchStore
import Synchronization

/// The join token's secret, as the manager keeps it: only its SHA-256, in `join.sha256`
/// in the data directory; the whole token (`ORCH1-<CA digest>-<secret>`) in `join.token`
/// (0600) for whoever starts workers. Rotating makes a new secret: the old one joins no
/// one from then on, and nodes that joined keep their certificates.
///
/// Managers that share a PostgreSQL store share the token too: it is kept there (as the CA
/// is), and each manager writes it into its own data directory when it loads it.
final class JoinSecret: Sendable {
    private let directory: String
    private let fingerprint: String
    private let hash: Mutex<String>
    private let shared: PostgresStore?

    static let tokenFile = "join.token"
    static let hashFile = "join.sha256"
    /// The name of the token in the shared store's secrets.
    static let sharedName = "join-token"

    /// The secret kept in `directory`, made (with its token file) when there is none.
    init(in directory: String, ca: ClusterCA) throws {
        self.directory = directory
        fingerprint = try ca.fingerprint
        shared = nil
        let hashPath = "\(directory)/\(Self.hashFile)"
        if let stored = try? String(contentsOfFile: hashPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
           stored.count == 64 {
            hash = Mutex(stored)
        } else {
            hash = Mutex("")
            try write(JoinToken.make(caFingerprint: fingerprint))
        }
    }

    /// The secret the managers on `store` share, made there when there is none.
    init(in directory: String, ca: ClusterCA, sharedIn store: PostgresStore) async throws {
        self.directory = directory
        fingerprint = try ca.fingerprint
        shared = store
        hash = Mutex("")
        try await reload()
    }

    /// Reads the shared token again (another manager may have rotated it) and writes it
    /// into the data directory. Nothing to do for a token kept only in the data directory.
    func reload() async throws {
        guard let shared else { return }
        let fingerprint = fingerprint
        let bytes = try await shared.secret(Self.sharedName) { Array(JoinToken.make(caFingerprint: fingerprint).description.utf8) }
        try write(try JoinToken(parsing: String(decoding: bytes, as: UTF8.self)))
    }

    /// Whether `secret` is the current one.
    func matches(_ secret: String) -> Bool {
        JoinToken.matches(secret: secret, stored: hash.withLock { $0 })
    }

    /// A new secret: stored (in the shared store, then the token 0600 and the hash) before
    /// it is in force; returns the token.
    @discardableResult
    func rotate() async throws -> JoinToken {
        let token = JoinToken.make(caFingerprint: fingerprint)
        if let shared { try await shared.setSecret(Self.sharedName, to: Array(token.description.utf8)) }
        try write(token)
        return token
    }

    /// Writes `token`'s two files and puts it in force. Two at once are one after the
    /// other (the two files always agree).
    private func write(_ token: JoinToken) throws {
        let digest = JoinToken.hash(secret: token.secret)
        try hash.withLock { current in
            try LocalTokens.writePrivately(token.description + "\n", to: "\(directory)/\(Self.tokenFile)")
            try LocalTokens.writePrivately(digest + "\n", to: "\(directory)/\(Self.hashFile)")
            current = digest
        }
    }
}
