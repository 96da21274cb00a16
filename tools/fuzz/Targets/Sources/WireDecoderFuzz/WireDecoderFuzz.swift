import NIOCore
import OrchWire

/// libFuzzer's entry point. An input is what a peer sent on one connection: it is decoded
/// frame by frame, as the connection's `FrameDecoder` does, and every outcome is checked
/// against WIRE.md. A broken rule traps, which libFuzzer reports as a crash with the input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var stream = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    while checkNextFrame(of: &stream) {}
    return 0
}

/// What one call of `Frame.decode` gave.
enum Outcome {
    case message(WireMessage)
    case incomplete
    case refused(WireError)
}

/// Decodes the frame at the front of `stream` and checks the outcome; true when a message
/// was decoded, so that the next frame may follow.
func checkNextFrame(of stream: inout ByteBuffer) -> Bool {
    let before = stream
    let available = before.readableBytes
    let length = before.getInteger(at: before.readerIndex, endianness: .big, as: UInt32.self).map(Int.init)
    switch decode(&stream) {
    case .incomplete:
        check(stream.readerIndex == before.readerIndex, "an incomplete frame consumed \(stream.readerIndex - before.readerIndex) bytes")
        if let length {
            check(length > 0 && length <= Frame.defaultMaximumBytes, "a frame of length \(length) was taken as incomplete, not refused")
            check(available < Frame.headerBytes + length, "a whole frame (length \(length), \(available) bytes) was taken as incomplete")
        }
        return false
    case .refused(let error):
        checkRefusal(error, of: before, length: length)
        return false
    case .message(let message):
        guard let length else { fail("a message from \(available) bytes, fewer than a header: \(message)") }
        let frameBytes = Frame.headerBytes + length
        let consumed = available - stream.readableBytes
        check(consumed == frameBytes, "a frame of \(frameBytes) bytes consumed \(consumed)")
        checkPrefixIsIncomplete(of: before, frameBytes: frameBytes)
        checkRoundTrip(message, frameBytes: frameBytes)
        return true
    }
}

/// Each error must be the one WIRE.md gives for the bytes at hand: the header's errors come
/// from the header alone, the others only once the whole frame has arrived.
func checkRefusal(_ error: WireError, of stream: ByteBuffer, length: Int?) {
    guard let length else { fail("\(error) from \(stream.readableBytes) bytes, fewer than a header") }
    switch error {
    case .emptyFrame:
        check(length == 0, "empty_frame for a length of \(length)")
    case .frameTooLarge(let announced, let limit):
        check(Int(announced) == length && limit == Frame.defaultMaximumBytes && length > limit, "\(error) for a length of \(length)")
    default:
        check(length > 0 && length <= Frame.defaultMaximumBytes, "\(error) for a length of \(length), which the header alone refuses")
        check(stream.readableBytes >= Frame.headerBytes + length, "\(error) before the whole frame of length \(length) had arrived")
        let type = stream.getInteger(at: stream.readerIndex + Frame.headerBytes, as: UInt8.self)!
        switch error {
        case .unknownType(let refused):
            check(refused == type && WireMessage.Kind(rawValue: type) == nil, "\(error) for the type byte \(type)")
        case .trailingBytes(let count):
            check(WireMessage.Kind(rawValue: type) != nil, "\(error) for the unknown type \(type)")
            check(count > 0 && count < length, "\(error) in a frame of length \(length)")
        default:
            check(WireMessage.Kind(rawValue: type) != nil, "\(error) for the unknown type \(type)")
        }
    }
}

/// A whole frame less its last byte is incomplete and consumes nothing: the decoder never acts
/// on part of a frame.
func checkPrefixIsIncomplete(of stream: ByteBuffer, frameBytes: Int) {
    var prefix = stream.getSlice(at: stream.readerIndex, length: frameBytes - 1)!
    switch decode(&prefix) {
    case .incomplete:
        check(prefix.readableBytes == frameBytes - 1, "the incomplete frame without its last byte was consumed")
    case let other:
        fail("the frame without its last byte gave \(other), not incomplete")
    }
}

/// A decoded message encodes to a frame that decodes to the same message, and encoding it
/// again gives the same bytes. That frame is no longer than the one received (fields keep
/// their widths, maps lose repeated keys), so a relayed message stays within the receiver's limit.
func checkRoundTrip(_ message: WireMessage, frameBytes: Int) {
    let encoded = Frame.encode(message)
    check(encoded.readableBytes <= frameBytes, "a frame of \(frameBytes) bytes re-encodes to \(encoded.readableBytes): \(message)")
    var reread = encoded
    switch decode(&reread) {
    case .message(let again):
        check(again == message, "the re-encoded message decodes to another:\n  decoded:   \(message)\n  re-decoded: \(again)")
        check(reread.readableBytes == 0, "\(reread.readableBytes) bytes left after the re-encoded frame of \(message)")
        check(Frame.encode(again) == encoded, "the same message encodes to other bytes the second time: \(message)")
    case .incomplete:
        fail("the re-encoded frame of \(message) is incomplete")
    case .refused(let error):
        fail("the re-encoded frame of \(message) is refused: \(error)")
    }
}

/// Calls the decoder through an untyped `throws`, so that what it throws is checked as it
/// runs, not only by its signature: anything but a `WireError` traps.
func decode(_ buffer: inout ByteBuffer) -> Outcome {
    do {
        return try decodeErasingErrorType(&buffer).map(Outcome.message) ?? .incomplete
    } catch let error as WireError {
        return .refused(error)
    } catch {
        fail("the decoder threw \(type(of: error)), not a WireError: \(error)")
    }
}

func decodeErasingErrorType(_ buffer: inout ByteBuffer) throws -> WireMessage? {
    try Frame.decode(from: &buffer)
}

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fail(message()) }
}

func fail(_ message: String) -> Never {
    fatalError("wire fuzz: \(message)")
}
