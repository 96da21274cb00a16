import NIOCore

/// Reads the primitive types of WIRE.md from a frame's payload, with typed errors and no
/// allocation larger than the bytes actually present.
struct WireReader {
    var buffer: ByteBuffer

    init(_ buffer: ByteBuffer) { self.buffer = buffer }

    mutating func u8(_ field: String) throws(WireError) -> UInt8 { try integer(field) }
    mutating func u16(_ field: String) throws(WireError) -> UInt16 { try integer(field) }
    mutating func u32(_ field: String) throws(WireError) -> UInt32 { try integer(field) }
    mutating func u64(_ field: String) throws(WireError) -> UInt64 { try integer(field) }
    mutating func i32(_ field: String) throws(WireError) -> Int32 { try integer(field) }

    private mutating func integer<T: FixedWidthInteger>(_ field: String) throws(WireError) -> T {
        guard let value = buffer.readInteger(endianness: .big, as: T.self) else { throw .truncated(field: field) }
        return value
    }

    mutating func bool(_ field: String) throws(WireError) -> Bool {
        switch try u8(field) {
        case 0: return false
        case 1: return true
        case let other: throw .invalidValue(field: field, value: UInt64(other))
        }
    }

    /// `u32 length | bytes`.
    mutating func bytes(_ field: String) throws(WireError) -> [UInt8] {
        let count = try u32(field)
        guard Int(count) <= buffer.readableBytes else {
            throw .listTooLong(field: field, count: count)
        }
        return buffer.readBytes(length: Int(count))!
    }

    /// `u32 length | UTF-8 bytes`.
    mutating func string(_ field: String) throws(WireError) -> String {
        let bytes = try bytes(field)
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .invalidUTF8(field: field) }
        return text
    }

    /// `u8 tag (0 absent, 1 present) | value`.
    mutating func optional<T>(_ field: String, _ read: (inout WireReader) throws(WireError) -> T) throws(WireError) -> T? {
        try bool(field) ? try read(&self) : nil
    }

    /// `u32 count | elements`. Every element takes at least one byte, so a count larger than
    /// the bytes left is refused before anything is allocated.
    mutating func list<T>(_ field: String, _ read: (inout WireReader) throws(WireError) -> T) throws(WireError) -> [T] {
        let count = try u32(field)
        guard Int(count) <= buffer.readableBytes else { throw .listTooLong(field: field, count: count) }
        var elements: [T] = []
        elements.reserveCapacity(Self.capacityToReserve(count: Int(count), bytesLeft: buffer.readableBytes, elementStride: MemoryLayout<T>.stride))
        for _ in 0..<count { elements.append(try read(&self)) }
        return elements
    }

    /// How many elements to reserve for a list announcing `count`: never more memory than the
    /// bytes received (an element in memory is larger than its smallest form on the wire, so
    /// a frame announcing a million entries would otherwise reserve 48 times its size).
    static func capacityToReserve(count: Int, bytesLeft: Int, elementStride: Int) -> Int {
        min(count, bytesLeft / max(elementStride, 1))
    }

    /// A list of string pairs; a later duplicate key wins.
    mutating func map(_ field: String) throws(WireError) -> [String: String] {
        let pairs = try list(field) { (reader: inout WireReader) throws(WireError) in
            (try reader.string(field + ".key"), try reader.string(field + ".value"))
        }
        return Dictionary(pairs) { _, last in last }
    }

    /// A `u8` mapped to an enum.
    mutating func `enum`<T: RawRepresentable>(_ field: String, as: T.Type) throws(WireError) -> T where T.RawValue == UInt8 {
        let raw = try u8(field)
        guard let value = T(rawValue: raw) else { throw .invalidValue(field: field, value: UInt64(raw)) }
        return value
    }

    /// Durations travel as `u64` nanoseconds.
    mutating func duration(_ field: String) throws(WireError) -> Duration {
        let nanoseconds = try u64(field)
        guard nanoseconds <= UInt64(Int64.max) else { throw .invalidValue(field: field, value: nanoseconds) }
        return .nanoseconds(Int64(nanoseconds))
    }
}

/// Writes the primitive types of WIRE.md.
struct WireWriter {
    var buffer: ByteBuffer

    mutating func u8(_ value: UInt8) { buffer.writeInteger(value) }
    mutating func u16(_ value: UInt16) { buffer.writeInteger(value, endianness: .big) }
    mutating func u32(_ value: UInt32) { buffer.writeInteger(value, endianness: .big) }
    mutating func u64(_ value: UInt64) { buffer.writeInteger(value, endianness: .big) }
    mutating func i32(_ value: Int32) { buffer.writeInteger(value, endianness: .big) }
    mutating func bool(_ value: Bool) { u8(value ? 1 : 0) }

    mutating func bytes(_ value: some Collection<UInt8>) {
        u32(UInt32(value.count))
        buffer.writeBytes(value)
    }

    mutating func string(_ value: String) { bytes(Array(value.utf8)) }

    mutating func optional<T>(_ value: T?, _ write: (inout WireWriter, T) -> Void) {
        if let value {
            u8(1)
            write(&self, value)
        } else {
            u8(0)
        }
    }

    mutating func list<T>(_ values: [T], _ write: (inout WireWriter, T) -> Void) {
        u32(UInt32(values.count))
        for value in values { write(&self, value) }
    }

    /// Pairs sorted by key, so that equal maps encode to equal bytes.
    mutating func map(_ values: [String: String]) {
        list(values.sorted { $0.key < $1.key }) { writer, pair in
            writer.string(pair.key)
            writer.string(pair.value)
        }
    }

    mutating func duration(_ value: Duration) { u64(UInt64(max(0, value.nanoseconds))) }
}
