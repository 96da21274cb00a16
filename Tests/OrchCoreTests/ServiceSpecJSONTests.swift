import Foundation
import OrchCore
import Testing

@Suite struct ServiceSpecJSONTests {
    static func decode(_ text: String) throws(TaskSpecError) -> ServiceSpec { try ServiceSpec.decode(Data(text.utf8)) }

    static func problems(_ text: String) -> [String] {
        do {
            _ = try decode(text)
            return []
        } catch {
            return error.problems.map { "\($0.path): \($0.message)" }
        }
    }

    @Test func aServiceFileWithItsDefaults() throws {
        let spec = try Self.decode(#"{"name": "web", "replicas": 3, "task": {"image": "orch-busybox:latest", "command": ["httpd", "-f"]}}"#)
        #expect(spec.name == "web" && spec.replicas == 3)
        #expect(spec.task.image == "orch-busybox:latest" && spec.task.command == ["httpd", "-f"] && spec.task.id == nil)
        #expect(spec.update == UpdatePolicy(parallelism: 1, order: .startFirst, healthyDeadline: .seconds(60), minHealthyTime: .seconds(5), autoRollback: true))
        #expect(try Self.decode(#"{"name": "one", "task": {"image": "i"}}"#).replicas == 1, "one replica unless told")
    }

    @Test func theExampleInDataIsAValidService() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("data/service-web.json")
        let spec = try ServiceSpec.decode(try Data(contentsOf: url))
        #expect(spec.name == "web" && spec.replicas == 3 && spec.task.healthCheck != nil)
        #expect(spec.task.ports == [PortSpec(containerPort: 8080, publish: 8000, publishMode: .http)])
    }

    @Test func aPublishedPortIsReadWrittenBackAndItsProblemsReported() throws {
        let spec = try Self.decode(#"{"name": "web", "task": {"image": "i", "ports": [{"containerPort": 80, "publish": 8000}]}}"#)
        #expect(spec.task.ports == [PortSpec(containerPort: 80, publish: 8000, publishMode: .tcp)], "tcp unless told")
        #expect(try ServiceSpec(json: spec.json) == spec)
        let cases: [(String, String, String)] = [
            (#"[{"containerPort": 80, "publish": 70000}]"#, "task.ports[0].publish", "between 1 and 65535"),
            (#"[{"containerPort": 53, "protocol": "udp", "publish": 53}]"#, "task.ports[0].publish", "only TCP"),
            (#"[{"containerPort": 80, "publish": 8000}, {"containerPort": 81, "publish": 8000}]"#, "task.ports[1].publish", "published twice"),
            (#"[{"containerPort": 80, "publish": 8000, "publishMode": "udp"}]"#, "task.ports[0].publishMode", "tcp or http"),
            (#"[{"containerPort": 80, "publishMode": "http"}]"#, "task.ports[0].publishMode", "needs publish"),
        ]
        for (ports, path, words) in cases {
            let problems = Self.problems(#"{"name": "web", "task": {"image": "i", "ports": "# + ports + "}}")
            #expect(problems.contains { $0.hasPrefix("\(path): ") && $0.contains(words) }, "\(ports): \(problems)")
        }
    }

    @Test func everyUpdateFieldIsRead() throws {
        let spec = try Self.decode(#"""
            {"name": "web", "replicas": 2, "task": {"image": "i"},
             "update": {"parallelism": 2, "order": "stop-first", "healthyDeadline": "30s", "minHealthyTime": "1500ms", "autoRollback": false}}
            """#)
        #expect(spec.update == UpdatePolicy(parallelism: 2, order: .stopFirst, healthyDeadline: .seconds(30), minHealthyTime: .milliseconds(1500), autoRollback: false))
    }

    @Test func everyProblemIsReportedWithItsPath() {
        let problems = Self.problems(#"""
            {"name": "Web_1", "replicas": -1, "task": {"id": "t1", "image": ""}, "colour": "red",
             "update": {"parallelism": 0, "order": "sideways", "healthyDeadline": "0s", "autoRollback": "yes"}}
            """#)
        for path in ["name", "replicas", "task.id", "task.image", "colour", "update.parallelism", "update.order", "update.healthyDeadline", "update.autoRollback"] {
            #expect(problems.contains { $0.hasPrefix(path + ":") }, "\(path) reported: \(problems)")
        }
    }

    @Test func aServiceNeedsANameAndATaskAndValidJSON() {
        #expect(Self.problems(#"{"replicas": 2}"#).contains { $0.hasPrefix("name:") })
        #expect(Self.problems(#"{"name": "web"}"#).contains { $0.hasPrefix("task:") })
        #expect(Self.problems(#"{"name": "web", "task": {"image": "i"}, "replicas": 1001}"#) == ["replicas: must be from 0 to 1000, not 1001"])
        #expect(Self.problems("{not json").first?.contains("not valid JSON") == true)
        #expect(Self.problems("[]").first?.contains("expected an object") == true)
    }

    @Test func namesAreDNSLabels() {
        for good in ["web", "a", "api-2", String(repeating: "x", count: 63)] { #expect(ServiceSpec.nameProblem(good) == nil, "\(good)") }
        for bad in ["", "-web", "web-", "Web", "web_1", "web.1", String(repeating: "x", count: 64)] { #expect(ServiceSpec.nameProblem(bad) != nil, "\(bad)") }
    }

    @Test func aChangeTakesAnySubsetOfTheFieldsAndChecksEach() throws {
        let scale = try ServiceChange.decode(Data(#"{"replicas": 5}"#.utf8))
        #expect(scale == ServiceChange(replicas: 5))
        let template = try ServiceChange.decode(Data(#"{"task": {"image": "orch-busybox:latest", "command": ["sleep", "1"]}}"#.utf8))
        #expect(template.task?.command == ["sleep", "1"] && template.replicas == nil && template.update == nil)
        do {
            _ = try ServiceChange.decode(Data(#"{}"#.utf8))
            Issue.record("an empty change is refused")
        } catch {
            #expect(error.problems.first?.message.contains("nothing to change") == true)
        }
        do {
            _ = try ServiceChange.decode(Data(#"{"replicas": 2000, "task": {"id": "x", "image": ""}, "colour": "red"}"#.utf8))
            Issue.record("a bad change is refused")
        } catch {
            #expect(Set(error.problems.map(\.path)).isSuperset(of: ["replicas", "task.id", "task.image", "colour"]), "\(error.problems)")
        }
    }

    @Test func aServiceFileWhereATaskFileGoesSaysWhatItIs() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("data/service-web.json")
        do {
            _ = try TaskFile.decode(try Data(contentsOf: url))
            Issue.record("a service file is no task file")
        } catch let error as TaskSpecError {
            #expect(error.problems.count == 1 && error.problems[0].message.contains("this is a service file"), "\(error.problems)")
        }
    }

    @Test func aServiceIsWrittenAsItsFileAndReadBackTheSame() throws {
        let spec = try Self.decode(#"{"name": "web", "replicas": 2, "task": {"image": "i", "command": ["a"]}, "update": {"parallelism": 2, "order": "stop-first", "minHealthyTime": "1500ms"}}"#)
        let again = try ServiceSpec(json: spec.json)
        #expect(again == spec)
        let record = ServiceRecord(spec, now: Date(timeIntervalSince1970: 0))
        let decoded = try JSONDecoder().decode(ServiceRecord.self, from: try JSONEncoder().encode(record))
        #expect(decoded == record, "the store's encoding keeps every field")
    }
}
