import Foundation
import Logging
import OrchCore
import OrchRuntime
import Testing

/// The local image that tools/setup.sh builds from busybox-static.
let testImage = ProcessInfo.processInfo.environment["ORCH_TEST_IMAGE"] ?? "orch-busybox:latest"

/// A connection to the real engine for one test, and a label that marks every container
/// the test creates, so that they are all removed afterwards, also when the test fails.
struct DockerFixture {
    let runtime: DockerRuntime
    let testLabel: [String: String]

    /// Runs `body` with a connected runtime; fails loudly (never skips) when Docker does not answer.
    static func with(_ body: (DockerFixture) async throws -> Void) async throws {
        let endpoint = try DockerEndpoint(dockerHost: ProcessInfo.processInfo.environment["DOCKER_HOST"])
        let runtime: DockerRuntime
        do {
            runtime = try await DockerRuntime.connect(endpoint: endpoint, logger: Logger(label: "test"))
        } catch {
            Issue.record("These tests need a running Docker engine (tools/test.sh starts one): \(error)")
            throw error
        }
        let fixture = DockerFixture(runtime: runtime, testLabel: ["orch.test": UUID().uuidString.lowercased()])
        do {
            try await body(fixture)
        } catch {
            await fixture.cleanUp()
            try await runtime.shutdown()
            throw error
        }
        await fixture.cleanUp()
        try await runtime.shutdown()
    }

    /// Removes every container this test created.
    func cleanUp() async {
        do {
            for container in try await runtime.list(labels: testLabel) {
                try? await runtime.remove(container.id)
            }
        } catch {
            Issue.record("could not clean up the test's containers: \(error)")
        }
    }

    /// A container config carrying this test's label.
    func config(
        command: [String]? = nil, ports: [PortSpec] = [], resources: Resources = .default,
        labels: [String: String] = [:], image: String = testImage
    ) -> ContainerConfig {
        ContainerConfig(
            image: image, command: command, ports: ports, resources: resources,
            stopGracePeriod: .seconds(10), labels: testLabel.merging(labels) { a, _ in a })
    }

    /// Creates and starts a container.
    func run(_ config: ContainerConfig) async throws -> ContainerID {
        let id = try await runtime.create(config)
        try await runtime.start(id)
        return id
    }

    /// Waits, up to `deadline`, until the container has exited, and returns its inspect.
    func waitForExit(_ id: ContainerID, deadline: Duration = .seconds(20)) async throws -> ContainerInfo {
        let clock = ContinuousClock()
        let end = clock.now + deadline
        while clock.now < end {
            let info = try await runtime.inspect(id)
            if !info.running && info.status != "created" { return info }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw FixtureError.timedOut("container \(id.short) did not exit within \(deadline)")
    }
}

enum FixtureError: Error, CustomStringConvertible {
    case timedOut(String)
    var description: String {
        switch self { case .timedOut(let message): message }
    }
}
