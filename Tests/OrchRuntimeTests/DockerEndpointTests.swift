import OrchCore
@testable import OrchRuntime
import Testing

@Suite struct DockerEndpointTests {
    @Test func noDockerHostMeansTheDefaultSocket() throws {
        #expect(try DockerEndpoint(dockerHost: nil) == .default)
        #expect(try DockerEndpoint(dockerHost: "") == .default)
        #expect(DockerEndpoint.default.url("/v1.41/_ping") == "http+unix://%2Fvar%2Frun%2Fdocker%2Esock/v1.41/_ping")
    }

    @Test func dockerHostIsHonoured() throws {
        #expect(try DockerEndpoint(dockerHost: "unix:///run/user/docker.sock").kind == .unix(path: "/run/user/docker.sock"))
        let tcp = try DockerEndpoint(dockerHost: "tcp://127.0.0.1:2375")
        #expect(tcp.kind == .tcp(host: "127.0.0.1", port: 2375))
        #expect(tcp.url("/_ping") == "http://127.0.0.1:2375/_ping")
    }

    @Test("Malformed DOCKER_HOST values are refused", arguments: ["ssh://host", "unix://relative", "tcp://host", "tcp://:2375", "tcp://h:99999"])
    func malformedDockerHostIsRefused(value: String) {
        #expect(throws: RuntimeError.self) { try DockerEndpoint(dockerHost: value) }
    }

    @Test func imageReferencesSplitIntoNameAndTag() {
        #expect(DockerRuntime.splitReference("busybox") == ("busybox", "latest"))
        #expect(DockerRuntime.splitReference("orch-busybox:nope") == ("orch-busybox", "nope"))
        #expect(DockerRuntime.splitReference("registry:5000/team/app:1.2") == ("registry:5000/team/app", "1.2"))
        #expect(DockerRuntime.splitReference("registry:5000/team/app") == ("registry:5000/team/app", "latest"))
        #expect(DockerRuntime.splitReference("app@sha256:abc") == ("app@sha256:abc", nil))
    }

    @Test func apiVersionsCompareNumerically() {
        #expect(APIVersion("1.9")! < APIVersion("1.41")!)
        #expect(APIVersion("1.41")! < APIVersion("1.51")!)
        #expect(APIVersion("one") == nil)
    }

    @Test func timesWithNanosecondsAreRead() {
        let date = DockerRuntime.parseTime("2024-05-01T10:00:00.123456789Z")
        #expect(date?.timeIntervalSince1970 == 1_714_557_600.123)
        #expect(DockerRuntime.parseTime("0001-01-01T00:00:00Z") == nil)
    }
}

@Suite struct LogDemultiplexerTests {
    func frame(_ stream: UInt8, _ text: String) -> [UInt8] {
        let payload = Array(text.utf8)
        let n = UInt32(payload.count)
        return [stream, 0, 0, 0, UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + payload
    }

    @Test func framesSplitIntoStreams() throws {
        var demux = LogDemultiplexer()
        let chunks = try demux.feed(frame(1, "out\n") + frame(2, "err\n"), operation: "logs")
        #expect(chunks == [LogChunk(stream: .stdout, bytes: Array("out\n".utf8)), LogChunk(stream: .stderr, bytes: Array("err\n".utf8))])
    }

    @Test func framesDrippedByteByByteComeOutWhole() throws {
        var demux = LogDemultiplexer()
        var text = ""
        for byte in frame(1, "hello ") + frame(1, "world\n") {
            for chunk in try demux.feed([byte], operation: "logs") { text += chunk.text }
        }
        #expect(text == "hello world\n")
    }

    @Test func aHeaderThatIsNotDockersIsRefused() {
        var demux = LogDemultiplexer()
        #expect(throws: RuntimeError.self) { try demux.feed(Array("plain text output".utf8), operation: "logs") }
    }
}
