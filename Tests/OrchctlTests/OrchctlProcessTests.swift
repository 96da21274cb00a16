import Foundation
import OrchTestSupport
import Testing

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs orchctl with `arguments` (and `input` on stdin), killing it after 30 s.
func orchctl(_ arguments: [String], input: String? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: orchctlPath)
    process.arguments = arguments
    process.currentDirectoryURL = repositoryRoot
    let out = Pipe(), err = Pipe(), stdin = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    let deadline = Date().addingTimeInterval(30)
    let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
    let stderrData = err.fileHandleForReading.readDataToEndOfFile()
    while process.isRunning {
        if Date() > deadline { process.terminate() }
        Thread.sleep(forTimeInterval: 0.01)
    }
    return ProcessResult(
        status: process.terminationStatus, stdout: String(decoding: stdoutData, as: UTF8.self),
        stderr: String(decoding: stderrData, as: UTF8.self))
}

@Suite("orchctl validate", .timeLimit(.minutes(2)))
struct OrchctlValidateTests {
    @Test func validFilePrintsTheNormalizedTask() throws {
        let result = try orchctl(["validate", "-f", "data/task1.json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try #require(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect((object["resources"] as? [String: Any])?["memory"] as? Int == 64 << 20)
    }

    @Test func cubeFileFromStdinIsTranslated() throws {
        let cube = try String(contentsOf: repositoryRoot.appendingPathComponent("data/cube-task.json"), encoding: .utf8)
        let result = try orchctl(["validate", "--filename", "-"], input: cube)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("\"id\" : \"0f7c9d2e-8b14-4f3a-a6d5-3c2b1e0f9a87\""))
        #expect(result.stderr.contains("note: Task.State has no effect here"))
    }

    @Test func invalidFileListsEveryProblemAndExitsOne() throws {
        let result = try orchctl(["validate", "-f", "-"], input: #"{"image": "", "resources": {"memory": "1MiB"}}"#)
        #expect(result.status == 1)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.contains("orchctl: -: 2 problems"))
        #expect(result.stderr.contains("  image: must not be empty"))
        #expect(result.stderr.contains("  resources.memory: must be at least 6 MiB"))
    }

    @Test func missingFileIsOneClearLine() throws {
        let result = try orchctl(["validate", "-f", "no/such/task.json"])
        #expect(result.status == 2)
        #expect(result.stderr == "orchctl: no such file: no/such/task.json\n")
    }

    @Test func aListenerOffLoopbackWithoutTLSIsRefusedWithTheFlagThatFixesIt() throws {
        // The worker's API has no TLS: off loopback it is refused. (The manager's REST API
        // serves TLS there instead, and its cluster port is always mutual TLS: RESTTLSTests.)
        let data = temporaryDirectory("exposed")
        let result = try orchctl(["worker", "--manager", "127.0.0.1:1", "--http", "0.0.0.0:0", "--state-dir", data + "/w"])
        #expect(result.status != 0, "refused")
        let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("orchctl:") }
        #expect(lines.count == 1 && lines[0].contains("without TLS") && lines[0].contains("--http 127.0.0.1:0"), "one line naming the fix: \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: data + "/w/api.token"), "nothing was started or written")
    }

    @Test func anAdvertiseAddressThatIsNoIPAddressIsRefusedInOneLine() throws {
        for bad in ["web.example", "0.0.0.0", "300.1.1.1", ""] {
            let data = temporaryDirectory("advertise")
            let result = try orchctl(["worker", "--manager", "127.0.0.1:1", "--http", "127.0.0.1:0", "--state-dir", data + "/w", "--advertise-address", bad])
            #expect(result.status != 0, "\(bad) refused")
            let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("orchctl:") }
            #expect(lines.count == 1 && lines[0].contains("--advertise-address must be one IP address"), "\(bad): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: data + "/w/api.token"), "nothing was started or written")
        }
    }

    @Test func aLabelInTheWorkersOwnNamespaceIsRefusedWithItsReason() throws {
        let data = temporaryDirectory("label")
        let result = try orchctl(["worker", "--manager", "127.0.0.1:1", "--http", "127.0.0.1:0", "--state-dir", data + "/w", "--label", "orch.mesh=haproxy"])
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        #expect(lines.count == 1 && lines[0].contains("set by the worker itself"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: data + "/w/api.token"), "nothing was started or written")
    }

    @Test func aCertificateWithoutItsKeyIsRefusedInOneLine() throws {
        let data = temporaryDirectory("half-tls")
        let result = try orchctl(["manager", "--http", "127.0.0.1:0", "--wire", "127.0.0.1:0", "--data", data, "--http-cert", data + "/x.pem"])
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("orchctl:") }
        #expect(lines.count == 1 && lines[0].contains("--http-key"), "one line naming the fix: \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: data + "/manager.sqlite"), "nothing was started or written")

        // Both given, neither readable: the manager does not start, and says which.
        let missing = try orchctl([
            "manager", "--http", "127.0.0.1:0", "--wire", "127.0.0.1:0", "--data", data,
            "--http-cert", data + "/none.pem", "--http-key", data + "/none.key",
        ])
        #expect(missing.status != 0)
        let said = missing.stderr.split(separator: "\n").filter { $0.hasPrefix("orchctl:") }
        #expect(said.count == 1 && said[0].contains("cannot use --http-cert"), "\(missing.stderr)")
    }

    @Test func aDNSPortInUseStopsTheManagerWithTheFlagThatFixesIt() throws {
        // A UDP port held here (without SO_REUSEADDR, so that no one else binds it).
        let held = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(held) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(held, $0, length) == 0 && getsockname(held, $0, &length) == 0 }
        }
        #expect(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let data = temporaryDirectory("dns-in-use")
        let result = try orchctl(["manager", "--http", "127.0.0.1:0", "--wire", "127.0.0.1:0", "--data", data, "--dns", "127.0.0.1:\(port)"])
        #expect(result.status != 0)
        let said = result.stderr.split(separator: "\n").filter { $0.hasPrefix("orchctl:") }
        #expect(said.count == 1 && said[0].contains("cannot answer DNS on 127.0.0.1:\(port)") && said[0].contains("--dns"), "\(result.stderr)")
    }

    @Test func helpShowsAnExample() throws {
        let result = try orchctl(["validate", "--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("orchctl validate -f data/task1.json"))
    }
}
