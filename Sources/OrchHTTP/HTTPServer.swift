import Foundation
import HTTPTypes
import HummingbirdCore
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import OrchCore

/// The limits of a request's header section, as the HTTP parser enforces them.
public enum HTTPHeaderLimits {
    /// The most bytes of one header field, and of all of them together.
    public static let maximumBytes = 80 * 1024
    /// The most header fields.
    public static let maximumFields = 1000
}

extension HTTPServerBuilder {
    /// HTTP/1.1 as Hummingbird serves it, except that a request the HTTP parser refuses is
    /// answered in the API's error shape: 431 `headers_too_large` when its header section is
    /// over ``HTTPHeaderLimits``, 400 `bad_request` when it is not HTTP. Hummingbird alone
    /// answers both with an empty 400.
    ///
    /// ```swift
    /// Application(router: router, server: .http1WithAPIErrors(), configuration: ...)
    /// ```
    public static func http1WithAPIErrors() -> HTTPServerBuilder {
        .http1(configuration: HTTP1Channel.Configuration(
            additionalChannelHandlers: [ProtocolErrorResponder()],
            httpDecoderConfiguration: .init(
                maxHeaderFieldSize: HTTPHeaderLimits.maximumBytes, maxHeaderListSize: HTTPHeaderLimits.maximumBytes,
                maxHeaderFieldCount: HTTPHeaderLimits.maximumFields)))
    }
}

/// Answers a request that NIO's HTTP parser refused, between the parser and Hummingbird.
///
/// The parser fails before a request head exists, so no route ever sees such a request;
/// this handler answers it itself, then closes the connection, since the parser cannot
/// go on. It half-closes first and reads (and drops) what the client still sends for a
/// moment: closing a socket with unread bytes sends a reset, and a client still writing
/// its oversized headers would lose the answer to it.
///
/// Only a connection with nothing in flight is answered here; a parse error in the
/// middle of a request (a broken chunked body) goes on to Hummingbird, which ends it.
final class ProtocolErrorResponder: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// How long the client gets to close its side after the answer.
    static let lingerTime: TimeAmount = .seconds(2)

    /// Requests whose head was read and whose body has not ended.
    private var requestsReading = 0
    /// Requests whose response has not ended.
    private var responsesPending = 0
    /// This handler answered: the connection is closing, and what comes in is dropped.
    private var answered = false
    private var lingerDeadline: Scheduled<Void>?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        switch unwrapInboundIn(data) {
        case .head:
            requestsReading += 1
            responsesPending += 1
        case .end: requestsReading = max(requestsReading - 1, 0)
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { responsesPending = max(responsesPending - 1, 0) }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // After its first error the parser reports every later read as an error of its own.
        guard !answered else { return }
        guard let parserError = error as? HTTPParserError, requestsReading == 0, responsesPending == 0 else {
            context.fireErrorCaught(error)
            return
        }
        answered = true
        let answer = Self.answer(to: parserError)
        let body = ByteBuffer(bytes: (try? APIJSON.encode(answer.body)) ?? Data())
        var fields = HTTPFields()
        fields[.contentType] = APIJSON.contentType
        fields[.contentLength] = String(body.readableBytes)
        fields[.connection] = "close"
        context.write(wrapOutboundOut(.head(HTTPResponse(status: answer.status, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in
            let halfClosed = context.eventLoop.makePromise(of: Void.self)
            context.close(mode: .output, promise: halfClosed)
            halfClosed.futureResult.assumeIsolated().whenFailure { _ in context.close(promise: nil) }
        }
        lingerDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) {
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if answered, let event = event as? ChannelEvent, event == .inputClosed {
            // The client read the answer and closed its side: nothing more to wait for.
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        lingerDeadline?.cancel()
        lingerDeadline = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        lingerDeadline?.cancel()
        lingerDeadline = nil
    }

    static func answer(to error: HTTPParserError) -> (status: HTTPResponse.Status, body: APIErrorBody) {
        if case .headerOverflow = error {
            let limit = "at most \(HTTPHeaderLimits.maximumBytes / 1024) KiB in all and \(HTTPHeaderLimits.maximumFields) fields"
            return (.requestHeaderFieldsTooLarge, APIErrorBody(code: "headers_too_large", message: "the request's header fields are too large: \(limit)"))
        }
        return (.badRequest, APIErrorBody(code: "bad_request", message: "the request is not valid HTTP/1.1: \(error)"))
    }
}
