import Foundation
import OrchCore
import Testing

/// The DNS answers of the zone service.orch, from queries captured from dnspython 2.7
/// (`dns.message.make_query(NAME, TYPE, id=0x1234).to_wire()`) and dig 9.18.
@Suite struct DNSAnswerTests {
    static func bytes(_ hex: String) -> [UInt8] {
        var result: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            result.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return result
    }

    static let webA = bytes("123401000001000000000000037765620773657276696365046f7263680000010001")
    static let webSRV = bytes("123401000001000000000000037765620773657276696365046f7263680000210001")
    static let nopeA = bytes("123401000001000000000000046e6f70650773657276696365046f7263680000010001")
    static let exampleWithEDNS = bytes("123401000001000000000001076578616d706c6503636f6d000001000100002904d0000000000000")
    static let webMixedCase = bytes("123401000001000000000000035745420753657276696365044f7263680000010001")

    static func endpoint(_ task: String, _ address: String, port: Int, ready: Bool = true) -> ServiceEndpoint {
        ServiceEndpoint(
            task: TaskID(rawValue: task), slot: 1, version: 1, node: NodeID(rawValue: "n"), nodeName: nil, address: address,
            ports: [PublishedPort(containerPort: 8080, protocol: .tcp, hostIP: address, hostPort: port)],
            health: ready ? .healthy : .unhealthy, draining: false)
    }

    static func catalog(_ name: String) -> [ServiceEndpoint]? {
        name == "web" ? [endpoint("a", "127.0.0.2", port: 32001), endpoint("b", "127.0.0.3", port: 32002),
                         endpoint("c", "127.0.0.4", port: 32003, ready: false), endpoint("d", "127.0.0.2", port: 32004)] : nil
    }

    /// The header's fields: id, flags, and the four counts.
    static func header(_ response: [UInt8]) -> (id: UInt16, flags: UInt16, counts: [Int]) {
        func u16(_ at: Int) -> Int { Int(response[at]) << 8 | Int(response[at + 1]) }
        return (UInt16(u16(0)), UInt16(u16(2)), [u16(4), u16(6), u16(8), u16(10)])
    }

    @Test func anAQueryIsAnsweredWithTheReadyEndpointsAddressesOnce() throws {
        let response = try #require(DNSAnswer.respond(to: Self.webA, lookup: Self.catalog(_:)))
        let header = Self.header(response)
        #expect(header.id == 0x1234)
        #expect(header.flags & 0x8000 != 0 && header.flags & 0x0400 != 0, "a response, authoritative")
        #expect(header.flags & 0x000F == 0, "NOERROR")
        #expect(header.flags & 0x0100 != 0, "RD echoed")
        #expect(header.counts == [1, 2, 0, 0], "127.0.0.2 (twice ready) once, 127.0.0.3; not the unhealthy 127.0.0.4")
        // After the echoed question: two A records pointing at it, TTL 0.
        let question = Self.webA.count - 12
        let first = Array(response[(12 + question)...].prefix(16))
        #expect(first == [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 2])
        #expect(Array(response.suffix(4)) == [127, 0, 0, 3])
        #expect(Array(response[12..<(12 + question)]) == Array(Self.webA[12...]), "the question echoed as asked")
    }

    @Test func anSRVQueryGivesEachReadyEndpointsPortAndItsTargetsAddress() throws {
        let response = try #require(DNSAnswer.respond(to: Self.webSRV, lookup: Self.catalog(_:)))
        let header = Self.header(response)
        #expect(header.counts == [1, 3, 0, 2], "three ready endpoints; two distinct targets in the additional section")
        let question = Self.webSRV.count - 12
        var at = 12 + question
        var ports: [Int] = []
        for _ in 0..<3 {
            #expect(Array(response[at..<(at + 4)]) == [0xC0, 0x0C, 0, 33])
            let length = Int(response[at + 10]) << 8 | Int(response[at + 11])
            let data = Array(response[(at + 12)..<(at + 12 + length)])
            ports.append(Int(data[4]) << 8 | Int(data[5]))
            // The target: 7f000002.addr.service.orch or 7f000003...
            let target = String(decoding: data[7..<15], as: UTF8.self)
            #expect(["7f000002", "7f000003"].contains(target))
            at += 12 + length
        }
        #expect(ports == [32001, 32002, 32004])
    }

    @Test func anUnknownServiceIsNXDOMAINAndANameOutsideTheZoneREFUSED() throws {
        let nope = try #require(DNSAnswer.respond(to: Self.nopeA, lookup: Self.catalog(_:)))
        #expect(Self.header(nope).flags & 0x000F == 3 && Self.header(nope).counts == [1, 0, 0, 0])
        let outside = try #require(DNSAnswer.respond(to: Self.exampleWithEDNS, lookup: Self.catalog(_:)))
        #expect(Self.header(outside).flags & 0x000F == 5 && Self.header(outside).counts == [1, 0, 0, 0])
    }

    @Test func namesAreCaseInsensitiveAndTheQuestionIsEchoedAsAsked() throws {
        #expect(DNSAnswer.queriedService(Self.webMixedCase) == "web")
        let response = try #require(DNSAnswer.respond(to: Self.webMixedCase, lookup: Self.catalog(_:)))
        #expect(Self.header(response).counts[1] == 2)
        #expect(Array(response[12..<(Self.webMixedCase.count)]) == Array(Self.webMixedCase[12...]))
    }

    @Test func theAddressNamesOfSRVTargetsResolve() throws {
        var query = Array(Self.webA[0..<12])
        for label in ["7f000002", "addr", "service", "orch"] { query += [UInt8(label.utf8.count)] + Array(label.utf8) }
        query += [0, 0, 1, 0, 1]
        let response = try #require(DNSAnswer.respond(to: query, lookup: { _ in nil }))
        #expect(Self.header(response).counts == [1, 1, 0, 0] && Array(response.suffix(4)) == [127, 0, 0, 2])
        query[12 + 1] = UInt8(ascii: "z")
        #expect(Self.header(try #require(DNSAnswer.respond(to: query, lookup: { _ in nil }))).flags & 0x000F == 3)
    }

    @Test func manyEndpointsAreCutAtAWholeRecordAndMarkedTruncated() throws {
        let many: DNSAnswer.Lookup = { _ in (1...200).map { Self.endpoint("t\($0)", "10.0.\($0 / 250).\($0 % 250)", port: 30000 + $0) } }
        let response = try #require(DNSAnswer.respond(to: Self.webA, lookup: many))
        let header = Self.header(response)
        #expect(response.count <= 512)
        #expect(header.flags & 0x0200 != 0, "TC")
        #expect(header.counts[1] == (512 - Self.webA.count) / 16 && response.count == Self.webA.count + header.counts[1] * 16)
    }

    @Test func malformedQueriesAreFORMERROrNotAnsweredAndOtherOpcodesNOTIMP() throws {
        #expect(DNSAnswer.respond(to: [1, 2, 3], lookup: Self.catalog(_:)) == nil, "too short to answer")
        var response = Self.webA
        response[2] |= 0x80
        #expect(DNSAnswer.respond(to: response, lookup: Self.catalog(_:)) == nil, "a response is never answered")
        let cut = Array(Self.webA.prefix(20))
        #expect(Self.header(try #require(DNSAnswer.respond(to: cut, lookup: Self.catalog(_:)))).flags & 0x000F == 1)
        var pointer = Array(Self.webA.prefix(12)) + [0xC0, 0x0C, 0, 1, 0, 1]
        #expect(Self.header(try #require(DNSAnswer.respond(to: pointer, lookup: Self.catalog(_:)))).flags & 0x000F == 1, "a pointer in a query")
        pointer = Self.webA
        pointer[5] = 2
        #expect(Self.header(try #require(DNSAnswer.respond(to: pointer, lookup: Self.catalog(_:)))).flags & 0x000F == 1, "two questions")
        var notify = Self.webA
        notify[2] = 0x20  // opcode 4 (NOTIFY)
        #expect(Self.header(try #require(DNSAnswer.respond(to: notify, lookup: Self.catalog(_:)))).flags & 0x000F == 4)
        // Random bytes never crash it.
        var random = SplitMix64(seed: 42)
        for _ in 0..<20_000 {
            let length = Int(random.next() % 80)
            var packet = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if packet.count > 3 { packet[2] &= 0x7F }
            _ = DNSAnswer.respond(to: packet, lookup: Self.catalog(_:))
        }
    }

    /// Found by tools/fuzz (DNSAnswerFuzz): a port beyond 16 bits trapped when the SRV record
    /// was written. Such an endpoint gets no SRV record; its address still answers A.
    @Test func anEndpointWithAPortOutOfRangeGetsNoSRVRecordInsteadOfATrap() throws {
        let lookup: DNSAnswer.Lookup = { name in
            name == "web" ? [Self.endpoint("a", "127.0.0.2", port: 70_000), Self.endpoint("b", "127.0.0.3", port: 32002)] : nil
        }
        let srv = try #require(DNSAnswer.respond(to: Self.webSRV, lookup: lookup))
        #expect(Self.header(srv).counts == [1, 1, 0, 1], "only b's SRV record and its target")
        let a = try #require(DNSAnswer.respond(to: Self.webA, lookup: lookup))
        #expect(Self.header(a).counts == [1, 2, 0, 0])
    }
}
