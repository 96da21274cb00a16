import Foundation
import Hummingbird
import Logging
import OrchCore
import OrchHTTP
import OrchTestSupport
import ServiceLifecycle
import Testing

/// OrchHTTP's server (`.http1WithAPIErrors()`) and routes, which the manager's gateway and
/// the worker's API share, in process: what NIO's HTTP parser refuses never reaches a
/// route, so it is answered here, byte by byte as a client sees it.
@Suite("REST bad input: the shared HTTP layer answers what the parser refuses", .serialized, .timeLimit(.minutes(2)))
struct RESTBadInputHTTPLayerTests {
    /// Runs an API with one route, GET /echo, on a free loopback port; stops it gracefully
    /// (cancelling a server that holds accepted connections not yet handled traps in NIO).
    func withServer(_ body: (Int) async throws -> Void) async throws {
        let router = Router()
        let routes = APIRoutes(router)
        routes.get("echo") { _, _ in "ok" }
        let (ports, port) = AsyncStream<Int>.makeStream()
        let logger = Logger(label: "bad-input-test")
        let app = Application(
            router: router, server: .http1WithAPIErrors(),
            configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: 0), serverName: "bad-input-test"),
            onServerRunning: { channel in
                port.yield(channel.localAddress?.port ?? 0)
                port.finish()
            },
            logger: logger)
        let services = ServiceGroup(configuration: ServiceGroupConfiguration(services: [app], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            var iterator = ports.makeAsyncIterator()
            var outcome: (any Error)?
            if let bound = await iterator.next(), bound > 0 {
                do { try await body(bound) } catch { outcome = error }
            } else {
                outcome = TestTimeout(what: "the server to start")
            }
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
            if let outcome { throw outcome }
        }
    }

    @Test func aHeaderOf100KBIs431InTheErrorShapeAndTheConnectionCloses() async throws {
        try await withServer { port in
            let request = "GET /echo HTTP/1.1\r\nHost: x\r\nX-Padding: \(String(repeating: "a", count: 100 * 1024))\r\n\r\n"
            // The client does not close its side: the server must, after its answer.
            let exchange = try rawHTTPExchange(port: port, request, halfClose: false)
            let answer = try #require(exchange.answer, "an HTTP answer: \(exchange.received.prefix(200))")
            #expect(exchange.received.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"))
            #expect(answer.headers.first(name: "Content-Type") == "application/json; charset=utf-8")
            #expect(answer.headers.first(name: "Connection") == "close")
            let error = try JSONDecoder().decode(APIErrorBody.self, from: Data(answer.body.utf8))
            #expect(error.error.code == "headers_too_large")
            #expect(exchange.ending == .closed, "closed after every byte sent was read, not reset")
            #expect(exchange.elapsed < .seconds(5), "closed after the linger time at the latest, not left open: \(exchange.elapsed)")
        }
    }

    @Test func aClientStillSendingItsHeadersGetsTheAnswerNotAReset() async throws {
        try await withServer { port in
            // 1 MiB of headers: the parser stops at 80 KiB, long before the client is done.
            var fields = ""
            for index in 0..<1024 { fields += "X-Field-\(index): \(String(repeating: "b", count: 1000))\r\n" }
            let exchange = try rawHTTPExchange(port: port, "GET /echo HTTP/1.1\r\nHost: x\r\n\(fields)\r\n", halfClose: true)
            #expect(exchange.answer?.status == 431, "\(exchange.received.prefix(200))")
            #expect(exchange.ending == .closed)
        }
    }

    @Test func aClientThatClosesAfterTheAnswerIsNotKeptWaiting() async throws {
        try await withServer { port in
            var fields = ""
            for index in 0..<1_001 { fields += "X-Field-\(index): v\r\n" }
            let exchange = try rawHTTPExchange(port: port, "GET /echo HTTP/1.1\r\nHost: x\r\n\(fields)\r\n", halfClose: true)
            #expect(exchange.answer?.status == 431, "1,001 fields: \(exchange.received.prefix(200))")
            #expect(exchange.elapsed < .seconds(1), "the server closed as soon as the client did: \(exchange.elapsed)")
        }
    }

    @Test func aRequestThatIsNotHTTPIs400InTheErrorShape() async throws {
        try await withServer { port in
            for garbage in ["\u{1}\u{2}hello\r\n\r\n", "GET /echo HTTP/1.1\r\nHost x\r\n\r\n"] {
                let exchange = try rawHTTPExchange(port: port, garbage, halfClose: true)
                let answer = try #require(exchange.answer, "\(garbage.debugDescription): \(exchange.received.prefix(200))")
                #expect(answer.status == 400, "\(garbage.debugDescription)")
                let error = try? JSONDecoder().decode(APIErrorBody.self, from: Data(answer.body.utf8))
                #expect(error?.error.code == "bad_request", "\(garbage.debugDescription): \(answer.body)")
            }
        }
    }

    @Test func wellFormedRequestsAreServedAsBefore() async throws {
        try await withServer { port in
            let padded = "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Padding: \(String(repeating: "a", count: 60 * 1024))\r\n\r\n"
            let answer = try #require(try rawHTTPExchange(port: port, padded, halfClose: false).answer)
            #expect(answer.status == 200 && answer.body == "ok", "\(answer.status) \(answer.body)")
            let wrongMethod = try #require(try rawHTTPExchange(port: port, "DELETE /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", halfClose: false).answer)
            #expect(wrongMethod.status == 405 && wrongMethod.headers.first(name: "Allow") == "GET", "\(wrongMethod.status) \(wrongMethod.headers)")
        }
    }
}
