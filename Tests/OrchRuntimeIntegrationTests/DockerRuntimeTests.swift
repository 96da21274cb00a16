import AsyncHTTPClient
import Foundation
import NIOCore
import OrchCore
import OrchRuntime
import Testing

/// The runtime against the real Docker engine that tools/test.sh starts.
@Suite("Docker runtime (Docker)", .timeLimit(.minutes(5)))
struct DockerRuntimeTests {
    @Test func engineAnswersPingWithNegotiatedVersion() async throws {
        try await DockerFixture.with { docker in
            try await docker.runtime.ping()
            #expect(docker.runtime.apiVersion >= DockerRuntime.oldestAPIVersion)
            #expect(docker.runtime.apiVersion <= DockerRuntime.newestAPIVersion)
        }
    }

    @Test func oneShotContainerExitsZero() async throws {
        try await DockerFixture.with { docker in
            let id = try await docker.run(docker.config(command: ["sh", "-c", "echo done"]))
            let info = try await docker.waitForExit(id)
            #expect(info.exitCode == 0)
            #expect(info.status == "exited")
        }
    }

    @Test func nonZeroExitCodeIsReported() async throws {
        try await DockerFixture.with { docker in
            let id = try await docker.run(docker.config(command: ["sh", "-c", "exit 7"]))
            #expect(try await docker.waitForExit(id).exitCode == 7)
        }
    }

    @Test func exitIsSeenOnTheEventStreamWithItsCode() async throws {
        try await DockerFixture.with { docker in
            let events = try await docker.runtime.events(labels: docker.testLabel)
            let id = try await docker.run(docker.config(command: ["sh", "-c", "exit 3"]))
            let die: ContainerEvent? = try await withDeadline(.seconds(20)) {
                for try await event in events where event.container == id && event.action == "die" { return event }
                return nil
            }
            #expect(die?.exitCode == 3)
            #expect(die?.attributes["orch.test"] == docker.testLabel["orch.test"])
        }
    }

    @Test func publishedPortServesThePage() async throws {
        try await DockerFixture.with { docker in
            let id = try await docker.run(docker.config(ports: [PortSpec(containerPort: 8080)]))
            let info = try await docker.runtime.inspect(id)
            let port = try #require(info.publishedPorts.first)
            #expect(port.containerPort == 8080 && port.hostIP == "127.0.0.1" && port.hostPort > 0)
            let page = try await fetch("http://127.0.0.1:\(port.hostPort)/")
            #expect(page.contains("hello from orch-busybox"))
            #expect(try await fetch("http://127.0.0.1:\(port.hostPort)/health").contains("ok"))
        }
    }

    @Test func fixedHostPortThatIsTakenGivesATypedError() async throws {
        try await DockerFixture.with { docker in
            let first = try await docker.run(docker.config(ports: [PortSpec(containerPort: 8080)]))
            let taken = try #require(try await docker.runtime.inspect(first).publishedPorts.first?.hostPort)
            let second = try await docker.runtime.create(docker.config(ports: [PortSpec(containerPort: 8080, hostPort: taken)]))
            let error = await #expect(throws: RuntimeError.self) { try await docker.runtime.start(second) }
            if case .portUnavailable? = error {} else { Issue.record("expected portUnavailable, got \(String(describing: error))") }
        }
    }

    /// A CPU reservation is a weight (CPU shares), never a quota: a task reserving 0.01 CPU
    /// is not throttled. A cap and a higher memory limit are there only when given.
    @Test func aReservationIsAWeightAndLimitsOnlyWhatIsAskedFor() async throws {
        try await DockerFixture.with { docker in
            let reserved = Resources(millicores: 250, memoryBytes: 32 << 20)
            let id = try await docker.runtime.create(docker.config(command: ["sleep", "30"], resources: reserved))
            let info = try await docker.runtime.inspect(id)
            #expect(info.memoryLimitBytes == 32 << 20 && info.memoryReservationBytes == 0)
            #expect(info.nanoCPUs == 0, "no CFS quota for a reservation")
            #expect(info.cpuShares == 256)
            #expect(info.status == "created" && !info.running)

            let capped = Resources(millicores: 250, memoryBytes: 32 << 20, cpuLimitMillicores: 500, memoryMaxBytes: 64 << 20)
            let limited = try await docker.runtime.inspect(try await docker.runtime.create(docker.config(command: ["sleep", "30"], resources: capped)))
            #expect(limited.nanoCPUs == 500_000_000, "the cap asked for")
            #expect(limited.memoryLimitBytes == 64 << 20 && limited.memoryReservationBytes == 32 << 20, "hard memoryMax, soft reservation")
            #expect(limited.cpuShares == 256)
        }
    }

    @Test func stopEndsTheContainerWithSIGTERMNotSIGKILL() async throws {
        try await DockerFixture.with { docker in
            let id = try await docker.run(docker.config())   // the image's httpd, which ignores SIGTERM as PID 1
            // Docker reports a container started before its init has set up its signal
            // handlers; a SIGTERM in that instant is lost and the stop waits for its SIGKILL.
            try await Task.sleep(for: .milliseconds(300))
            let clock = ContinuousClock()
            let elapsed = try await clock.measure { try await docker.runtime.stop(id, grace: .seconds(10)) }
            let info = try await docker.runtime.inspect(id)
            #expect(info.exitCode == 143, "137 would mean the grace period ran out and the container was killed")
            // Without an init the stop waits the whole 10 s grace period; with one it takes a fraction of a second.
            #expect(elapsed < .seconds(5))
            try await docker.runtime.stop(id, grace: .seconds(1))   // stopping a stopped container is no error
        }
    }

    @Test func stopAndRemoveLeaveNothingBehind() async throws {
        try await DockerFixture.with { docker in
            let id = try await docker.run(docker.config(command: ["sleep", "60"]))
            try await docker.runtime.stop(id, grace: .seconds(5))
            try await docker.runtime.remove(id)
            #expect(try await docker.runtime.list(labels: docker.testLabel).isEmpty)
            await #expect(throws: RuntimeError.containerNotFound(id.rawValue)) { try await docker.runtime.inspect(id) }
            await #expect(throws: RuntimeError.containerNotFound(id.rawValue)) { try await docker.runtime.remove(id) }
        }
    }

    @Test func logsShowWhatTheContainerPrinted() async throws {
        try await DockerFixture.with { docker in
            let id = try await docker.run(docker.config(command: ["sh", "-c", "echo to-stdout; echo to-stderr >&2; echo last"]))
            _ = try await docker.waitForExit(id)
            var stdout = "", stderr = ""
            for try await chunk in try await docker.runtime.logs(id, tail: nil, follow: false) {
                if chunk.stream == .stdout { stdout += chunk.text } else { stderr += chunk.text }
            }
            #expect(stdout == "to-stdout\nlast\n")
            #expect(stderr == "to-stderr\n")
            // Lines of two streams written together may be stored in either order: tail one stream only.
            let counting = try await docker.run(docker.config(command: ["sh", "-c", "echo one; echo two; echo three"]))
            _ = try await docker.waitForExit(counting)
            var tail = ""
            for try await chunk in try await docker.runtime.logs(counting, tail: 2, follow: false) { tail += chunk.text }
            #expect(tail == "two\nthree\n")
        }
    }

    @Test func followedLogsShowALinePrintedLater() async throws {
        try await DockerFixture.with { docker in
            let id = try await docker.run(docker.config(command: ["sh", "-c", "echo first; sleep 1; echo second"]))
            let stream = try await docker.runtime.logs(id, tail: nil, follow: true)
            let text = try await withDeadline(.seconds(20)) {
                var text = ""
                for try await chunk in stream { text += chunk.text }
                return text
            }
            #expect(text == "first\nsecond\n")
        }
    }

    @Test func statsReportMemoryInUse() async throws {
        try await DockerFixture.with { docker in
            let id = try await docker.run(docker.config(command: ["sleep", "30"], resources: Resources(millicores: 100, memoryBytes: 16 << 20)))
            let stats = try await docker.runtime.stats(id)
            #expect(stats.memoryUsageBytes > 0)
            #expect(stats.memoryLimitBytes == 16 << 20)
        }
    }

    @Test func unknownImageGivesTheTypedError() async throws {
        try await DockerFixture.with { docker in
            do {
                _ = try await docker.runtime.ensureImage("orch-busybox:nope")
                Issue.record("expected the pull to fail")
            } catch let error as RuntimeError {
                guard case .imageUnavailable(let image, _) = error else {
                    Issue.record("expected imageUnavailable, got \(error)")
                    return
                }
                #expect(image == "orch-busybox:nope")
                #expect(error.description.hasPrefix("image orch-busybox:nope is not present and the registry could not be reached"))
            }
            #expect(try await docker.runtime.ensureImage(testImage) == .present)
            await #expect(throws: RuntimeError.imageUnavailable(image: "orch-busybox:nope", reason: "not present locally")) {
                _ = try await docker.runtime.create(docker.config(image: "orch-busybox:nope"))
            }
        }
    }

    @Test func listByLabelFindsOnlyThisNodesContainers() async throws {
        try await DockerFixture.with { docker in
            let spec = TaskSpec(image: testImage, command: ["sleep", "30"])
            let mine = NodeID.random(), other = NodeID.random()
            func config(_ node: NodeID, _ task: String) -> ContainerConfig {
                var config = ContainerConfig(task: TaskID(rawValue: task), attempt: 4, node: node, spec: spec)
                config.name = nil
                config.labels.merge(docker.testLabel) { a, _ in a }
                return config
            }
            let created = try await docker.runtime.create(config(mine, "t-mine"))
            _ = try await docker.runtime.create(config(other, "t-other"))
            let found = try await docker.runtime.list(labels: [ContainerLabel.node: mine.rawValue])
            #expect(found.map(\.id) == [created])
            #expect(found.first?.labels[ContainerLabel.task] == "t-mine")
            #expect(found.first?.labels[ContainerLabel.attempt] == "4")
            #expect(found.first?.state == "created")
        }
    }

    @Test func aNameInUseIsAConflict() async throws {
        try await DockerFixture.with { docker in
            var config = docker.config(command: ["sleep", "30"])
            config.name = "orch-test-\(UUID().uuidString.prefix(8).lowercased())"
            _ = try await docker.runtime.create(config)
            let error = await #expect(throws: RuntimeError.self) { _ = try await docker.runtime.create(config) }
            if case .conflict? = error {} else { Issue.record("expected conflict, got \(String(describing: error))") }
        }
    }

    @Test func anUnknownContainerIsNotFound() async throws {
        try await DockerFixture.with { docker in
            let id = ContainerID(rawValue: "0000000000000000deadbeef")
            await #expect(throws: RuntimeError.containerNotFound(id.rawValue)) { try await docker.runtime.start(id) }
            await #expect(throws: RuntimeError.containerNotFound(id.rawValue)) { try await docker.runtime.stats(id) }
            await #expect(throws: RuntimeError.containerNotFound(id.rawValue)) {
                _ = try await docker.runtime.logs(id, tail: nil, follow: false)
            }
        }
    }
}

@Suite("Docker runtime without an engine", .timeLimit(.minutes(1)))
struct DockerUnreachableTests {
    @Test func aMissingEngineGivesAReadableError() async throws {
        let endpoint = DockerEndpoint(kind: .unix(path: "/tmp/orch-no-docker-\(UUID().uuidString).sock"))
        do {
            let runtime = try await DockerRuntime.connect(endpoint: endpoint, logger: .init(label: "test"))
            try await runtime.shutdown()
            Issue.record("expected connect to fail")
        } catch let error as RuntimeError {
            guard case .daemonUnreachable = error else {
                Issue.record("expected daemonUnreachable, got \(error)")
                return
            }
            #expect(error.description.hasPrefix("Docker is not running at \(endpoint)"))
        }
    }

    @Test func aRefusedTCPPortGivesAReadableError() async throws {
        // Port 1 on loopback: nothing listens there.
        let endpoint = try DockerEndpoint(dockerHost: "tcp://127.0.0.1:1")
        await #expect(throws: RuntimeError.self) {
            _ = try await DockerRuntime.connect(endpoint: endpoint, logger: .init(label: "test"))
        }
    }
}

// MARK: - Helpers

/// GETs `url` and returns its body, retrying until the server answers (at most 10 s).
func fetch(_ url: String) async throws -> String {
    let clock = ContinuousClock()
    let end = clock.now + .seconds(10)
    while true {
        do {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(2))
            return String(buffer: try await response.body.collect(upTo: 1 << 20))
        } catch {
            if clock.now > end { throw error }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// Runs `body`, failing with a timeout if it takes longer than `limit`.
func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw FixtureError.timedOut("no result within \(limit)")
        }
        group.cancelAll()
        return value
    }
}
