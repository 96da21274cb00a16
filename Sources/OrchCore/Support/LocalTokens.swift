import Foundation

/// The tokens a manager or worker leaves for the user who started it, so that `orchctl` on
/// that host needs no `--token`: `~/.orch/tokens/HOST:PORT` (0600, in a 0700 folder) holds
/// the token of the API listening on HOST:PORT. A manager writes its admin token there, a
/// worker the token of its own API. An API bound to a wildcard address (`0.0.0.0`) is
/// written for `127.0.0.1` and `localhost` too.
public enum LocalTokens {
    public static var directory: String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return "\(home)/.orch/tokens"
    }

    public static func path(host: String, port: Int) -> String { "\(directory)/\(host):\(port)" }

    /// The token left for the API at `host:port`, if any.
    public static func read(host: String, port: Int) -> String? {
        guard let text = try? String(contentsOfFile: path(host: host, port: port), encoding: .utf8) else { return nil }
        let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return token.isEmpty ? nil : token
    }

    /// Leaves `token` for the API listening on `host:port`.
    public static func write(_ token: String, host: String, port: Int) throws {
        try leave(token + "\n", host: host, port: port, suffix: "")
    }

    /// Where the certificate of the CA that an API on `host:port` serves TLS from is left
    /// (`HOST:PORT.ca.crt`), for orchctl to trust.
    public static func caPath(host: String, port: Int) -> String { path(host: host, port: port) + ".ca.crt" }

    /// Leaves the CA certificate (PEM) of the API listening on `host:port` over TLS.
    public static func writeCA(_ pem: String, host: String, port: Int) throws {
        try leave(pem, host: host, port: port, suffix: ".ca.crt")
    }

    private static func leave(_ text: String, host: String, port: Int, suffix: String) throws {
        let hosts = ["0.0.0.0", "::", ""].contains(host) ? [host, "127.0.0.1", "localhost"] : [host]
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for name in hosts where !name.isEmpty {
            try writePrivately(text, to: path(host: name, port: port) + suffix)
        }
    }

    /// A new token: `orch_` and 43 characters, 32 random bytes in base64url without padding.
    public static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let text = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return "orch_" + text
    }

    /// The token kept in `path`, made (and written 0600) when the file does not exist yet.
    public static func loadOrCreate(at path: String) throws -> String {
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if !token.isEmpty { return token }
        }
        let token = newToken()
        try writePrivately(token + "\n", to: path)
        return token
    }

    /// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
    public static func equalInConstantTime(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }

    /// Writes `text` to `path` readable by its owner only, replacing what was there: a new
    /// file made 0600 from its first instant (never readable by others, even briefly),
    /// written, synced and renamed over `path`.
    public static func writePrivately(_ text: String, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let bytes = Array(text.utf8)
        var written = 0
        var failure: Int32 = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                failure = errno
                break
            }
            written += count
        }
        if failure == 0, fsync(fd) != 0 { failure = errno }
        close(fd)
        if failure == 0, rename(temporary, path) != 0 { failure = errno }
        if failure != 0 {
            unlink(temporary)
            throw POSIXError(POSIXErrorCode(rawValue: failure) ?? .EIO)
        }
    }
}

/// Whether a listener's host is this machine's loopback (127.0.0.0/8, `::1`, `localhost`):
/// reachable from this host only.
public enum LoopbackAddress {
    public static func contains(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        return IPv4Address.bytes(of: host)?.first == 127
    }

    /// Why an API may not listen on `host:port` (off loopback, without TLS), or nil.
    public static func refusal(of what: String, carrying secret: String, host: String, port: Int) -> String? {
        guard !contains(host) else { return nil }
        return "refusing to serve \(what) on \(host):\(port) without TLS (\(secret) would cross the network in the clear); "
            + "bind it to this host with --http 127.0.0.1:\(port)"
    }
}

/// A dotted-quad IPv4 address.
public enum IPv4Address {
    /// Its four bytes, or nil when `host` is not one.
    public static func bytes(of host: String) -> [UInt8]? {
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let bytes = parts.compactMap { UInt8($0) }
        return bytes.count == 4 ? bytes : nil
    }
}
