import OrchWorker
import Testing

@Suite struct AdvertiseAddressTests {
    @Test func theAdvertiseAddressDefaultsToTheHostOfTheHTTPAPI() throws {
        #expect(try WorkerConfiguration.advertiseAddress(nil, httpHost: "127.0.0.7") == "127.0.0.7")
        #expect(try WorkerConfiguration.advertiseAddress(nil, httpHost: "0.0.0.0") == "127.0.0.1")
        #expect(try WorkerConfiguration.advertiseAddress("10.0.0.5", httpHost: "0.0.0.0") == "10.0.0.5")
        #expect(throws: WorkerError.self) { try WorkerConfiguration.advertiseAddress("host", httpHost: "127.0.0.1") }
    }
}
