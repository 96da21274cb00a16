import Foundation
import OrchCore

/// Where the Docker engine listens: its unix socket (the default) or a TCP address,
/// as `DOCKER_HOST` writes it (`unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`).
public struct DockerEndpoint: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        case unix(path: String)
        case tcp(host: String, port: Int)
    }

    public var kind: Kind

    public static let defaultSocketPath = "/var/run/docker.sock"
    public static let `default` = DockerEndpoint(kind: .unix(path: defaultSocketPath))

    public init(kind: Kind) { self.kind = kind }

    /// Reads a `DOCKER_HOST` value; nil or empty means the default socket.
    public init(dockerHost: String?) throws(RuntimeError) {
        guard let text = dockerHost, !text.isEmpty else {
            self = .default
            return
        }
        if text.hasPrefix("unix://") {
            let path = String(text.dropFirst("unix://".count))
            guard path.hasPrefix("/") else { throw Self.invalid(text) }
            kind = .unix(path: path)
        } else if text.hasPrefix("tcp://") || text.hasPrefix("http://") {
            let address = text.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first ?? ""
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
                  (1...65535).contains(port), colon > address.startIndex
            else { throw Self.invalid(text) }
            kind = .tcp(host: String(address[..<colon]), port: port)
        } else {
            throw Self.invalid(text)
        }
    }

    private static func invalid(_ text: String) -> RuntimeError {
        .daemonUnreachable(endpoint: text, reason: "DOCKER_HOST must be unix:///PATH or tcp://HOST:PORT")
    }

    /// The URL of `pathAndQuery` (starting with `/`) on this endpoint, for AsyncHTTPClient.
    func url(_ pathAndQuery: String) -> String {
        switch kind {
        case .unix(let path):
            let encoded = path.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? path
            return "http+unix://\(encoded)\(pathAndQuery)"
        case .tcp(let host, let port):
            return "http://\(host):\(port)\(pathAndQuery)"
        }
    }

    public var description: String {
        switch kind {
        case .unix(let path): path
        case .tcp(let host, let port): "tcp://\(host):\(port)"
        }
    }
}
