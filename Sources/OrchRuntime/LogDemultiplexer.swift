/// Splits Docker's multiplexed log stream (containers without a TTY) into chunks.
///
/// Each frame is an 8-byte header, then the payload:
///
/// ```
/// byte 0      stream: 0 stdin, 1 stdout, 2 stderr
/// bytes 1-3   zero
/// bytes 4-7   payload length, u32 big-endian
/// ```
///
/// Payload bytes are handed on as they arrive, so a large frame is never buffered whole.
public struct LogDemultiplexer: Sendable {
    private var header: [UInt8] = []
    private var remaining = 0
    private var stream = LogChunk.Stream.stdout

    public init() {}

    /// The chunks that `bytes` completes or continues.
    /// - Throws: ``RuntimeError/invalidResponse(operation:reason:)`` on a header that is not Docker's.
    public mutating func feed(_ bytes: some Collection<UInt8>, operation: String) throws -> [LogChunk] {
        var chunks: [LogChunk] = []
        var index = bytes.startIndex
        while index != bytes.endIndex {
            if remaining == 0 {
                header.append(bytes[index])
                index = bytes.index(after: index)
                guard header.count == 8 else { continue }
                guard let kind = LogChunk.Stream(rawValue: header[0]), header[1] == 0, header[2] == 0, header[3] == 0 else {
                    throw RuntimeError.invalidResponse(operation: operation, reason: "not a multiplexed log stream")
                }
                stream = kind
                remaining = header[4...7].reduce(0) { $0 << 8 | Int($1) }
                header.removeAll(keepingCapacity: true)
            } else {
                let available = bytes.distance(from: index, to: bytes.endIndex)
                let end = bytes.index(index, offsetBy: min(available, remaining))
                let payload = Array(bytes[index..<end])
                remaining -= payload.count
                index = end
                if let last = chunks.last, last.stream == stream {
                    chunks[chunks.count - 1].bytes += payload
                } else {
                    chunks.append(LogChunk(stream: stream, bytes: payload))
                }
            }
        }
        return chunks
    }
}
