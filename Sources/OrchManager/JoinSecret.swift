import Foundation
import OrchCore
import OrchSecurity
import Synchronization

/// The join token's secret, as the manager keeps it: only its SHA-256, in `join.sha256`
/// in the data directory; the whole token (`ORCH1-<CA digest>-<secret>`) in `join.token`
/// (0600) for whoever starts workers. Rotating makes a new secret: the old one joins no
/// one from then on, and nodes that joined keep their certificates.
final class JoinSecret: Sendable {
    private let directory: String
    private let fingerprint: String
    private let hash: Mutex<String>

    static let tokenFile = "join.token"
    static let hashFile = "join.sha256"

    /// The secret kept in `directory`, made (with its token file) when there is none.
    init(in directory: String, ca: ClusterCA) throws {
        self.directory = directory
        fingerprint = try ca.fingerprint
        let hashPath = "\(directory)/\(Self.hashFile)"
        if let stored = try? String(contentsOfFile: hashPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
           stored.count == 64 {
            hash = Mutex(stored)
        } else {
            hash = Mutex("")
            _ = try rotate()
        }
    }

    /// Whether `secret` is the current one.
    func matches(_ secret: String) -> Bool {
        JoinToken.matches(secret: secret, stored: hash.withLock { $0 })
    }

    /// A new secret: written (token 0600, hash) before it is in force; returns the token.
    /// Two rotations at once are one after the other (the two files always agree).
    @discardableResult
    func rotate() throws -> JoinToken {
        let token = JoinToken.make(caFingerprint: fingerprint)
        let digest = JoinToken.hash(secret: token.secret)
        try hash.withLock { current in
            try LocalTokens.writePrivately(token.description + "\n", to: "\(directory)/\(Self.tokenFile)")
            try LocalTokens.writePrivately(digest + "\n", to: "\(directory)/\(Self.hashFile)")
            current = digest
        }
        return token
    }
}
