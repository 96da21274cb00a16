import OrchHTTP
@testable import OrchManager
import Testing

/// `?index=N&wait=D` on GET /services/{name}/endpoints: what the parser takes and what it
/// answers 400 for. The wait's grammar is the API's Duration schema: a unit is required.
@Suite("Blocking query parameters")
struct BlockingQueryTests {
    @Test func noIndexAnswersAtOnceAndAnIndexWaitsThirtySecondsByDefault() throws {
        let now = try RESTGateway.blockingQuery(index: nil, wait: nil)
        #expect(now.index == nil && now.wait == .zero)
        let blocking = try RESTGateway.blockingQuery(index: "7", wait: nil)
        #expect(blocking.index == 7 && blocking.wait == .seconds(30))
        let short = try RESTGateway.blockingQuery(index: "7", wait: "500ms")
        #expect(short.wait == .milliseconds(500))
        let longest = try RESTGateway.blockingQuery(index: "7", wait: "5m")
        #expect(longest.wait == .seconds(300))
        #expect(try RESTGateway.blockingQuery(index: "9223372036854775807", wait: nil).index == UInt64(Int64.max))
    }

    /// `wait=0` (no unit) was taken as 0 s, though the schema's Duration needs one.
    @Test(arguments: ["0", "30", "-1s", "6m", "soon", "", "1.5"])
    func aWaitOutsideTheDurationSchemaIs400(_ text: String) {
        #expect {
            try RESTGateway.blockingQuery(index: "1", wait: text)
        } throws: { error in
            (error as? APIError)?.status == .badRequest && (error as? APIError)?.body.error.code == "invalid_query"
        }
    }

    /// An index past Int64.max (the schema's int64) was taken as a UInt64.
    @Test(arguments: ["x", "-1", "1.0", "", "9223372036854775808"])
    func anIndexThatIsNoWholeNumberIs400(_ text: String) {
        #expect {
            try RESTGateway.blockingQuery(index: text, wait: nil)
        } throws: { error in
            (error as? APIError)?.body.error.code == "invalid_query"
        }
    }
}
