import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import OrchCore

/// The Docker Engine API over its unix socket (or TCP), with AsyncHTTPClient.
///
/// The API version is negotiated once, in ``connect(endpoint:logger:)``, from `GET /version`:
/// the highest version both this program and the engine speak. Every call has a timeout and
/// every body a size bound; the engine's errors become ``RuntimeError``s.
public final class DockerRuntime: ContainerRuntime {
    /// The API versions this program speaks (Debian's engine 20.10 speaks 1.41).
    public static let oldestAPIVersion = APIVersion(major: 1, minor: 41)
    public static let newestAPIVersion = APIVersion(major: 1, minor: 51)
    /// Bodies larger than this are refused (a container list or an inspect is far smaller).
    static let maximumBodyBytes = 8 << 20
    static let defaultTimeout: Duration = .seconds(30)
    /// The default bound on a whole pull, its progress stream included.
    public static let defaultPullTimeout: Duration = .seconds(300)

    public let endpoint: DockerEndpoint
    /// The version every request is sent with.
    public let apiVersion: APIVersion
    /// The engine's own version, e.g. "20.10.24+dfsg1".
    public let engineVersion: String
    let client: HTTPClient
    let logger: Logger
    /// A pull (answer and progress stream) that takes longer than this fails with `timeout`.
    public let pullTimeout: Duration

    private init(endpoint: DockerEndpoint, apiVersion: APIVersion, engineVersion: String, client: HTTPClient, logger: Logger, pullTimeout: Duration) {
        self.pullTimeout = pullTimeout
        self.endpoint = endpoint
        self.apiVersion = apiVersion
        self.engineVersion = engineVersion
        self.client = client
        self.logger = logger
    }

    /// Connects to the engine at `endpoint` and negotiates the API version.
    /// Call ``shutdown()`` when done.
    /// - Throws: ``RuntimeError/daemonUnreachable(endpoint:reason:)`` when nothing answers,
    ///   ``RuntimeError/unsupportedAPIVersion(engine:minimum:supported:)`` when no version fits.
    public static func connect(
        endpoint: DockerEndpoint = .default, logger: Logger, pullTimeout: Duration = DockerRuntime.defaultPullTimeout
    ) async throws -> DockerRuntime {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(3))
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let (version, engine) = try await negotiate(client: client, endpoint: endpoint, logger: logger)
            logger.debug("Docker API negotiated", metadata: ["docker.api": "\(version)", "docker.engine": "\(engine)"])
            return DockerRuntime(endpoint: endpoint, apiVersion: version, engineVersion: engine, client: client, logger: logger, pullTimeout: pullTimeout)
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    /// Closes the connections to the engine; open streams end.
    public func shutdown() async throws {
        try await client.shutdown()
    }

    private static func negotiate(client: HTTPClient, endpoint: DockerEndpoint, logger: Logger) async throws
        -> (APIVersion, String)
    {
        let body = try await perform(
            client: client, endpoint: endpoint, .GET, "/version", operation: "report its version",
            timeout: .seconds(10), logger: logger)
        let version = try decode(VersionResponse.self, from: body, operation: "report its version")
        guard let engineNewest = APIVersion(version.ApiVersion) else {
            throw RuntimeError.invalidResponse(operation: "report its version", reason: "API version \(version.ApiVersion)")
        }
        let engineOldest = version.MinAPIVersion.flatMap(APIVersion.init) ?? engineNewest
        let chosen = min(engineNewest, newestAPIVersion)
        guard chosen >= oldestAPIVersion, chosen >= engineOldest else {
            throw RuntimeError.unsupportedAPIVersion(
                engine: "\(engineNewest)", minimum: "\(engineOldest)", supported: "\(oldestAPIVersion) to \(newestAPIVersion)")
        }
        return (chosen, version.Version ?? "unknown")
    }

    // MARK: - Requests

    /// Sends a request under `/v<version>` and returns the bounded body of a 2xx answer.
    func request(
        _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], json body: (any Encodable)? = nil,
        operation: String, timeout: Duration = DockerRuntime.defaultTimeout,
        notFound: RuntimeError? = nil, maximumBytes: Int = DockerRuntime.maximumBodyBytes
    ) async throws -> ByteBuffer {
        let encoded = try body.map { try JSONEncoder().encode($0) }
        return try await Self.perform(
            client: client, endpoint: endpoint, method, versioned(path, query: query), body: encoded,
            operation: operation, timeout: timeout, notFound: notFound, maximumBytes: maximumBytes, logger: logger)
    }

    /// Sends a request whose answer streams (logs, events, a pull's progress); returns the
    /// response once its head has arrived. `timeout` bounds only that.
    func stream(
        _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], operation: String,
        timeout: Duration = DockerRuntime.defaultTimeout, notFound: RuntimeError? = nil
    ) async throws -> HTTPClientResponse {
        let response = try await Self.send(
            client: client, endpoint: endpoint, method, versioned(path, query: query), body: nil,
            operation: operation, timeout: timeout, logger: logger)
        guard (200..<300).contains(response.status.code) else {
            let body = try await Self.collect(response, operation: operation, maximumBytes: 64 << 10)
            throw Self.error(for: response.status, body: body, operation: operation, notFound: notFound)
        }
        return response
    }

    private func versioned(_ path: String, query: [(String, String)]) -> String {
        var components = URLComponents()
        components.path = "/v\(apiVersion)\(path)"
        if !query.isEmpty { components.queryItems = query.map { URLQueryItem(name: $0.0, value: $0.1) } }
        return components.string ?? "/v\(apiVersion)\(path)"
    }

    static func perform(
        client: HTTPClient, endpoint: DockerEndpoint, _ method: HTTPMethod, _ pathAndQuery: String, body: Data? = nil,
        operation: String, timeout: Duration, notFound: RuntimeError? = nil,
        maximumBytes: Int = DockerRuntime.maximumBodyBytes, logger: Logger
    ) async throws -> ByteBuffer {
        let response = try await send(
            client: client, endpoint: endpoint, method, pathAndQuery, body: body,
            operation: operation, timeout: timeout, logger: logger)
        let bytes = try await collect(response, operation: operation, maximumBytes: maximumBytes)
        guard (200..<300).contains(response.status.code) else {
            throw error(for: response.status, body: bytes, operation: operation, notFound: notFound)
        }
        return bytes
    }

    private static func send(
        client: HTTPClient, endpoint: DockerEndpoint, _ method: HTTPMethod, _ pathAndQuery: String, body: Data?,
        operation: String, timeout: Duration, logger: Logger
    ) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: endpoint.url(pathAndQuery))
        request.method = method
        // The engine answers 400 "missing required Host header" over the unix socket without one.
        request.headers.add(name: "Host", value: "docker")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        logger.trace("Docker request", metadata: ["http.method": "\(method.rawValue)", "http.path": "\(pathAndQuery)"])
        do {
            return try await client.execute(request, timeout: .nanoseconds(timeout.nanoseconds), logger: logger)
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            throw RuntimeError.timeout(operation: operation, after: timeout)
        } catch let error as HTTPClientError where error == .getConnectionFromPoolTimeout {
            // The engine answers, but every connection to it is busy: not "Docker is not running".
            throw RuntimeError.busy(operation: operation)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw RuntimeError.daemonUnreachable(endpoint: endpoint.description, reason: Self.reason(error))
        }
    }

    private static func collect(_ response: HTTPClientResponse, operation: String, maximumBytes: Int) async throws -> ByteBuffer {
        do {
            return try await response.body.collect(upTo: maximumBytes)
        } catch is NIOTooManyBytesError {
            throw RuntimeError.responseTooLarge(operation: operation, limitBytes: maximumBytes)
        }
    }

    /// A short, readable reason for a connection failure ("connection refused", "no such file").
    static func reason(_ error: any Error) -> String {
        if let io = error as? IOError {
            return String(cString: strerror(io.errnoCode)).lowercased()
        }
        if let client = error as? HTTPClientError {
            if client == .connectTimeout { return "connection timed out" }
            if client == .remoteConnectionClosed { return "the connection was closed" }
        }
        return String(describing: error)
    }

    static func error(for status: HTTPResponseStatus, body: ByteBuffer, operation: String, notFound: RuntimeError?) -> RuntimeError {
        let message = (try? JSONDecoder().decode(ErrorResponse.self, from: body))?.message
            ?? String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)
        switch status.code {
        case 404 where notFound != nil: return notFound!
        case 409: return .conflict(message)
        default:
            if message.contains("port is already allocated") || message.contains("address already in use") {
                return .portUnavailable(message)
            }
            return .engine(operation: operation, status: Int(status.code), message: message)
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, from body: ByteBuffer, operation: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: body)
        } catch {
            throw RuntimeError.invalidResponse(operation: operation, reason: "\(error)")
        }
    }
}

/// A Docker API version, `major.minor`.
public struct APIVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    public init?(_ text: String) {
        let parts = text.split(separator: ".")
        guard parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]) else { return nil }
        self.init(major: major, minor: minor)
    }

    public var description: String { "\(major).\(minor)" }

    public static func < (lhs: APIVersion, rhs: APIVersion) -> Bool { (lhs.major, lhs.minor) < (rhs.major, rhs.minor) }
}
