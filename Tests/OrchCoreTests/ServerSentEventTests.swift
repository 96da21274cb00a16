import OrchCore
import Testing

/// The events stream's reader: the same events whatever the cut of the bytes, comments and
/// unknown fields skipped, several data lines joined, CRLF taken as LF.
@Suite struct ServerSentEventTests {
    static let stream = ": events after 3\n\nid: 4\nevent: task\ndata: {\"a\":1}\n\n: keep-alive\n\nid: 5\r\nevent: node\r\ndata: one\r\ndata: two\r\nretry: 10\r\n\r\nid: 6\n\n"

    @Test func everyCutGivesTheSameEvents() {
        var whole = ServerSentEventReader()
        let expected = whole.feed(Array(Self.stream.utf8))
        #expect(expected.map(\.id) == ["4", "5", "6"])
        #expect(expected[0].event == "task" && expected[0].data == "{\"a\":1}")
        #expect(expected[1].event == "node" && expected[1].data == "one\ntwo")
        #expect(expected[2].event == "message" && expected[2].data.isEmpty, "an id alone moves the reader on")
        let bytes = Array(Self.stream.utf8)
        for cut in 0...bytes.count {
            var reader = ServerSentEventReader()
            let events = reader.feed(bytes[..<cut]) + reader.feed(bytes[cut...])
            #expect(events == expected, "cut at \(cut)")
        }
    }

    @Test func anUnfinishedEventIsNotGiven() {
        var reader = ServerSentEventReader()
        #expect(reader.feed(Array("id: 1\nevent: task\ndata: x\n".utf8)).isEmpty)
        #expect(reader.feed(Array("\n".utf8)).map(\.data) == ["x"])
    }
}
