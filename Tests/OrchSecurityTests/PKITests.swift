import Foundation
import OrchCore
import OrchSecurity
import SwiftASN1
import Testing
import X509

/// The cluster's certificate authority, join tokens and a worker's credentials, on real
/// files in a temporary directory: nothing here talks to a network.
@Suite struct PKITests {
    func directory(_ name: String) -> String {
        let path = NSTemporaryDirectory() + "orch-pki-\(name)-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func mode(_ path: String) throws -> Int {
        try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? 0
    }

    @Test func theCAIsMadeOnceKeptWithItsKeyPrivateAndLoadedAgain() throws {
        let data = directory("ca")
        let made = try ClusterCA.loadOrCreate(in: data)
        #expect(try mode(data + "/ca.key") == 0o600)
        let again = try ClusterCA.loadOrCreate(in: data)
        #expect(try again.fingerprint == made.fingerprint, "the same CA after a restart")
        #expect(try made.fingerprint.count == 64)
        #expect(try made.certificate.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))

        // A CA certificate that is not its key's is refused, not used.
        let other = try ClusterCA.create()
        try other.certificate.serializeAsPEM().pemString.write(toFile: data + "/ca.crt", atomically: true, encoding: .utf8)
        #expect(throws: SecurityError.self) { try ClusterCA.loadOrCreate(in: data) }
    }

    @Test func aNodeCertificateNamesTheNodeTheManagerSaysAndIsBackdatedAndShortLived() throws {
        let ca = try ClusterCA.create()
        let state = directory("node")
        var credentials = try NodeCredentials.loadOrCreate(in: state)
        #expect(try mode(state + "/node.key") == 0o600)
        #expect(credentials.certificate == nil && credentials.needsRenewal())

        let now = Date()
        // The CSR asks for one name; the certificate names the node the manager gives it.
        let csr = try credentials.signingRequest(for: NodeID(rawValue: "asked-for"))
        let issued = try ca.issueNodeCertificate(csr: csr, node: NodeID(rawValue: "node-7"), now: now)
        #expect(issued.commonName == "node-7")
        #expect(ca.certificate.publicKey.isValidSignature(issued.signature, for: issued))
        #expect(issued.notValidBefore <= now.addingTimeInterval(-ClusterCA.backdating + 1))
        #expect(abs(issued.notValidAfter.timeIntervalSince(now) - 30 * 24 * 3600) < 2, "30 days by default")
        #expect(try issued.extensions.basicConstraints == .notCertificateAuthority)

        try credentials.store(certificate: try derBytes(issued), ca: try ca.certificateDER, in: state)
        let reloaded = try NodeCredentials.loadOrCreate(in: state)
        #expect(reloaded.certificate == issued && reloaded.ca == ca.certificate, "kept across a restart")
        #expect(!reloaded.needsRenewal(now: now))
        // Half of the 30 days it was issued for, the 10 minutes of backdating not counted.
        #expect(!reloaded.needsRenewal(now: now.addingTimeInterval(15 * 24 * 3600 - 60)))
        #expect(reloaded.needsRenewal(now: now.addingTimeInterval(15 * 24 * 3600 + 60)), "renewed at half its life")
    }

    @Test func aRequestNotSignedByItsKeyIsRefused() throws {
        let ca = try ClusterCA.create()
        let credentials = try NodeCredentials.loadOrCreate(in: directory("forged"))
        var csr = try credentials.signingRequest(for: NodeID(rawValue: "n1"))
        csr[csr.count - 3] ^= 0xFF   // inside the signature
        #expect(throws: SecurityError.self) { try ca.issueNodeCertificate(csr: csr, node: NodeID(rawValue: "n1")) }
        #expect(throws: SecurityError.self) { try ca.issueNodeCertificate(csr: [0x30, 0x03, 0x02, 0x01, 0x00], node: NodeID(rawValue: "n1")) }
    }

    @Test func aCertificateForAnotherKeyIsNotStored() throws {
        let ca = try ClusterCA.create()
        let state = directory("mismatch")
        var mine = try NodeCredentials.loadOrCreate(in: state)
        let theirs = try NodeCredentials.loadOrCreate(in: directory("theirs"))
        let issued = try ca.issueNodeCertificate(csr: try theirs.signingRequest(for: NodeID(rawValue: "n")), node: NodeID(rawValue: "n"))
        #expect(throws: SecurityError.self) {
            try mine.store(certificate: try derBytes(issued), ca: try ca.certificateDER, in: state)
        }
        #expect(!FileManager.default.fileExists(atPath: state + "/node.crt"))
    }

    @Test func joinTokensRoundTripAndMalformedOnesSayWhy() throws {
        let token = JoinToken.make(caFingerprint: String(repeating: "ab", count: 32))
        #expect(token.description.hasPrefix("ORCH1-" + String(repeating: "ab", count: 32) + "-"))
        #expect(try JoinToken(parsing: "  \(token)\n") == token)
        #expect(JoinToken.matches(secret: token.secret, stored: JoinToken.hash(secret: token.secret)))
        #expect(!JoinToken.matches(secret: token.secret + "0", stored: JoinToken.hash(secret: token.secret)))
        for bad in ["", "SWMTKN-1-abc-def", "ORCH1-abc-def", "ORCH1-\(String(repeating: "z", count: 64))-s", "ORCH1-\(String(repeating: "a", count: 64))-", "ORCH1-\(String(repeating: "a", count: 64))-se cret"] {
            #expect(throws: SecurityError.self, "\(bad)") { try JoinToken(parsing: bad) }
        }
    }

    @Test func theManagersChainIsTrustedOnlyFromThePinnedCA() throws {
        let ca = try ClusterCA.create()
        let (server, _) = try ca.issueServerCertificate(hosts: ["127.0.0.1", "localhost"])
        let chain = [try derBytes(server), try ca.certificateDER]
        try PinnedCA.verify(chain: chain, fingerprint: try ca.fingerprint)

        // Another CA's certificate, even with the pinned CA appended, is refused.
        let other = try ClusterCA.create()
        let (impostor, _) = try other.issueServerCertificate(hosts: ["127.0.0.1"])
        #expect(throws: SecurityError.self) { try PinnedCA.verify(chain: [try derBytes(impostor), try ca.certificateDER], fingerprint: try ca.fingerprint) }
        #expect(throws: SecurityError.self) { try PinnedCA.verify(chain: chain, fingerprint: try other.fingerprint) }
        #expect(throws: SecurityError.self) { try PinnedCA.verify(chain: [], fingerprint: try ca.fingerprint) }

        // A node's client certificate from the same CA cannot pose as the manager.
        let node = try NodeCredentials.loadOrCreate(in: directory("poser"))
        let client = try ca.issueNodeCertificate(csr: try node.signingRequest(for: NodeID(rawValue: "n")), node: NodeID(rawValue: "n"))
        #expect(throws: SecurityError.self) { try PinnedCA.verify(chain: [try derBytes(client), try ca.certificateDER], fingerprint: try ca.fingerprint) }
        // Nor the CA itself as the leaf.
        #expect(throws: SecurityError.self) { try PinnedCA.verify(chain: [try ca.certificateDER], fingerprint: try ca.fingerprint) }
        #expect(throws: SecurityError.self) {
            try PinnedCA.verify(chain: chain, fingerprint: try ca.fingerprint, now: Date().addingTimeInterval(60 * 24 * 3600))
        }
    }
}
