import Crypto
import Foundation
import OrchCore
import SwiftASN1
import X509

/// The cluster's certificate authority: a P-256 key and a self-signed certificate the
/// manager makes at its first start and keeps in its data directory (`ca.key` 0600,
/// `ca.crt`). It issues each worker a short-lived client certificate for its node id (from
/// the worker's CSR, when its join secret is right) and the manager its server certificate.
/// A join token carries the SHA-256 of the CA certificate's DER, so that a worker can check
/// the manager before it sends anything.
public struct ClusterCA: Sendable {
    public let certificate: Certificate
    let key: Certificate.PrivateKey

    /// How long a node's certificate is valid unless asked otherwise; renewed at half of it.
    public static let defaultNodeLifetime: Duration = .seconds(30 * 24 * 3600)
    /// Certificates start this long before they are made: a node whose clock is a little
    /// behind the manager's accepts them at once.
    public static let backdating: TimeInterval = 10 * 60

    public static let keyFile = "ca.key"
    public static let certificateFile = "ca.crt"

    /// The CA kept in `directory`, made there (key 0600) when there is none.
    public static func loadOrCreate(in directory: String, now: Date = Date()) throws -> ClusterCA {
        let keyPath = "\(directory)/\(keyFile)", certificatePath = "\(directory)/\(certificateFile)"
        if FileManager.default.fileExists(atPath: keyPath) || FileManager.default.fileExists(atPath: certificatePath) {
            do {
                let key = try Certificate.PrivateKey(pemEncoded: String(contentsOfFile: keyPath, encoding: .utf8))
                let certificate = try Certificate(pemEncoded: String(contentsOfFile: certificatePath, encoding: .utf8))
                guard certificate.publicKey == key.publicKey else {
                    throw SecurityError.invalidFile(certificatePath, "it does not belong to \(keyPath)")
                }
                return ClusterCA(certificate: certificate, key: key)
            } catch let error as SecurityError {
                throw error
            } catch {
                throw SecurityError.invalidFile(directory, "its CA (\(keyFile), \(certificateFile)) cannot be read: \(error)")
            }
        }
        let ca = try create(now: now)
        try LocalTokens.writePrivately(try ca.key.serializeAsPEM().pemString + "\n", to: keyPath)
        try LocalTokens.writePrivately(try ca.certificate.serializeAsPEM().pemString + "\n", to: certificatePath)
        return ca
    }

    /// The key and the certificate as one PEM text (the key first), as several managers
    /// share the CA through their store.
    public var pemBundle: String {
        get throws { try key.serializeAsPEM().pemString + "\n" + certificate.serializeAsPEM().pemString + "\n" }
    }

    init(certificate: Certificate, key: Certificate.PrivateKey) {
        self.certificate = certificate
        self.key = key
    }

    /// The CA from ``pemBundle``'s text.
    public init(pemBundle text: String) throws {
        guard let split = text.range(of: "-----BEGIN CERTIFICATE-----") else {
            throw SecurityError.invalidFile("the store's CA", "no certificate in it")
        }
        do {
            key = try Certificate.PrivateKey(pemEncoded: String(text[..<split.lowerBound]))
            certificate = try Certificate(pemEncoded: String(text[split.lowerBound...]))
        } catch {
            throw SecurityError.invalidFile("the store's CA", "it cannot be read: \(error)")
        }
        guard certificate.publicKey == key.publicKey else { throw SecurityError.invalidFile("the store's CA", "its certificate does not belong to its key") }
    }

    /// A new CA, valid for 10 years.
    public static func create(now: Date = Date()) throws -> ClusterCA {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let name = try DistinguishedName {
            OrganizationName("orch")
            CommonName("orch cluster CA")
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-backdating), notValidAfter: now.addingTimeInterval(10 * 365 * 24 * 3600),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: key)
        return ClusterCA(certificate: certificate, key: key)
    }

    /// The CA certificate's DER.
    public var certificateDER: [UInt8] {
        get throws { try derBytes(certificate) }
    }

    /// Lowercase hex of SHA-256 over the CA certificate's DER: what a join token pins.
    public var fingerprint: String {
        get throws { Self.fingerprint(ofDER: try certificateDER) }
    }

    public static func fingerprint(ofDER der: [UInt8]) -> String { sha256Hex(der) }

    /// A client certificate for `node` from its CSR (DER). The CSR must be signed by the key
    /// it carries; the subject it asks for is ignored: the certificate names `node`, the
    /// identity the manager gives it, and nothing else.
    public func issueNodeCertificate(csr der: [UInt8], node: NodeID, lifetime: Duration = defaultNodeLifetime, now: Date = Date()) throws -> Certificate {
        let csr: CertificateSigningRequest
        do {
            csr = try CertificateSigningRequest(derEncoded: der)
        } catch {
            throw SecurityError.invalidRequest("the certificate request is not a DER PKCS#10 request: \(error)")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw SecurityError.invalidRequest("the certificate request is not signed by the key it carries")
        }
        let seconds = TimeInterval(lifetime.components.seconds)
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: csr.publicKey,
            notValidBefore: now.addingTimeInterval(-Self.backdating), notValidAfter: now.addingTimeInterval(seconds),
            issuer: certificate.subject, subject: try DistinguishedName {
                OrganizationName("orch")
                CommonName(node.rawValue)
            },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.clientAuth])
            },
            issuerPrivateKey: key)
    }

    /// The manager's own server certificate for the cluster port, naming `hosts` (IP
    /// addresses or DNS names) and its key.
    public func issueServerCertificate(hosts: [String], lifetime: Duration = defaultNodeLifetime, now: Date = Date()) throws -> (Certificate, Certificate.PrivateKey) {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let names: [GeneralName] = hosts.map { host in
            if let bytes = IPv4Address.bytes(of: host) { return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))) }
            return .dnsName(host)
        }
        let seconds = TimeInterval(lifetime.components.seconds)
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-Self.backdating), notValidAfter: now.addingTimeInterval(seconds),
            issuer: certificate.subject, subject: try DistinguishedName {
                OrganizationName("orch")
                CommonName("orch manager")
            },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: self.key)
        return (certificate, key)
    }
}

/// What a certificate says of the node it was issued to.
extension Certificate {
    /// The common name of its subject: a node certificate's node id.
    public var commonName: String? {
        for rdn in subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                return attribute.value.description
            }
        }
        return nil
    }
}

/// Lowercase hex of SHA-256 over `bytes`: how tokens, secrets and the CA are fingerprinted.
public func sha256Hex(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

public enum SecurityError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidFile(String, String)
    case invalidRequest(String)
    case invalidJoinToken(String)
    case untrustedPeer(String)

    public var description: String {
        switch self {
        case .invalidFile(let path, let why): "\(path): \(why)"
        case .invalidRequest(let why): why
        case .invalidJoinToken(let why): "the join token is not valid: \(why)"
        case .untrustedPeer(let why): why
        }
    }
}

/// DER bytes of a certificate, a request, any DER-serializable value.
public func derBytes(_ value: some DERSerializable) throws -> [UInt8] {
    var serializer = DER.Serializer()
    try serializer.serialize(value)
    return serializer.serializedBytes
}
