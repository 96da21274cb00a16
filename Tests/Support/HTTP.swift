import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OrchCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An HTTP request with a deadline, answering status and body.
public func http(_ method: HTTPMethod, _ url: String, body: String? = nil, token: TestToken = .local) async throws -> (status: Int, body: String) {
    let answer = try await http(method, url, headers: [:], body: body, token: token)
    return (answer.status, answer.body)
}

/// Which API token a test request carries.
public enum TestToken: Sendable {
    /// The one the manager or worker listening there left for this user (``LocalTokens``),
    /// as orchctl finds it; none when there is none (a container's server, say).
    case local
    /// No token.
    case none
    /// This one.
    case bearer(String)

    /// The `Authorization` value for `url`, if any.
    public func authorization(for url: String) -> String? {
        switch self {
        case .none: return nil
        case .bearer(let token): return "Bearer \(token)"
        case .local:
            guard let parsed = URL(string: url), let host = parsed.host, let port = parsed.port,
                  let token = LocalTokens.read(host: host, port: port) else { return nil }
            return "Bearer \(token)"
        }
    }
}

/// The `Authorization` line (with its CRLF) of a raw request to 127.0.0.1:`port`, carrying
/// the token the server there left for this user; empty when there is none.
public func authorizationLine(port: Int) -> String {
    LocalTokens.read(host: "127.0.0.1", port: port).map { "Authorization: Bearer \($0)\r\n" } ?? ""
}

/// What a server answered: its status, header fields and body.
public struct HTTPAnswer: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: String

    public init(status: Int, headers: HTTPHeaders, body: String) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// An HTTP request with a deadline and header fields of its own (a `Content-Type`, one
/// of 100 KB, ...); the answer with its header fields. `body` is sent as it is, with no
/// content type unless `headers` names one.
public func http(_ method: HTTPMethod, _ url: String, headers: HTTPHeaders, body: String? = nil, token: TestToken = .local) async throws -> HTTPAnswer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    request.headers.add(contentsOf: headers)
    if !headers.contains(name: "Authorization"), let authorization = token.authorization(for: url) {
        request.headers.add(name: "Authorization", value: authorization)
    }
    if let body { request.body = .bytes(ByteBuffer(string: body)) }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
    let bytes = try await response.body.collect(upTo: 16 << 20)
    return HTTPAnswer(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
}

/// One request that does not follow a redirect (the answer is the 3xx itself).
public func httpOnce(
    _ method: HTTPMethod, _ url: String, body: String? = nil, token: TestToken = .local, headers: [(String, String)] = []
) async throws -> HTTPAnswer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let authorization = token.authorization(for: url) { request.headers.add(name: "Authorization", value: authorization) }
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let body { request.body = .bytes(ByteBuffer(string: body)) }
    let response = try await notFollowing.execute(request, timeout: .seconds(30))
    let bytes = try await response.body.collect(upTo: 16 << 20)
    return HTTPAnswer(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
}

private let notFollowing: HTTPClient = {
    var configuration = HTTPClient.Configuration()
    configuration.redirectConfiguration = .disallow
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}()

/// GET `url` until it answers 200 (the server in a fresh container may not listen yet), within 10 s.
public func httpWhenUp(_ url: String) async throws -> String {
    let deadline = ContinuousClock.now + .seconds(10)
    var last: String = "no answer"
    while ContinuousClock.now < deadline {
        do {
            let answer = try await http(.GET, url)
            if answer.status == 200 { return answer.body }
            last = "status \(answer.status)"
        } catch {
            last = "\(error)"
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestTimeout(what: "\(url) to answer (last: \(last))")
}

/// What a raw HTTP exchange saw: the bytes the server sent, read as an answer when they
/// are one, and how the server ended the connection.
public struct RawHTTPExchange: Sendable {
    public enum Ending: Sendable, Equatable {
        /// The server closed its side (FIN): every byte it sent was read.
        case closed
        /// The connection was reset (RST): the server closed with bytes of ours unread.
        case reset
    }

    public var received: String
    public var ending: Ending
    /// From the start of the exchange to the connection's end.
    public var elapsed: Duration

    /// The first answer in `received`, or nil when it is not one.
    public var answer: HTTPAnswer? {
        guard let end = received.range(of: "\r\n\r\n") else { return nil }
        let lines = received[..<end.lowerBound].components(separatedBy: "\r\n")
        let statusLine = lines[0].split(separator: " ")
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/"), let status = Int(statusLine[1]) else { return nil }
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.add(name: String(line[..<colon]), value: line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        var body = String(received[end.upperBound...])
        if let length = headers.first(name: "Content-Length").flatMap(Int.init), body.utf8.count > length {
            body = String(decoding: Array(body.utf8.prefix(length)), as: UTF8.self)
        }
        return HTTPAnswer(status: status, headers: headers, body: body)
    }
}

/// Sends `request` as it is on a new TCP connection to 127.0.0.1:`port` and reads until
/// the server ends the connection, within `timeout`. With `halfClose`, shuts the sending
/// side once the request is sent, as a client that expects nothing more does.
///
/// For what an HTTP client library cannot send, or would not survive: headers the server
/// refuses while they are still being written (AsyncHTTPClient traps when the server
/// answers and closes before its request head is out).
public func rawHTTPExchange(port: Int, _ request: String, halfClose: Bool, timeout: Duration = .seconds(10)) throws -> RawHTTPExchange {
    let started = ContinuousClock.now
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw RawHTTPError("socket: errno \(errno)") }
    defer { close(fd) }
    let seconds = timeout.components.seconds
    var limit = timeval(tv_sec: Int(seconds), tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw RawHTTPError("connect to 127.0.0.1:\(port): errno \(errno)") }
    let bytes = Array(request.utf8)
    var sent = 0
    while sent < bytes.count {
        #if canImport(Glibc)
        let flags = Int32(MSG_NOSIGNAL)
        #else
        let flags: Int32 = 0
        #endif
        let written = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, flags) }
        // The server may answer, and stop reading, before all is sent: what it said counts.
        if written <= 0 { break }
        sent += written
    }
    if halfClose { shutdown(fd, Int32(SHUT_WR)) }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count > 0 {
            received += buffer[0..<count]
        } else if count == 0 {
            return RawHTTPExchange(received: String(decoding: received, as: UTF8.self), ending: .closed, elapsed: ContinuousClock.now - started)
        } else if errno == ECONNRESET {
            return RawHTTPExchange(received: String(decoding: received, as: UTF8.self), ending: .reset, elapsed: ContinuousClock.now - started)
        } else if errno == EAGAIN || errno == EWOULDBLOCK {
            throw RawHTTPError("the server did not end the connection within \(timeout); it sent: \(String(decoding: received, as: UTF8.self).prefix(300))")
        } else {
            throw RawHTTPError("recv: errno \(errno)")
        }
    }
}

public struct RawHTTPError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
