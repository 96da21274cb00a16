import NIOCore

/// Bytes to messages. Reads the 4-byte length first and refuses a frame whose header
/// announces more than `maximumFrameBytes` before any of its body is buffered
/// (nio-extras' length-field decoder has no such limit).
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = WireMessage
    public let maximumFrameBytes: Int

    public init(maximumFrameBytes: Int = Frame.defaultMaximumBytes) {
        self.maximumFrameBytes = maximumFrameBytes
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let message = try Frame.decode(from: &buffer, maximumBytes: maximumFrameBytes) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(message))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData   // a partial frame at the end of the stream is dropped with the connection
    }
}

/// Messages to bytes: one frame each.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = WireMessage

    public init() {}

    public func encode(data: WireMessage, out: inout ByteBuffer) throws {
        Frame.encode(data, into: &out)
    }
}

/// Answers a malformed or oversized frame with an `error` frame, then closes the connection,
/// so that one bad peer cannot harm the process. Other errors close the connection too.
public final class ProtocolErrorHandler: ChannelInboundHandler {
    public typealias InboundIn = WireMessage
    public typealias InboundOut = WireMessage
    public typealias OutboundOut = WireMessage

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.fireErrorCaught(error)
        guard let wireError = error as? WireError else {
            context.close(promise: nil)
            return
        }
        let answer = WireMessage.error(ErrorMessage(code: wireError.code, message: wireError.description))
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(Self.wrapOutboundOut(answer)).whenComplete { _ in bound.value.close(promise: nil) }
    }
}

@available(*, unavailable)
extension ProtocolErrorHandler: Sendable {}

extension ChannelPipeline.SynchronousOperations {
    /// Adds the framing handlers of the cluster protocol: bytes in, messages out, and back.
    public func addWireHandlers(maximumFrameBytes: Int = Frame.defaultMaximumBytes) throws {
        try addHandler(MessageToByteHandler(FrameEncoder()))
        try addHandler(ByteToMessageHandler(FrameDecoder(maximumFrameBytes: maximumFrameBytes)))
        try addHandler(ProtocolErrorHandler())
    }
}
