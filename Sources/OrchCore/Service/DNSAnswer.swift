/// The DNS answers for the zone `service.orch.` (RFC 1035 messages, RFC 2782 SRV), pure:
/// bytes of a query and a lookup in, bytes of the response out.
///
/// - `NAME.service.orch` A: the addresses of the service's ready endpoints; SRV: one record
///   per ready endpoint (its address, as `HEX.addr.service.orch`, and its published port),
///   with the target's A record in the additional section.
/// - `HEX.addr.service.orch` A: the address that HEX spells (the SRV targets).
/// - A service that does not exist: NXDOMAIN; a name outside the zone: REFUSED; another
///   type of a name that exists: no answers (NOERROR). TTL 0: an answer is never stale.
/// - A query that cannot be read: FORMERR when its header can be, else no answer at all.
///   An answer longer than 512 bytes is cut at a whole record and marked truncated (TC).
public enum DNSAnswer {
    public static let zone = ["service", "orch"]
    static let maximumUDP = 512

    public enum RecordType: UInt16, Sendable {
        case a = 1, srv = 33, aaaa = 28, any = 255
    }

    public enum ResponseCode: UInt8, Sendable {
        case noError = 0, formatError = 1, serverFailure = 2, nameError = 3, notImplemented = 4, refused = 5
    }

    /// What the zone holds for one service name: nil when there is no such service.
    public typealias Lookup = (String) -> [ServiceEndpoint]?

    /// A parsed question.
    public struct Question: Sendable, Hashable {
        public var labels: [String]
        public var type: UInt16
        public var `class`: UInt16
    }

    /// The response to `query`, or nil when it deserves none (not a query, or too short to say to whom).
    public static func respond(to query: [UInt8], lookup: Lookup) -> [UInt8]? {
        guard query.count >= 12 else { return nil }
        let id = UInt16(query[0]) << 8 | UInt16(query[1])
        let flags = UInt16(query[2]) << 8 | UInt16(query[3])
        guard flags & 0x8000 == 0 else { return nil }  // a response: never answered
        let opcode = UInt8((flags >> 11) & 0xF)
        let recursionDesired = flags & 0x0100 != 0
        func header(_ code: ResponseCode, answers: Int = 0, additional: Int = 0, questions: Int, truncated: Bool = false) -> [UInt8] {
            var value: UInt16 = 0x8000 | UInt16(opcode) << 11 | 0x0400  // QR, opcode, AA
            if truncated { value |= 0x0200 }
            if recursionDesired { value |= 0x0100 }
            value |= UInt16(code.rawValue)
            return be16(id) + be16(value) + be16(UInt16(questions)) + be16(UInt16(answers)) + be16(0) + be16(UInt16(additional))
        }
        guard opcode == 0 else { return header(.notImplemented, questions: 0) }
        let count = Int(query[4]) << 8 | Int(query[5])
        guard count == 1, let (question, end) = parseQuestion(query, at: 12) else { return header(.formatError, questions: 0) }
        let echoed = Array(query[12..<end])

        let lower = question.labels.map { $0.lowercased() }
        guard question.class == 1 || question.class == 255, lower.count >= zone.count, Array(lower.suffix(zone.count)) == zone else {
            return header(.refused, questions: 1) + echoed
        }
        let inside = Array(lower.dropLast(zone.count))
        var answers: [[UInt8]] = []
        var additional: [[UInt8]] = []
        let type = question.type
        let wantsA = type == RecordType.a.rawValue || type == RecordType.any.rawValue
        let wantsSRV = type == RecordType.srv.rawValue || type == RecordType.any.rawValue
        switch inside.count {
        case 0:
            break  // the zone's apex: it exists, and holds no records of its own
        case 2 where inside[1] == "addr":
            guard let address = address(hex: inside[0]) else { return header(.nameError, questions: 1) + echoed }
            if wantsA { answers.append(record(name: pointer, type: .a, data: address)) }
        case 1:
            guard let endpoints = lookup(inside[0]) else { return header(.nameError, questions: 1) + echoed }
            var seen = Set<[UInt8]>()
            let ready = endpoints.filter(\.ready).compactMap { endpoint in ipv4(endpoint.address).map { (endpoint, $0) } }
            if wantsA {
                for (_, address) in ready where seen.insert(address).inserted {
                    answers.append(record(name: pointer, type: .a, data: address))
                }
            }
            if wantsSRV {
                var targets = Set<[UInt8]>()
                for (endpoint, address) in ready {
                    guard let port = endpoint.hostPort().flatMap(UInt16.init(exactly:)) else { continue }
                    let target = name(labels: [hex(address), "addr"] + zone)
                    answers.append(record(name: pointer, type: .srv, data: be16(1) + be16(1) + be16(port) + target))
                    if targets.insert(address).inserted { additional.append(record(name: target, type: .a, data: address)) }
                }
            }
        default:
            return header(.nameError, questions: 1) + echoed
        }
        // Whole records only, within 512 bytes: the answers, then (when they all fit) the additional ones.
        var body: [UInt8] = []
        var size = 12 + echoed.count
        var fitted = 0
        for answer in answers {
            guard size + answer.count <= maximumUDP else { break }
            body += answer
            size += answer.count
            fitted += 1
        }
        var extra = 0
        if fitted == answers.count {
            for record in additional {
                guard size + record.count <= maximumUDP else { break }
                body += record
                size += record.count
                extra += 1
            }
        }
        return header(.noError, answers: fitted, additional: extra, questions: 1, truncated: fitted < answers.count) + echoed + body
    }

    /// Whether the query asks about a name in `service.orch.` (a forwarder answers the rest
    /// from elsewhere).
    public static func isInZone(_ query: [UInt8]) -> Bool {
        guard query.count >= 12, let (question, _) = parseQuestion(query, at: 12) else { return false }
        let lower = question.labels.map { $0.lowercased() }
        return lower.count >= zone.count && Array(lower.suffix(zone.count)) == zone
    }

    /// The service a query asks about (`NAME.service.orch`), if it asks about one: what
    /// the lookup will be asked for, to be fetched before ``respond(to:lookup:)``.
    public static func queriedService(_ query: [UInt8]) -> String? {
        guard query.count >= 12, let (question, _) = parseQuestion(query, at: 12) else { return nil }
        let lower = question.labels.map { $0.lowercased() }
        guard lower.count == zone.count + 1, Array(lower.suffix(zone.count)) == zone else { return nil }
        return lower[0]
    }

    /// The question at `offset` and where it ends; nil when it cannot be read. Names in a
    /// query are not compressed: a pointer is refused.
    public static func parseQuestion(_ bytes: [UInt8], at offset: Int) -> (Question, end: Int)? {
        var labels: [String] = []
        var position = offset
        var total = 0
        while true {
            guard position < bytes.count else { return nil }
            let length = Int(bytes[position])
            position += 1
            if length == 0 { break }
            guard length < 64, position + length <= bytes.count else { return nil }
            total += length + 1
            guard total <= 255 else { return nil }
            labels.append(String(decoding: bytes[position..<position + length], as: UTF8.self))
            position += length
        }
        guard position + 4 <= bytes.count else { return nil }
        let type = UInt16(bytes[position]) << 8 | UInt16(bytes[position + 1])
        let `class` = UInt16(bytes[position + 2]) << 8 | UInt16(bytes[position + 3])
        return (Question(labels: labels, type: type, class: `class`), position + 4)
    }

    /// A compression pointer to the question's name (at offset 12).
    static let pointer: [UInt8] = [0xC0, 0x0C]

    static func record(name: [UInt8], type: RecordType, data: [UInt8]) -> [UInt8] {
        name + be16(type.rawValue) + be16(1) + [0, 0, 0, 0] + be16(UInt16(data.count)) + data
    }

    static func name(labels: [String]) -> [UInt8] {
        labels.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0]
    }

    static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }

    /// `10.0.0.5` as its four bytes; nil for anything else.
    public static func ipv4(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let bytes = parts.compactMap { UInt8($0) }
        return bytes.count == 4 ? bytes : nil
    }

    static func hex(_ address: [UInt8]) -> String {
        address.map { byte in
            let digits = Array("0123456789abcdef")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
        }.joined()
    }

    static func address(hex text: String) -> [UInt8]? {
        guard text.count == 8 else { return nil }
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            guard let byte = UInt8(text[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }
}
