import Foundation
import OrchCore
import OrchRuntime
import Testing

@Suite("Docker runtime (Docker)", .timeLimit(.minutes(5)))
struct DockerRuntimeTests {
    @Test func engineAnswersPingWithNegotiatedVersion() async throws {
        try await DockerFixture.with { docker in
            try await docker.runtime.ping()
            #expect(docker.runtime.apiVersion >= DockerRuntime.oldestAPIVersion)
            #expect(docker.runtime.apiVersion <= DockerRuntime.newestAPIVersion)
        }
    }
}
