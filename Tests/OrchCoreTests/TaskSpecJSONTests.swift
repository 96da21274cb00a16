import Foundation
import OrchCore
import Testing

func decodeSpec(_ json: String) throws -> TaskSpec {
    try TaskFile.decode(Data(json.utf8)).spec
}

/// The problems that decoding `json` reports; fails the test when it decodes.
func problems(_ json: String) -> [SpecProblem] {
    do {
        _ = try TaskFile.decode(Data(json.utf8))
        Issue.record("expected \(json) to be refused")
        return []
    } catch {
        return error.problems
    }
}

@Suite struct TaskSpecJSONTests {
    static let full = TaskSpec(
        id: TaskID(rawValue: "web-1"), name: "web", image: "orch-busybox:latest",
        command: ["httpd", "-f", "-p", "8080"], environment: ["MODE": "demo", "EMPTY": ""],
        ports: [PortSpec(containerPort: 8080), PortSpec(containerPort: 53, protocol: .udp, hostPort: 15353)],
        resources: Resources(millicores: 500, memoryBytes: 128 << 20, cpuLimitMillicores: 1500, memoryMaxBytes: 256 << 20),
        restartPolicy: RestartPolicy(mode: .onFailure, maxRestarts: 5), stopGracePeriod: .milliseconds(1500),
        healthCheck: HealthCheck(path: "/health", port: 8080, interval: .seconds(5), timeout: .seconds(1), failureThreshold: 2),
        constraints: PlacementConstraints(node: "worker-1", labels: ["disk": "ssd"]))

    @Test func roundTripKeepsEveryField() throws {
        let data = try JSONEncoder().encode(Self.full)
        let decoded = try JSONDecoder().decode(TaskSpec.self, from: data)
        #expect(decoded == Self.full)
        #expect(try TaskFile.decode(data).spec == Self.full)
    }

    @Test func encodingWritesSizesInBytesAndDurationsAsText() throws {
        let object = try #require(JSONSerialization.jsonObject(with: JSONEncoder().encode(Self.full)) as? [String: Any])
        let resources = try #require(object["resources"] as? [String: Any])
        #expect(resources["memory"] as? Int == 134_217_728)
        #expect(resources["cpus"] as? Double == 0.5)
        #expect(resources["cpuLimit"] as? Double == 1.5 && resources["memoryMax"] as? Int == 268_435_456)
        #expect(object["stopGracePeriod"] as? String == "1.5s")
        let restart = try #require(object["restartPolicy"] as? [String: Any])
        #expect(restart["mode"] as? String == "on-failure")
    }

    @Test func aSpecNamingOnlyAnImageGetsTheDefaults() throws {
        let spec = try decodeSpec(#"{"image": "orch-busybox:latest"}"#)
        #expect(spec.resources == Resources(millicores: 100, memoryBytes: 64 << 20))
        #expect(spec.restartPolicy == .never)
        #expect(spec.stopGracePeriod == .seconds(10))
        #expect(spec.command == nil && spec.healthCheck == nil && spec.ports.isEmpty && spec.id == nil)
    }

    @Test func shorthandsMeanTheSameAsTheLongForms() throws {
        let short = try decodeSpec("""
            {"image": "i", "command": "echo hi", "environment": ["A=1", "B=x=y"], "ports": [8080, "53/udp"],
             "resources": {"cpus": "250m", "memory": "256m"}, "restartPolicy": "always", "healthCheck": "/health",
             "stopGracePeriod": 3}
            """)
        let long = try decodeSpec("""
            {"image": "i", "command": ["/bin/sh", "-c", "echo hi"], "environment": {"A": "1", "B": "x=y"},
             "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "udp"}],
             "resources": {"cpus": 0.25, "memory": 268435456}, "restartPolicy": {"mode": "always"},
             "healthCheck": {"path": "/health", "port": 8080, "interval": "10s", "timeout": "2s", "failureThreshold": 3},
             "stopGracePeriod": "3s"}
            """)
        #expect(short == long)
    }

    /// A typo gets the nearest field, a wrong case of an enum its value, and a number where
    /// a string belongs is refused with how to write it.
    @Test func mistakesGetTheNearestFieldAndTheValueMeant() {
        let typo = problems(#"{"imgae": "orch-busybox:latest"}"#)
        #expect(typo.contains { $0.path == "imgae" && $0.message.contains("did you mean 'image'?") }, "\(typo)")
        let far = problems(#"{"image": "i", "colour": "red"}"#)
        #expect(far.contains { $0.path == "colour" && $0.message.contains("known: id, name, image") }, "\(far)")
        let mode = problems(#"{"image": "i", "restartPolicy": "Always"}"#)
        #expect(mode.contains { $0.path == "restartPolicy" && $0.message.contains("did you mean 'always'?") }, "\(mode)")
        let number = problems(#"{"image": "i", "environment": {"PORT": 8080, "DEBUG": true}}"#)
        #expect(number.contains { $0.path == "environment.PORT" && $0.message.contains(#"write "8080""#) }, "\(number)")
        #expect(number.contains { $0.path == "environment.DEBUG" && $0.message.contains(#"write "true""#) }, "\(number)")
    }

    @Test("Each invalid field is refused with its path", arguments: [
        (#"{"image": ""}"#, "image"),
        (#"{"name": "x"}"#, "image"),
        (#"{"image": 42}"#, "image"),
        (#"{"image": "a b"}"#, "image"),
        (#"{"image": "i", "id": "bad id!"}"#, "id"),
        (#"{"image": "i", "name": "-x"}"#, "name"),
        (#"{"image": "i", "command": []}"#, "command"),
        (#"{"image": "i", "command": [1]}"#, "command[0]"),
        (#"{"image": "i", "environment": {"A": {}}}"#, "environment.A"),
        (#"{"image": "i", "environment": ["NOEQUALS"]}"#, "environment[0]"),
        (#"{"image": "i", "resources": {"memory": "1MiB"}}"#, "resources.memory"),
        (#"{"image": "i", "resources": {"memory": "lots"}}"#, "resources.memory"),
        (#"{"image": "i", "resources": {"cpus": 0}}"#, "resources.cpus"),
        (#"{"image": "i", "resources": {"cpu": 1}}"#, "resources.cpu"),
        (#"{"image": "i", "resources": {"cpus": 0.5, "cpuLimit": 0.25}}"#, "resources.cpuLimit"),
        (#"{"image": "i", "resources": {"cpuLimit": "lots"}}"#, "resources.cpuLimit"),
        (#"{"image": "i", "resources": {"memory": "64MiB", "memoryMax": "32MiB"}}"#, "resources.memoryMax"),
        (#"{"image": "i", "ports": [{"containerPort": 70000}]}"#, "ports[0].containerPort"),
        (#"{"image": "i", "ports": [{"containerPort": 80, "hostPort": 0}]}"#, "ports[0].hostPort"),
        (#"{"image": "i", "ports": [{"containerPort": 80, "protocol": "sctp"}]}"#, "ports[0].protocol"),
        (#"{"image": "i", "ports": [80, 80]}"#, "ports[1].containerPort"),
        (#"{"image": "i", "ports": [{"hostPort": 80}]}"#, "ports[0].containerPort"),
        (#"{"image": "i", "restartPolicy": {"mode": "sometimes"}}"#, "restartPolicy.mode"),
        (#"{"image": "i", "restartPolicy": "sometimes"}"#, "restartPolicy"),
        (#"{"image": "i", "restartPolicy": {"mode": "always", "maxRestarts": -1}}"#, "restartPolicy.maxRestarts"),
        (#"{"image": "i", "stopGracePeriod": "forever"}"#, "stopGracePeriod"),
        (#"{"image": "i", "stopGracePeriod": "2h"}"#, "stopGracePeriod"),
        (#"{"image": "i", "ports": [8080], "healthCheck": {"path": "health"}}"#, "healthCheck.path"),
        (#"{"image": "i", "ports": [8080], "healthCheck": {"path": "/", "port": 9090}}"#, "healthCheck.port"),
        (#"{"image": "i", "healthCheck": {"path": "/"}}"#, "healthCheck.port"),
        (#"{"image": "i", "ports": [8080], "healthCheck": {"path": "/", "timeout": "20s"}}"#, "healthCheck.timeout"),
        (#"{"image": "i", "ports": [8080], "healthCheck": {"path": "/", "failureThreshold": 0}}"#, "healthCheck.failureThreshold"),
        (#"{"image": "i", "constraints": {"node": ""}}"#, "constraints.node"),
        (#"{"image": "i", "memory": 1}"#, "memory"),
    ])
    func invalidFieldIsRefusedWithItsPath(json: String, path: String) {
        let found = problems(json)
        #expect(found.map(\.path) == [path], "\(found)")
    }

    @Test func everyProblemIsReportedAtOnce() {
        let found = problems("""
            {"image": "", "resources": {"memory": "1MiB", "cpus": -1},
             "ports": [{"containerPort": 0}], "restartPolicy": {"mode": "sometimes"}, "colour": "red"}
            """)
        #expect(Set(found.map(\.path)) == [
            "image", "resources.memory", "resources.cpus", "ports[0].containerPort", "restartPolicy.mode", "colour",
        ])
    }

    @Test func aTypoIsRefusedWithASuggestion() {
        let found = problems(#"{"image": "i", "restartpolicy": "always"}"#)
        #expect(found == [SpecProblem(path: "restartpolicy", message: "unknown field; did you mean 'restartPolicy'?")])
    }

    @Test func memoryBelowDockersMinimumSaysSo() {
        let found = problems(#"{"image": "i", "resources": {"memory": "4MiB"}}"#)
        #expect(found.first?.message == "must be at least 6 MiB (Docker's minimum), found 4 MiB")
    }

    @Test("Malformed documents are refused as a whole", arguments: [
        "{", "", "[1, 2]", "\"image\"", "{\"image\": \"i\" \"name\": \"n\"}", "{\"image\": 'i'}",
    ])
    func malformedDocumentIsRefused(json: String) {
        let found = problems(json)
        #expect(found.count == 1)
        #expect(found.first?.path == "")
    }

    @Test func errorTextListsEveryProblemWithItsPath() {
        let error = TaskSpecError(problems: [
            SpecProblem(path: "image", message: "must not be empty"),
            SpecProblem(path: "resources.memory", message: "must be at least 6 MiB"),
        ])
        #expect(error.description == "invalid task (2 problems): image: must not be empty; resources.memory: must be at least 6 MiB")
    }

    @Test func sameSpecAgainIsTheSameTaskAndAnotherIsAConflict() throws {
        let first = try decodeSpec(#"{"id": "t1", "image": "i", "resources": {"memory": "64MiB"}}"#)
        let same = try decodeSpec(#"{"id": "t1", "image": "i"}"#)
        let other = try decodeSpec(#"{"id": "t1", "image": "i", "command": ["sleep", "1"]}"#)
        #expect(same.resubmission(of: first) == .sameTask)
        #expect(other.resubmission(of: first) == .conflict)
    }
}

@Suite struct UnitsTests {
    static let sizes: [(String, Int)] = [
        ("1048576", 1 << 20), ("256MiB", 256 << 20), ("256Mi", 256 << 20), ("256m", 256 << 20), ("256M", 256 << 20),
        ("1.5GiB", 3 << 29), ("2g", 2 << 30), ("100MB", 100_000_000), ("1kB", 1000), ("512 KiB", 512 << 10), ("7B", 7),
    ]

    @Test("Sizes people write", arguments: sizes)
    func byteCountParses(text: String, bytes: Int) {
        #expect(ByteCount.parse(text) == bytes)
    }

    @Test("Sizes that are not sizes", arguments: ["", "MiB", "-1MiB", "12 apples", "1.5", "1..5MiB"])
    func byteCountRefuses(text: String) {
        #expect(ByteCount.parse(text) == nil)
    }

    @Test func byteCountFormatsForPeople() {
        #expect(ByteCount.format(64 << 20) == "64 MiB")
        #expect(ByteCount.format(1536) == "1.5 KiB")
        #expect(ByteCount.format(12) == "12 B")
    }

    static let durations: [(String, Duration)] = [
        ("10s", Duration.seconds(10)), ("1m30s", .seconds(90)), ("500ms", .milliseconds(500)), ("2h", .seconds(7200)),
        ("1.5s", .milliseconds(1500)), ("0", .zero), ("250us", .microseconds(250)),
    ]

    @Test("Durations people write", arguments: durations)
    func durationParses(text: String, duration: Duration) {
        #expect(DurationText.parse(text) == duration)
    }

    @Test("Durations that are not durations", arguments: ["", "10", "s", "10 parsecs", "-5s", "1m30"])
    func durationRefuses(text: String) {
        #expect(DurationText.parse(text) == nil)
    }

    @Test func durationFormatsLikeItIsWritten() {
        #expect(DurationText.format(.seconds(90)) == "1m30s")
        #expect(DurationText.format(.milliseconds(500)) == "500ms")
        #expect(DurationText.format(.zero) == "0s")
        #expect(DurationText.format(.seconds(3661)) == "1h1m1s")
        #expect(DurationText.format(.milliseconds(2500)) == "2.5s")
    }
}
