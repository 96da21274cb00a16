import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import OrchCore
import Synchronization

/// Options every client command takes.
struct ClientOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The manager's REST API (env ORCH_API).", valueName: "url"))
    var api: String = ProcessInfo.processInfo.environment["ORCH_API"] ?? "http://127.0.0.1:5555"

    @Option(help: ArgumentHelp(
        "The API token (env ORCH_TOKEN). Without it orchctl reads the one the manager left for this user in ~/.orch/tokens/HOST:PORT.",
        valueName: "token"))
    var token: String?

    @Option(help: ArgumentHelp("Read the API token from this file (env ORCH_TOKEN_FILE).", valueName: "path"))
    var tokenFile: String?

    @Option(help: ArgumentHelp(
        "Trust this CA certificate (PEM) for an https:// API, e.g. the manager's ca.crt (env ORCH_CA_FILE). Without it, the one the manager left for this user, or the system's.",
        valueName: "path"))
    var caFile: String?

    @Flag(help: "Print the API's JSON instead of a table or text.")
    var json = false

    /// `--api` as a URL: `HOST:PORT` alone means `http://HOST:PORT`.
    var apiURL: String {
        let text = api.contains("://") ? api : "http://" + api
        return text.hasSuffix("/") ? String(text.dropLast()) : text
    }

    func validate() throws {
        guard let url = URL(string: apiURL), url.scheme == "http" || url.scheme == "https", url.host != nil, !url.host!.isEmpty else {
            throw ValidationError("--api: \"\(api)\" is not a URL such as http://127.0.0.1:5555 (or 127.0.0.1:5555)")
        }
    }

    var client: APIClient {
        get throws {
            APIClient(base: apiURL, token: try resolvedToken(), trust: try resolvedTrust())
        }
    }

    /// What an https:// API is trusted by: --ca-file (or ORCH_CA_FILE), checked with the
    /// host name; else the cluster CA a manager on this host left for this user, whose
    /// certificate may name other addresses than the one dialed (only that CA is trusted);
    /// else the system's roots.
    func resolvedTrust() throws -> APIClient.Trust {
        guard let url = URL(string: apiURL), url.scheme == "https", let host = url.host else { return .system }
        if let path = caFile ?? ProcessInfo.processInfo.environment["ORCH_CA_FILE"], !path.isEmpty {
            guard let pem = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw CommandFailure(description: "cannot read the CA file \(path)")
            }
            return .ca(pem, checkHostName: true)
        }
        if let pem = try? String(contentsOfFile: LocalTokens.caPath(host: host, port: url.port ?? 443), encoding: .utf8) {
            return .ca(pem, checkHostName: false)
        }
        return .system
    }

    /// The token to send, in this order: --token, ORCH_TOKEN, --token-file, ORCH_TOKEN_FILE,
    /// then the one a manager on this host left for this user (``LocalTokens``). Nil when
    /// there is none: the manager then answers 401, saying where to find one.
    func resolvedToken() throws -> String? {
        let environment = ProcessInfo.processInfo.environment
        if let token = token ?? environment["ORCH_TOKEN"], !token.isEmpty { return token }
        if let path = tokenFile ?? environment["ORCH_TOKEN_FILE"], !path.isEmpty {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw CommandFailure(description: "cannot read the token file \(path)")
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let url = URL(string: apiURL), let host = url.host else { return nil }
        return LocalTokens.read(host: host, port: url.port ?? (url.scheme == "https" ? 443 : 80))
    }
}

/// A failure a client command reports as one line, with its exit code.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    var exitCode: Int32 = 1
}

/// The manager's REST API, for orchctl's client commands.
struct APIClient: Sendable {
    let base: String
    /// Sent as `Authorization: Bearer` on every request.
    var token: String?
    var trust: Trust = .system

    /// What an https:// API's certificate is checked against.
    enum Trust: Sendable, Hashable {
        case system
        case ca(String, checkHostName: Bool)
    }

    /// One HTTP client for the process (a command talks to one API); a manager that does
    /// not answer is given up on after the connect timeout instead of being retried until
    /// the request's deadline.
    static let clients = Mutex<[Trust: HTTPClient]>([:])

    var http: HTTPClient {
        get throws {
            try Self.clients.withLock { clients in
                if let client = clients[trust] { return client }
                var configuration = HTTPClient.Configuration()
                configuration.timeout = .init(connect: .seconds(3))
                // A manager that is not there is said at once (connection refused), not after
                // the connect timeout's retries.
                configuration.connectionPool.retryConnectionEstablishment = false
                // A follower's redirects to the leader are followed here, keeping the token
                // (the client's own would drop it for another origin).
                configuration.redirectConfiguration = .disallow
                if case .ca(let pem, let checkHostName) = trust {
                    var tls = TLSConfiguration.makeClientConfiguration()
                    do {
                        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)))
                    } catch {
                        throw CommandFailure(description: "the CA certificate is not PEM: \(error)")
                    }
                    if !checkHostName { tls.certificateVerification = .noHostnameVerification }
                    configuration.tlsConfiguration = tls
                }
                let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
                clients[trust] = client
                return client
            }
        }
    }

    struct Answer {
        var status: Int
        var body: ByteBuffer
        var headers: HTTPHeaders = [:]
        var text: String { String(buffer: body) }

        /// The path of `Link: <PATH>; rel="next"`, when there is a next page.
        var nextPage: String? {
            guard let link = headers.first(name: "Link"), link.hasSuffix("rel=\"next\""),
                  let open = link.firstIndex(of: "<"), let close = link.firstIndex(of: ">"), open < close else { return nil }
            return String(link[link.index(after: open)..<close])
        }
    }

    func request(_ method: HTTPMethod, _ path: String, body: Data? = nil, timeout: TimeAmount = .seconds(30)) async throws -> Answer {
        let response = try await execute(path, timeout: timeout) { request in
            request.method = method
            if let body {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: body))
            }
        }
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return Answer(status: Int(response.status.code), body: bytes, headers: response.headers)
    }

    /// Sends the request made by `make` for `path`, with the token; a follower's
    /// `307`/`308` to the leader is followed (the same method, body and token), at most
    /// three times.
    private func execute(_ path: String, timeout: TimeAmount, _ make: (inout HTTPClientRequest) -> Void) async throws -> HTTPClientResponse {
        var url = base + path
        for _ in 0 ..< 4 {
            var request = HTTPClientRequest(url: url)
            make(&request)
            authorize(&request)
            let response: HTTPClientResponse
            do {
                response = try await try http.execute(request, timeout: timeout)
            } catch {
                let manager = url == base + path ? base : url
                throw CommandFailure(description: "cannot reach the manager at \(manager) (\(Self.describe(error))); is `orchctl manager` running? (--api or ORCH_API)")
            }
            guard [307, 308].contains(response.status.code), let location = response.headers.first(name: "Location") else { return response }
            _ = try? await response.body.collect(upTo: 1 << 20)
            url = location
        }
        throw CommandFailure(description: "the managers redirected \(path) more than three times (is a leader changing?); try again")
    }

    private func authorize(_ request: inout HTTPClientRequest) {
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    }

    /// Every page of a listing, following `Link: rel="next"`: the elements, and each page's
    /// answer (for the API's own JSON).
    func all<T: Decodable>(_ type: T.Type, from path: String) async throws -> (elements: [T], pages: [Answer]) {
        var next: String? = path
        var elements: [T] = []
        var pages: [Answer] = []
        while let page = next {
            let answer = try await request(.GET, page)
            elements += try decode([T].self, from: answer)
            pages.append(answer)
            next = answer.nextPage
        }
        return (elements, pages)
    }

    /// Decodes a 2xx answer as `T`, or throws the server's error as one line.
    func decode<T: Decodable>(_ type: T.Type, from answer: Answer) throws -> T {
        guard (200..<300).contains(answer.status) else { throw Self.failure(answer) }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(T.self, from: Data(buffer: answer.body))
        } catch {
            throw CommandFailure(description: "the manager answered something unexpected: \(error)")
        }
    }

    /// The server's error body as a failure: its message, then every detail on a line.
    static func failure(_ answer: Answer) -> CommandFailure {
        let decoder = JSONDecoder()
        guard let body = try? decoder.decode(APIErrorBody.self, from: Data(buffer: answer.body)) else {
            return CommandFailure(description: "the manager answered \(answer.status): \(answer.text.prefix(200))")
        }
        var text = body.error.message
        let details = body.error.details ?? []
        if !(details.count == 1 && text.contains(details[0].description)) {
            for detail in details { text += "\n  \(detail)" }
        }
        return CommandFailure(description: text)
    }

    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        if text.contains("connectionRefused") || text.contains("Connection refused") { return "connection refused" }
        if text.contains("Timeout") || text.contains("timeout") { return "timed out" }
        if text.contains("handshakeFailed") || text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "TLS failed (\(text)): the API's certificate is not trusted; give --ca-file with the manager's ca.crt"
        }
        if text.contains("remoteConnectionClosed") {
            return "the API closed the connection (if it serves TLS, use https:// in --api)"
        }
        return text
    }

    /// Streams a GET's body to `output` as it arrives.
    func stream(_ path: String, to output: FileHandle) async throws {
        for try await chunk in try await open(path) {
            output.write(Data(buffer: chunk))
        }
    }

    /// A GET whose body is read as it arrives (no deadline once the answer has begun: a
    /// stream lasts as long as it is read); any other answer than 200 is the server's error.
    func open(_ path: String, headers: [(String, String)] = []) async throws -> HTTPClientResponse.Body {
        let response = try await execute(path, timeout: .hours(24 * 365)) { request in
            request.method = .GET
            for (name, value) in headers { request.headers.add(name: name, value: value) }
        }
        guard response.status == .ok else {
            let bytes = try await response.body.collect(upTo: 1 << 20)
            throw Self.failure(Answer(status: Int(response.status.code), body: bytes))
        }
        return response.body
    }

    /// Follows `GET /events` as server-sent events from `since`, calling `each` with the
    /// events of every chunk that brings some (a burst is handled once). Ends when the
    /// manager ends the stream.
    func followEvents(_ query: String, since: UInt64?, _ each: ([ClusterEventDTO]) async throws -> Void) async throws {
        var path = "/events?follow=true" + (query.isEmpty ? "" : "&" + query)
        if let since { path += "&since=\(since)" }
        var reader = ServerSentEventReader()
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            for try await chunk in try await open(path, headers: [("Accept", "text/event-stream")]) {
                let events = reader.feed(chunk.readableBytesView).compactMap { event -> ClusterEventDTO? in
                    guard event.event == "task" || event.event == "node" else { return nil }
                    return try? decoder.decode(ClusterEventDTO.self, from: Data(event.data.utf8))
                }
                if !events.isEmpty { try await each(events) }
            }
        } catch let failure as CommandFailure {
            throw failure
        } catch {
            throw CommandFailure(description: "the events stream broke: \(Self.describe(error))")
        }
        throw CommandFailure(description: "the manager ended the events stream (it is stopping)")
    }
}

/// Pretty JSON of a server answer, for `--json`.
func printJSON(_ answer: APIClient.Answer) {
    if let object = try? JSONSerialization.jsonObject(with: Data(buffer: answer.body)),
       let pretty = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) {
        print(String(decoding: pretty, as: UTF8.self))
    } else {
        print(answer.text)
    }
}

/// A table with a header row, columns padded to their widest cell.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows { for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { index, cell in
            index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}

/// "5s", "3m", "2h", "4d": how long ago `date` was.
func age(since date: Date, now: Date = Date()) -> String {
    let seconds = max(0, Int(now.timeIntervalSince(date)))
    switch seconds {
    case ..<60: return "\(seconds)s"
    case ..<3600: return "\(seconds / 60)m"
    case ..<86400: return "\(seconds / 3600)h"
    default: return "\(seconds / 86400)d"
    }
}

/// "0.4s", "12.0s", "3m05s": an elapsed time for progress lines.
func elapsedText(_ duration: Duration) -> String {
    let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    if seconds < 60 { return String(format: "%.1fs", seconds) }
    return String(format: "%dm%02ds", Int(seconds) / 60, Int(seconds) % 60)
}

/// Runs a client command body, turning failures into one line on stderr and an exit code.
func runClient(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let failure as CommandFailure {
        printError(failure.description)
        throw ExitCode(failure.exitCode)
    } catch let error as CLIError {
        printError(error.localizedDescription)
        throw ExitCode(1)
    }
}

/// A duration option as people type it: `90s`, `5m`, or bare seconds (`5`), as task files take them.
func commandLineDuration(_ text: String) -> Duration? {
    if let duration = DurationText.parse(text) { return duration }
    guard let seconds = Double(text), seconds.isFinite, seconds >= 0 else { return nil }
    return .milliseconds(Int64((seconds * 1000).rounded()))
}

/// Writes what `print` holds: a stream's lines reach a pipe as they come.
func flushOutput() {
    fflush(nil)
}
