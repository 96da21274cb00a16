/// Reads a stream of server-sent events (`text/event-stream`) as its bytes arrive, in any
/// cut: each blank line ends an event; `id:`, `event:` and `data:` fields fill it (several
/// `data:` lines join with newlines); comments (`: ...`) and unknown fields are skipped.
public struct ServerSentEventReader: Sendable {
    public struct Event: Sendable, Hashable {
        public var id: String?
        public var event: String
        public var data: String
    }

    private var pending: [UInt8] = []
    private var id: String?
    private var event: String?
    private var data: [String] = []
    private var sawField = false

    public init() {}

    /// The events `bytes` completes.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [Event] {
        pending.append(contentsOf: bytes)
        var events: [Event] = []
        var start = 0
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            var end = newline
            if end > start, pending[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            let line = String(decoding: pending[start..<end], as: UTF8.self)
            start = newline + 1
            if line.isEmpty {
                if sawField, id != nil || !data.isEmpty {
                    events.append(Event(id: id, event: event ?? "message", data: data.joined(separator: "\n")))
                }
                event = nil
                data = []
                sawField = false
                continue
            }
            if line.hasPrefix(":") { continue }
            let (field, value) = Self.split(line)
            switch field {
            case "id": id = value
            case "event": event = value
            case "data": data.append(value)
            default: continue
            }
            sawField = true
        }
        pending.removeFirst(start)
        return events
    }

    private static func split(_ line: String) -> (String, String) {
        guard let colon = line.firstIndex(of: ":") else { return (line, "") }
        var value = line[line.index(after: colon)...]
        if value.first == " " { value = value.dropFirst() }
        return (String(line[..<colon]), String(value))
    }
}
