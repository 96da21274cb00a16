import AsyncHTTPClient
import NIOCore
import NIOHTTP1

/// An HTTP request with a deadline, answering status and body.
public func http(_ method: HTTPMethod, _ url: String, body: String? = nil) async throws -> (status: Int, body: String) {
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let body { request.body = .bytes(ByteBuffer(string: body)) }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
    let bytes = try await response.body.collect(upTo: 16 << 20)
    return (Int(response.status.code), String(buffer: bytes))
}

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

