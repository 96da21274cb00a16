import Foundation
import OrchCore
import OrchRuntime

/// Copies of ended attempts' output, kept when their containers are removed, so that
/// `orchctl logs --previous` can show why a crash-looping or stopped task ended (WIRE.md,
/// "An ended attempt's output outlives its container").
///
/// One file per task in `directory`, `TASK.out`, holding its newest removed attempt: a
/// header line `orch-output ATTEMPT`, then records of `u8 stream`, `u32 length` (big
/// endian) and the bytes. At most the last ``maximumBytes`` of output are kept, of at most
/// ``maximumTasks`` tasks (the oldest copies go first). Files are written whole to a
/// temporary name and renamed: a crash leaves the old copy or the new one, never half.
public struct KeptOutput: Sendable {
    public static let maximumBytes = 1 << 20
    public static let maximumTasks = 256

    public let directory: String
    let maximumTasks: Int

    public init(directory: String, maximumTasks: Int = KeptOutput.maximumTasks) {
        self.directory = directory
        self.maximumTasks = maximumTasks
    }

    /// Keeps `chunks` (the whole output, as read) as the copy of `attempt` of `task`: its
    /// last ``maximumBytes``. An older attempt's copy is replaced; a newer one is left.
    public func keep(_ chunks: [LogChunk], task: TaskID, attempt: UInt64) throws {
        if let held = heldAttempt(of: task), held > attempt { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var data = Data("orch-output \(attempt)\n".utf8)
        for chunk in Self.last(Self.maximumBytes, of: chunks) {
            data.append(chunk.stream.rawValue)
            withUnsafeBytes(of: UInt32(chunk.bytes.count).bigEndian) { data.append(contentsOf: $0) }
            data.append(contentsOf: chunk.bytes)
        }
        let path = self.path(of: task)
        let temporary = path + ".new"
        try data.write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else { throw CocoaError(.fileWriteUnknown) }
        try trim()
    }

    /// The kept output of `attempt` of `task`, nil when none is kept (or another attempt's is).
    public func output(of task: TaskID, attempt: UInt64) -> [LogChunk]? {
        guard let data = FileManager.default.contents(atPath: path(of: task)) else { return nil }
        let bytes = [UInt8](data)
        guard let newline = bytes.firstIndex(of: 0x0A),
              let header = String(validating: bytes[..<newline], as: UTF8.self),
              header == "orch-output \(attempt)" else { return nil }
        var chunks: [LogChunk] = []
        var index = newline + 1
        while index + 5 <= bytes.count {
            let stream = LogChunk.Stream(rawValue: bytes[index]) ?? .stdout
            let length = bytes[(index + 1)..<(index + 5)].reduce(0) { $0 << 8 | Int($1) }
            index += 5
            guard index + length <= bytes.count else { break }   // cut short: what is whole is served
            chunks.append(LogChunk(stream: stream, bytes: Array(bytes[index..<(index + length)])))
            index += length
        }
        return chunks
    }

    /// The attempt whose copy is kept for `task`.
    func heldAttempt(of task: TaskID) -> UInt64? {
        guard let handle = FileHandle(forReadingAtPath: path(of: task)) else { return nil }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: 40),
              let line = String(decoding: head, as: UTF8.self).split(separator: "\n").first,
              line.hasPrefix("orch-output ") else { return nil }
        return UInt64(line.dropFirst("orch-output ".count))
    }

    /// The last `limit` bytes of `chunks`: the first chunk kept may be cut at its start.
    static func last(_ limit: Int, of chunks: [LogChunk]) -> [LogChunk] {
        var kept: [LogChunk] = []
        var room = limit
        for chunk in chunks.reversed() {
            guard room > 0 else { break }
            if chunk.bytes.count <= room {
                kept.append(chunk)
                room -= chunk.bytes.count
            } else {
                kept.append(LogChunk(stream: chunk.stream, bytes: Array(chunk.bytes.suffix(room))))
                room = 0
            }
        }
        return kept.reversed()
    }

    /// The last `lines` lines of `chunks` (as the engine's `tail`: a final newline ends the
    /// last line rather than starting another).
    public static func tail(_ lines: Int, of chunks: [LogChunk]) -> [LogChunk] {
        guard lines > 0 else { return [] }
        var wanted = lines
        var atEnd = true   // a newline that ends the output ends its last line
        for index in chunks.indices.reversed() {
            let bytes = chunks[index].bytes
            for position in bytes.indices.reversed() {
                defer { atEnd = false }
                guard bytes[position] == 0x0A, !atEnd else { continue }
                wanted -= 1
                if wanted == 0 {
                    let rest = Array(bytes[(position + 1)...])
                    return (rest.isEmpty ? [] : [LogChunk(stream: chunks[index].stream, bytes: rest)]) + chunks[(index + 1)...]
                }
            }
        }
        return chunks
    }

    /// Removes the oldest copies beyond ``maximumTasks``.
    private func trim() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".out") }
        guard files.count > maximumTasks else { return }
        let dated = files.map { name -> (name: String, modified: Date) in
            let attributes = try? FileManager.default.attributesOfItem(atPath: "\(directory)/\(name)")
            return (name, attributes?[.modificationDate] as? Date ?? .distantPast)
        }
        for old in dated.sorted(by: { ($0.modified, $0.name) < ($1.modified, $1.name) }).prefix(files.count - maximumTasks) {
            try? FileManager.default.removeItem(atPath: "\(directory)/\(old.name)")
        }
    }

    /// The file of `task`: its id with every byte that is not a letter, digit, `-` or `_`
    /// written as `%XX`, so that no id names a path elsewhere.
    func path(of task: TaskID) -> String {
        var name = ""
        for byte in task.rawValue.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"):
                name.append(Character(UnicodeScalar(byte)))
            default:
                name += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return "\(directory)/\(name).out"
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
