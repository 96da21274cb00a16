import Crypto
import Foundation
import OrchCore
import SwiftASN1
import X509

/// `ORCH1-<sha256 of the CA certificate, 64 hex digits>-<secret>`: what a worker needs to
/// join. The digest lets the worker check the manager's certificate before it sends
/// anything (Swarm's `SWMTKN-1-<digest>-<secret>` shape); the secret, which the manager
/// keeps only hashed, lets the manager check the worker before it issues it a certificate.
public struct JoinToken: Sendable, Hashable, CustomStringConvertible {
    public static let prefix = "ORCH1"

    /// Lowercase hex of SHA-256 over the CA certificate's DER.
    public var caFingerprint: String
    public var secret: String

    public init(caFingerprint: String, secret: String) {
        self.caFingerprint = caFingerprint
        self.secret = secret
    }

    /// A new token for the CA with `fingerprint`: 32 random bytes of secret, in hex.
    public static func make(caFingerprint: String) -> JoinToken {
        var generator = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        return JoinToken(caFingerprint: caFingerprint, secret: secret)
    }

    /// Reads a token as people paste it (white space around it is dropped).
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let parts = trimmed.split(separator: "-", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == Self.prefix else {
            throw SecurityError.invalidJoinToken("it must look like \(Self.prefix)-<64 hex digits>-<secret> (see join.token in the manager's data directory)")
        }
        let digest = parts[1].lowercased()
        guard digest.count == 64, digest.allSatisfy(\.isHexDigit) else {
            throw SecurityError.invalidJoinToken("its second part must be the CA's SHA-256, 64 hex digits")
        }
        guard !parts[2].isEmpty, parts[2].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
            throw SecurityError.invalidJoinToken("its secret (the third part) must be letters and digits")
        }
        caFingerprint = digest
        secret = String(parts[2])
    }

    public var description: String { "\(Self.prefix)-\(caFingerprint)-\(secret)" }

    /// What the manager keeps of the secret: lowercase hex of its SHA-256.
    public static func hash(secret: String) -> String { sha256Hex(Array(secret.utf8)) }

    /// Whether `secret` is the one whose hash is `stored`, in a time that does not depend on
    /// where they differ.
    public static func matches(secret: String, stored: String) -> Bool {
        LocalTokens.equalInConstantTime(hash(secret: secret), stored)
    }
}

/// A certificate chain as the manager presents it, checked by a worker against the CA its
/// join token pins: one certificate of the chain must be that CA (by the SHA-256 of its
/// DER), and the first (the manager's own) must be signed by it and valid now.
public enum PinnedCA {
    public static func verify(chain: [[UInt8]], fingerprint: String, now: Date = Date()) throws {
        guard let leafDER = chain.first else { throw SecurityError.untrustedPeer("the manager presented no certificate") }
        guard let caDER = chain.first(where: { ClusterCA.fingerprint(ofDER: $0) == fingerprint.lowercased() }) else {
            throw SecurityError.untrustedPeer("the manager's certificate is not from the CA the join token names (another cluster, or a stale token?)")
        }
        let leaf: Certificate, ca: Certificate
        do {
            leaf = try Certificate(derEncoded: leafDER)
            ca = try Certificate(derEncoded: caDER)
        } catch {
            throw SecurityError.untrustedPeer("the manager's certificate cannot be read: \(error)")
        }
        guard leaf.issuer == ca.subject, ca.publicKey.isValidSignature(leaf.signature, for: leaf) else {
            throw SecurityError.untrustedPeer("the manager's certificate is not signed by the pinned CA")
        }
        // The CA signs nodes' client certificates too: only a server certificate that is no
        // CA is the manager's (a joined node must not pose as the manager to others).
        let usage = (try? leaf.extensions.extendedKeyUsage) ?? nil
        let constraints = (try? leaf.extensions.basicConstraints) ?? nil
        guard usage?.contains(.serverAuth) == true, constraints == .notCertificateAuthority else {
            throw SecurityError.untrustedPeer("the certificate presented is not the manager's (not a server certificate)")
        }
        guard leaf.notValidBefore <= now, now <= leaf.notValidAfter else {
            throw SecurityError.untrustedPeer("the manager's certificate is not valid now (\(leaf.notValidBefore) to \(leaf.notValidAfter))")
        }
    }
}
