import Foundation
import OrchCore
import Testing

@Suite struct CubeTaskEventTests {
    /// A task event as Cube's own code writes it, with every field Cube fills in.
    static let cubeFile = """
        {"ID": "6a3e1b52-5d0f-4c8e-9a57-2f1c0d9b7e41", "State": 2, "Timestamp": "2024-05-01T10:00:00.123456789Z",
         "Task": {"ID": "0f7c9d2e-8b14-4f3a-a6d5-3c2b1e0f9a87", "ContainerID": "", "Name": "web-1", "State": 1,
                  "Image": "orch-busybox:latest", "Cpu": 0.5, "Memory": 134217728, "Disk": 1,
                  "ExposedPorts": {"8080/tcp": {}}, "PortBindings": {"8080/tcp": "18080"},
                  "RestartPolicy": "on-failure", "StartTime": "0001-01-01T00:00:00Z",
                  "FinishTime": "0001-01-01T00:00:00Z", "HealthCheck": "/health", "RestartCount": 0,
                  "HostPorts": null}}
        """

    @Test func cubeFileWithItsBookkeepingFieldsIsTranslated() throws {
        let submission = try TaskFile.decode(Data(Self.cubeFile.utf8))
        #expect(submission.format == .cube(eventID: "6a3e1b52-5d0f-4c8e-9a57-2f1c0d9b7e41"))
        #expect(submission.intent == .run)
        #expect(submission.spec == TaskSpec(
            id: TaskID(rawValue: "0f7c9d2e-8b14-4f3a-a6d5-3c2b1e0f9a87"), name: "web-1", image: "orch-busybox:latest",
            ports: [PortSpec(containerPort: 8080, protocol: .tcp, hostPort: 18080)],
            resources: Resources(millicores: 500, memoryBytes: 128 << 20),
            restartPolicy: RestartPolicy(mode: .onFailure),
            healthCheck: HealthCheck(path: "/health", port: 8080)))
        #expect(Set(submission.ignoredFields) == [
            "Task.ContainerID", "Task.State", "Task.Disk", "Task.StartTime", "Task.FinishTime", "Task.RestartCount",
        ])
    }

    @Test func theSampleOfCubesDocsRuns() throws {
        let sample = """
            {"ID": "6a3e1b52-5d0f-4c8e-9a57-2f1c0d9b7e41", "State": 2,
             "Task": {"State": 1, "ID": "0f7c9d2e-8b14-4f3a-a6d5-3c2b1e0f9a87", "Name": "web-1",
                      "Image": "IMAGE", "ExposedPorts": {"8080/tcp": {}},
                      "PortBindings": {"8080/tcp": "8080"}, "HealthCheck": "/health"}}
            """
        let spec = try TaskFile.decode(Data(sample.utf8)).spec
        #expect(spec.ports == [PortSpec(containerPort: 8080, hostPort: 8080)])
        #expect(spec.healthCheck?.port == 8080)
        #expect(spec.resources == .default)
        #expect(spec.command == nil)
    }

    @Test func keysMatchWhateverTheirCaseAsInGo() throws {
        let spec = try TaskFile.decode(Data(#"{"task": {"image": "i", "memory": 67108864, "exposedports": {"80/tcp": {}}}}"#.utf8)).spec
        #expect(spec.image == "i")
        #expect(spec.ports == [PortSpec(containerPort: 80)])
    }

    @Test func stateCompletedAsksToStop() throws {
        let submission = try TaskFile.decode(Data(#"{"State": 3, "Task": {"ID": "t1", "Image": "i"}}"#.utf8))
        #expect(submission.intent == .stop)
    }

    @Test("Cube's restart policies map to ours", arguments: [
        ("", RestartMode.never), ("no", .never), ("on-failure", .onFailure), ("always", .always), ("unless-stopped", .always),
    ])
    func restartPolicyMaps(cube: String, mode: RestartMode) throws {
        let json = #"{"Task": {"Image": "i", "RestartPolicy": "\#(cube)"}}"#
        #expect(try TaskFile.decode(Data(json.utf8)).spec.restartPolicy == RestartPolicy(mode: mode))
    }

    @Test func zeroCpuAndMemoryMeanTheDefaults() throws {
        let spec = try TaskFile.decode(Data(#"{"Task": {"Image": "i", "Cpu": 0, "Memory": 0}}"#.utf8)).spec
        #expect(spec.resources == .default)
    }

    @Test func unknownFieldsAreIgnoredAndListed() throws {
        let submission = try TaskFile.decode(Data(#"{"Extra": 1, "Task": {"Image": "i", "Colour": "red"}}"#.utf8))
        #expect(Set(submission.ignoredFields) == ["Extra", "Task.Colour"])
    }

    @Test("Invalid Cube fields are refused with Cube's paths", arguments: [
        (#"{"Task": {"Name": "x"}}"#, "Task.Image"),
        (#"{"Task": {"Image": "i", "Memory": 1000}}"#, "Task.Memory"),
        (#"{"Task": {"Image": "i", "Memory": "lots"}}"#, "Task.Memory"),
        (#"{"Task": {"Image": "i", "RestartPolicy": "sometimes"}}"#, "Task.RestartPolicy"),
        (#"{"Task": {"Image": "i", "HealthCheck": "/health"}}"#, "Task.HealthCheck"),
        (#"{"Task": {"Image": "i", "ExposedPorts": {"http": {}}}}"#, "Task.ExposedPorts.http"),
        (#"{"Task": {"Image": "i", "ExposedPorts": {"99999/tcp": {}}}}"#, "Task.ExposedPorts"),
        (#"{"Task": {"Image": "i", "PortBindings": {"80/tcp": "eighty"}}}"#, "Task.PortBindings.80/tcp"),
        (#"{"Task": {"ID": "no spaces please", "Image": "i"}}"#, "Task.ID"),
        (#"{"State": 9, "Task": {"Image": "i"}}"#, "State"),
        (#"{"State": "running", "Task": {"Image": "i"}}"#, "State"),
    ])
    func invalidCubeFieldIsRefused(json: String, path: String) {
        #expect(problems(json).map(\.path) == [path])
    }
}
