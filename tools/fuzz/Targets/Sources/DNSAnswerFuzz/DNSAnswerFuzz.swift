import OrchCore

/// libFuzzer's entry point for the DNS responder's codec (`DNSAnswer`, the manager's
/// `--dns` and every worker's container resolver). An input is one UDP datagram; the zone's
/// contents come from a lookup that derives a service's endpoints from its name, so that a
/// name chosen by the fuzzer reaches every branch: no endpoints, unready ones, addresses that
/// are not IPv4, ports out of range, and enough endpoints to overflow 512 bytes.
/// A broken rule traps, which libFuzzer reports as a crash with the input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let query = Array(UnsafeBufferPointer(start: data, count: size))
    let response = DNSAnswer.respond(to: query, lookup: lookup(_:))
    let isQuery = query.count >= 12 && query[2] & 0x80 == 0
    check((response != nil) == isQuery, "a response is due exactly to a query of 12 bytes or more (query \(query.count) bytes, response \(response.map { "\($0.count) bytes" } ?? "none"))")
    if let service = DNSAnswer.queriedService(query) {
        check(DNSAnswer.isInZone(query), "\(service).service.orch is asked about but the query is not in the zone")
    }
    if let response { checkResponse(response, to: query) }
    return 0
}

/// The endpoints of `name`: none for names whose FNV-1a hash is divisible by 7 (no such
/// service), else up to 60 endpoints, a few of them unready, not IPv4, or without a port.
func lookup(_ name: String) -> [ServiceEndpoint]? {
    var hash: UInt32 = 2_166_136_261
    for byte in name.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
    guard hash % 7 != 0 else { return nil }
    let count = Int(hash % 61)
    return (0..<count).map { index in
        let mixed = hash &+ UInt32(index) &* 2_654_435_761
        let address = switch mixed % 11 {
        case 0: "not-an-address"
        case 1: "::1"
        case 2: "10.0.0.256"
        default: "10.\(mixed >> 24).\((mixed >> 16) & 0xFF).\((mixed >> 8) & 0xFF)"
        }
        let port = switch mixed % 13 {
        case 0: 70_000
        case 1: -1
        default: Int(mixed % 65_536)
        }
        let ports = mixed % 17 == 0 ? [] : [PublishedPort(containerPort: 80, protocol: mixed % 19 == 0 ? .udp : .tcp, hostIP: address, hostPort: port)]
        let health: TaskHealth = [.none, .healthy, .healthy, .starting, .unhealthy][Int(mixed % 5)]
        return ServiceEndpoint(task: TaskID(rawValue: "t\(index)"), slot: index, version: 1, node: NodeID(rawValue: "n"), nodeName: nil,
                               address: address, ports: ports, health: health, draining: mixed % 23 == 0)
    }
}

/// A response must be a well-formed DNS message of at most 512 bytes that answers this query:
/// its id and opcode, the question echoed byte for byte, records that parse to the last byte
/// and agree with the counts, no records with an error, and for a service's A question (not
/// truncated) exactly its ready endpoints' distinct IPv4 addresses.
func checkResponse(_ response: [UInt8], to query: [UInt8]) {
    check(response.count >= 12 && response.count <= 512, "a response of \(response.count) bytes")
    check(response[0] == query[0] && response[1] == query[1], "the id is not echoed")
    let flags = u16(response, 2)
    let queryFlags = u16(query, 2)
    check(flags & 0x8000 != 0, "QR is not set")
    check((flags >> 11) & 0xF == (queryFlags >> 11) & 0xF, "the opcode is not echoed")
    check(flags & 0x0100 == queryFlags & 0x0100, "RD is not echoed")
    let code = flags & 0xF
    check([0, 1, 3, 4, 5].contains(code), "response code \(code)")
    let questions = u16(response, 4), answers = u16(response, 6), authority = u16(response, 8), additional = u16(response, 10)
    check(authority == 0, "\(authority) authority records")
    var position = 12
    if questions == 1 {
        guard let (_, end) = DNSAnswer.parseQuestion(query, at: 12) else { fail("a question echoed from a query whose question does not parse") }
        let echoed = end - 12
        check(response.count >= 12 + echoed && Array(response[12..<12 + echoed]) == Array(query[12..<end]), "the question is not echoed as asked")
        position = end
    } else {
        check(questions == 0, "\(questions) questions")
        check(code == 1 || code == 4, "no question echoed with response code \(code)")
    }
    if code != 0 { check(answers == 0 && additional == 0, "records with response code \(code)") }
    if flags & 0x0200 != 0 { check(code == 0 && additional == 0, "truncated, yet code \(code) and \(additional) additional records") }

    var addresses = Set<[UInt8]>()
    for index in 0..<(answers + additional) {
        let inAnswers = index < answers
        // A name: the question's (a pointer, in answers) or spelled out (an SRV target's A record).
        guard position < response.count else { fail("record \(index) of \(answers + additional) is missing") }
        if response[position] == 0xC0 {
            check(questions == 1 && position + 1 < response.count && response[position + 1] == 12, "a pointer that is not to the question")
            position += 2
        } else {
            check(!inAnswers, "an answer whose name is not a pointer to the question")
            position = skipName(response, at: position)
        }
        guard position + 10 <= response.count else { fail("record \(index) is cut short") }
        let type = u16(response, position), rclass = u16(response, position + 2)
        let ttl = Array(response[position + 4..<position + 8]), length = u16(response, position + 8)
        check(rclass == 1 && ttl == [0, 0, 0, 0], "record \(index): class \(rclass), TTL \(ttl)")
        position += 10
        guard position + length <= response.count else { fail("record \(index)'s data runs past the end") }
        switch type {
        case 1:
            check(length == 4, "an A record of \(length) bytes")
            if inAnswers { addresses.insert(Array(response[position..<position + 4])) }
        case 33:
            check(inAnswers && length > 6 && skipName(response, at: position + 6) == position + length, "an SRV record that does not end with its target")
        default:
            fail("a record of type \(type)")
        }
        position += length
    }
    check(position == response.count, "\(response.count - position) bytes after the last record")

    // A service's A question, answered in full: exactly the distinct addresses of its ready endpoints.
    if code == 0, flags & 0x0200 == 0, let service = DNSAnswer.queriedService(query), let (question, _) = DNSAnswer.parseQuestion(query, at: 12),
       question.type == 1, let endpoints = lookup(service) {
        let expected = Set(endpoints.filter(\.ready).compactMap { DNSAnswer.ipv4($0.address) })
        check(addresses == expected, "A answers for \(service): \(addresses.count) addresses, \(expected.count) ready")
    }
}

/// Where the uncompressed name at `position` ends; traps on a name that does not end.
func skipName(_ bytes: [UInt8], at start: Int) -> Int {
    var position = start
    while true {
        guard position < bytes.count else { fail("a name runs past the end") }
        let length = Int(bytes[position])
        position += 1
        if length == 0 { return position }
        check(length < 64, "a label of \(length) bytes")
        position += length
    }
}

func u16(_ bytes: [UInt8], _ at: Int) -> Int { Int(bytes[at]) << 8 | Int(bytes[at + 1]) }

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fail(message()) }
}

func fail(_ message: String) -> Never {
    fatalError("DNSAnswerFuzz: \(message)")
}
