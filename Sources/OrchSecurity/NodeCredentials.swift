import Crypto
import Foundation
import OrchCore
import SwiftASN1
import X509

/// A worker's side of the cluster's PKI, kept in its state directory: its own P-256 key
/// (`node.key`, 0600, made once and never sent), the certificate the manager issued for it
/// (`node.crt`) and the CA's certificate (`ca.crt`) it trusts from then on.
public struct NodeCredentials: Sendable {
    public let key: Certificate.PrivateKey
    /// Nil until the worker has joined.
    public var certificate: Certificate?
    public var ca: Certificate?

    public static let keyFile = "node.key"
    public static let certificateFile = "node.crt"
    public static let caFile = "ca.crt"

    /// What `directory` holds; the key is made (0600) when there is none.
    public static func loadOrCreate(in directory: String) throws -> NodeCredentials {
        let keyPath = "\(directory)/\(keyFile)"
        let key: Certificate.PrivateKey
        if let text = try? String(contentsOfFile: keyPath, encoding: .utf8) {
            do {
                key = try Certificate.PrivateKey(pemEncoded: text)
            } catch {
                throw SecurityError.invalidFile(keyPath, "not a private key in PEM (\(error)); remove it and join again")
            }
        } else {
            key = Certificate.PrivateKey(P256.Signing.PrivateKey())
            try LocalTokens.writePrivately(try key.serializeAsPEM().pemString + "\n", to: keyPath)
        }
        func certificate(_ name: String) throws -> Certificate? {
            let path = "\(directory)/\(name)"
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
            do {
                return try Certificate(pemEncoded: text)
            } catch {
                throw SecurityError.invalidFile(path, "not a certificate in PEM (\(error)); remove it and join again")
            }
        }
        var credentials = NodeCredentials(key: key, certificate: try certificate(certificateFile), ca: try certificate(caFile))
        // A certificate for another key (the key was replaced) is no certificate of ours.
        if let issued = credentials.certificate, issued.publicKey != key.publicKey { credentials.certificate = nil }
        return credentials
    }

    /// A new key kept nowhere but in memory (simulated workers of tests and benchmarks).
    public static func ephemeral() -> NodeCredentials {
        NodeCredentials(key: Certificate.PrivateKey(P256.Signing.PrivateKey()), certificate: nil, ca: nil)
    }

    /// A certificate signing request for `node`, signed with the node's key (DER).
    public func signingRequest(for node: NodeID) throws -> [UInt8] {
        let csr = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName(node.rawValue) }, privateKey: key,
            attributes: CertificateSigningRequest.Attributes(), signatureAlgorithm: .ecdsaWithSHA256)
        return try derBytes(csr)
    }

    /// Keeps the certificate issued and the CA's (both DER) in `directory` (nil: in memory only).
    public mutating func store(certificate der: [UInt8], ca caDER: [UInt8], in directory: String?) throws {
        let issued = try Certificate(derEncoded: der)
        let authority = try Certificate(derEncoded: caDER)
        guard issued.publicKey == key.publicKey else {
            throw SecurityError.invalidRequest("the certificate issued is not for this node's key")
        }
        if let directory {
            try LocalTokens.writePrivately(try issued.serializeAsPEM().pemString + "\n", to: "\(directory)/\(Self.certificateFile)")
            try LocalTokens.writePrivately(try authority.serializeAsPEM().pemString + "\n", to: "\(directory)/\(Self.caFile)")
        }
        certificate = issued
        ca = authority
    }

    /// When the certificate is due for renewal: half its life after it was issued (its
    /// start is backdated by ``ClusterCA/backdating`` for clock skew, which does not count).
    public var renewalDate: Date? {
        guard let certificate else { return nil }
        let issued = min(certificate.notValidBefore.addingTimeInterval(ClusterCA.backdating), certificate.notValidAfter)
        return issued.addingTimeInterval(certificate.notValidAfter.timeIntervalSince(issued) / 2)
    }

    /// Whether the certificate is past half its life at `now` (or missing): time to renew.
    public func needsRenewal(now: Date = Date()) -> Bool {
        guard let due = renewalDate else { return true }
        return now >= due
    }
}
