import Foundation
import OrchCore
import OrchRuntime
import Testing

/// The repository's data/ folder.
let dataDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("data")

func submission(_ file: String) throws -> TaskSubmission {
    try TaskFile.decode(Data(contentsOf: dataDirectory.appendingPathComponent(file)))
}

/// The example task files run as they are, on the real engine.
@Suite("Example task files (Docker)", .timeLimit(.minutes(3)))
struct DataFileTests {
    func config(_ spec: TaskSpec, _ docker: DockerFixture) -> ContainerConfig {
        var config = ContainerConfig(task: spec.id ?? .random(), attempt: 1, node: .random(), spec: spec)
        config.name = nil
        config.labels.merge(docker.testLabel) { a, _ in a }
        return config
    }

    @Test func everyExampleFileIsValid() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: dataDirectory.path).filter { $0.hasSuffix(".json") }
        #expect(files.count >= 4)
        // Service files (docs/SERVICES.md) are services; every other file is a task file.
        for file in files where !file.hasPrefix("service-") { _ = try submission(file) }
        for file in files where file.hasPrefix("service-") {
            _ = try ServiceSpec.decode(try Data(contentsOf: dataDirectory.appendingPathComponent(file)))
        }
    }

    @Test func task1ServesItsHealthPage() async throws {
        let spec = try submission("task1.json").spec
        let check = try #require(spec.healthCheck)
        try await DockerFixture.with { docker in
            let id = try await docker.run(config(spec, docker))
            let port = try #require(try await docker.runtime.inspect(id).publishedPorts.first { $0.containerPort == check.port })
            #expect(try await fetch("http://127.0.0.1:\(port.hostPort)\(check.path)") == "ok\n")
        }
    }

    @Test func oneShotExitsZeroAndFailingExitsNonZero() async throws {
        try await DockerFixture.with { docker in
            let ok = try await docker.run(config(try submission("oneshot.json").spec, docker))
            let bad = try await docker.run(config(try submission("failing.json").spec, docker))
            #expect(try await docker.waitForExit(ok).exitCode == 0)
            #expect(try await docker.waitForExit(bad).exitCode == 3)
        }
    }

    @Test func cubeTaskEventRunsWithTheImagesOwnCommand() async throws {
        let cube = try submission("cube-task.json")
        #expect(cube.format == .cube(eventID: "6a3e1b52-5d0f-4c8e-9a57-2f1c0d9b7e41"))
        #expect(cube.spec.command == nil)
        try await DockerFixture.with { docker in
            let id = try await docker.run(config(cube.spec, docker))
            let port = try #require(try await docker.runtime.inspect(id).publishedPorts.first)
            #expect(try await fetch("http://127.0.0.1:\(port.hostPort)/health") == "ok\n")
        }
    }
}
