import NIOCore
import NIOEmbedded
import OrchCore
@testable import OrchWire
import Testing

@Suite struct FramingTests {
    func channel(maximumFrameBytes: Int = Frame.defaultMaximumBytes) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addWireHandlers(maximumFrameBytes: maximumFrameBytes)
        return channel
    }

    /// Every valid vector, in file order, as one byte stream.
    func stream() throws -> (bytes: [UInt8], messages: [WireMessage]) {
        let names = try vectorNames(vectorsDirectory)
        let bytes = try names.flatMap { try vectorBytes(vectorsDirectory.appendingPathComponent("\($0).hex")) }
        return (bytes, names.map { expectedMessages[$0]! })
    }

    func readAll(_ channel: EmbeddedChannel) throws -> [WireMessage] {
        var messages: [WireMessage] = []
        while let message = try channel.readInbound(as: WireMessage.self) { messages.append(message) }
        return messages
    }

    @Test func aListReservesNoMoreMemoryThanTheBytesReceived() throws {
        // A 1 MiB task_list announcing 1,048,571 entries of 48 bytes each in memory: the
        // reservation is bounded by the bytes, not the count (50 MB were reserved before).
        let stride = MemoryLayout<TaskList.Entry>.stride
        let reserved = WireReader.capacityToReserve(count: 1_048_571, bytesLeft: 1 << 20, elementStride: stride)
        #expect(reserved * stride <= 1 << 20)
        #expect(WireReader.capacityToReserve(count: 3, bytesLeft: 1 << 20, elementStride: stride) == 3, "a small list is reserved whole")
        // And the frame itself is still refused as truncated, not trapped on.
        var body = ByteBuffer()
        body.writeInteger(WireMessage.Kind.taskList.rawValue)
        body.writeInteger(UInt32(1_048_571))
        body.writeBytes([UInt8](repeating: 0, count: (1 << 20) - 5))
        var frame = ByteBuffer()
        frame.writeInteger(UInt32(body.readableBytes))
        frame.writeImmutableBuffer(body)
        #expect(throws: WireError.self) { _ = try Frame.decode(from: &frame, maximumBytes: 2 << 20) }
    }

    @Test func manyFramesInOneReadComeOutInOrder() throws {
        let (bytes, expected) = try stream()
        let channel = try channel()
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        #expect(try readAll(channel) == expected)
        #expect(try channel.finish().isClean)
    }

    @Test func framesSplitAtEveryByteBoundaryComeOutWhole() throws {
        let (bytes, expected) = try stream()
        for split in 0...bytes.count {
            let channel = try channel()
            try channel.writeInbound(ByteBuffer(bytes: bytes[..<split]))
            try channel.writeInbound(ByteBuffer(bytes: bytes[split...]))
            #expect(try readAll(channel) == expected, "split at \(split)")
            #expect(try channel.finish().isClean)
        }
    }

    @Test func framesDrippedByteByByteComeOutWhole() throws {
        let (bytes, expected) = try stream()
        let channel = try channel()
        var seen: [WireMessage] = []
        for byte in bytes {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            seen += try readAll(channel)
        }
        #expect(seen == expected)
        #expect(try channel.finish().isClean)
    }

    @Test func aFourGibibyteLengthIsAnsweredWithAnErrorFrameAtOnce() throws {
        let channel = try channel()
        #expect(throws: WireError.frameTooLarge(length: UInt32.max, limit: Frame.defaultMaximumBytes)) {
            try channel.writeInbound(ByteBuffer(bytes: [0xff, 0xff, 0xff, 0xff]))
        }
        var answer = try #require(try channel.readOutbound(as: ByteBuffer.self))
        let message = try Frame.decode(from: &answer)
        guard case .error(let error)? = message else { Issue.record("expected an error frame, got \(String(describing: message))"); return }
        #expect(error.code == .frameTooLarge)
        #expect(!channel.isActive, "the connection is closed after the error frame")
    }

    @Test func aFrameOverAConfiguredLimitIsRefused() throws {
        let channel = try channel(maximumFrameBytes: 16)
        let big = Frame.encode(.logChunk(LogData(streamID: 1, stream: .stdout, bytes: Array(repeating: 0x61, count: 64))))
        #expect(throws: WireError.self) { try channel.writeInbound(big) }
        #expect(!channel.isActive)
    }

    @Test func anUnknownTypeIsAnsweredWithItsCode() throws {
        let channel = try channel()
        #expect(throws: WireError.unknownType(0x99)) { try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 1, 0x99])) }
        var answer = try #require(try channel.readOutbound(as: ByteBuffer.self))
        guard case .error(let error)? = try Frame.decode(from: &answer) else { Issue.record("expected an error frame"); return }
        #expect(error.code == .unknownType)
        #expect(!channel.isActive)
    }

    @Test func messagesWrittenComeOutAsFrames() throws {
        let channel = try channel()
        let message = WireMessage.ack(Ack(statusID: 5))
        try channel.writeOutbound(message)
        let bytes = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(bytes.readableBytesView) == (try vectorBytes(vectorsDirectory.appendingPathComponent("ack.hex"))))
        #expect(try channel.finish().isClean)
    }
}
