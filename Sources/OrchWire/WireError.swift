import OrchCore

/// Why bytes from a peer are not a valid frame. The decoder never traps: every malformed
/// input ends in one of these, and the connection answers with an `error` frame and closes.
public enum WireError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The frame's length field announces more than the receiver accepts (checked from the header alone).
    case frameTooLarge(length: UInt32, limit: Int)
    /// A length of 0: not even a type byte.
    case emptyFrame
    /// A message type this version does not know.
    case unknownType(UInt8)
    /// The payload ended before a field did.
    case truncated(field: String)
    /// A string that is not UTF-8.
    case invalidUTF8(field: String)
    /// A list or byte string announcing more elements than the rest of the frame could hold.
    case listTooLong(field: String, count: UInt32)
    /// A field with a value outside its range (an optional tag other than 0 or 1, an unknown enum value).
    case invalidValue(field: String, value: UInt64)
    /// Bytes left in the frame after its message.
    case trailingBytes(count: Int)

    /// The code sent in the `error` frame that answers this error (see WIRE.md).
    public var code: WireErrorCode {
        switch self {
        case .frameTooLarge: .frameTooLarge
        case .unknownType: .unknownType
        case .emptyFrame, .truncated, .invalidUTF8, .listTooLong, .invalidValue, .trailingBytes: .malformedFrame
        }
    }

    public var description: String {
        switch self {
        case .frameTooLarge(let length, let limit): "frame of \(length) bytes is larger than the limit of \(limit)"
        case .emptyFrame: "frame of length 0 has no message type"
        case .unknownType(let type): "unknown message type 0x\(String(type, radix: 16))"
        case .truncated(let field): "frame ends inside \(field)"
        case .invalidUTF8(let field): "\(field) is not valid UTF-8"
        case .listTooLong(let field, let count): "\(field) announces \(count) elements, more than the frame holds"
        case .invalidValue(let field, let value): "\(field) has the invalid value \(value)"
        case .trailingBytes(let count): "\(count) bytes left after the message"
        }
    }
}
