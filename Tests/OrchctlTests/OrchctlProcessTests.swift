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
        #expect((object["resources"] as? [String: Any])?["memory"] as? String == "64MiB", "sizes as a task file writes them")
        #expect(result.stdout.contains("\"environment\": {}") && result.stdout.contains("\"labels\": {}"), "empty objects on one line: \(result.stdout)")
        #expect(result.stdout.contains("\"command\": [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]"), "\(result.stdout)")
        // What it prints is a task file itself, read back as the same task.
        let again = try orchctl(["validate", "-f", "-"], input: result.stdout)
        #expect(again.status == 0 && again.stdout == result.stdout, "\(again.stderr)")
    }

    @Test func aSyntaxErrorSaysWhereAndATrailingCommaIsRefused() throws {
        let comma = try orchctl(["validate", "-f", "-"], input: "{\n  \"image\": \"orch-busybox:latest\",\n  \"command\": [\"true\",],\n}\n")
        #expect(comma.status == 1 && comma.stdout.isEmpty)
        #expect(comma.stderr.contains("line 3, column 21: a trailing comma"), "\(comma.stderr)")
        let missing = try orchctl(["validate", "-f", "-"], input: "{\n  \"image\": \"orch-busybox:latest\"\n  \"command\": [\"true\"]\n}\n")
        #expect(missing.status == 1 && missing.stderr.contains("line 3, column 3: expected ',' or '}'") && missing.stderr.contains("missing comma"), "\(missing.stderr)")
    }

    @Test func cubeFileFromStdinIsTranslated() throws {
        let cube = try String(contentsOf: repositoryRoot.appendingPathComponent("data/cube-task.json"), encoding: .utf8)
        let result = try orchctl(["validate", "--filename", "-"], input: cube)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("\"id\": \"0f7c9d2e-8b14-4f3a-a6d5-3c2b1e0f9a87\""), "\(result.stdout)")
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
        #expect(result.status == 1)
        #expect(result.stderr == "orchctl: no such file: no/such/task.json\n")
    }

    /// One rule, as the README says: an error is exit 1, a usage error (an unknown command or
    /// option, a bad value) 64, success 0, whatever the command.
    @Test func exitCodesFollowOneRule() throws {
        let cases: [([String], Int32)] = [
            (["validate", "-f", "no/such/task.json"], 1),
            (["run", "-f", "no/such/task.json", "--api", "127.0.0.1:1"], 1),
            (["service", "create", "-f", "no/such/service.json", "--api", "127.0.0.1:1"], 1),
            (["status", "--api", "127.0.0.1:1"], 1),
            (["validate", "-f", "data/task1.json"], 0),
            (["stauts"], 64),
            (["status", "--nope"], 64),
            (["run", "-f", "data/task1.json", "--timeout", "5"], 64),
            (["logs", "x", "--tail", "-1"], 64),
        ]
        for (arguments, expected) in cases {
            let result = try orchctl(arguments)
            #expect(result.status == expected, "\(arguments.joined(separator: " ")): exit \(result.status), expected \(expected): \(result.stderr)")
        }
    }

    @Test func anUnknownCommandIsNamedWithTheNearestOne() throws {
        let typo = try orchctl(["stauts"])
        #expect(typo.status == 64 && typo.stderr == "orchctl: unknown command 'stauts'; did you mean 'status'? (orchctl --help lists them)\n", "\(typo.stderr)")
        let far = try orchctl(["frobnicate", "x"])
        #expect(far.stderr.contains("unknown command 'frobnicate'") && !far.stderr.contains("did you mean") && !far.stderr.contains("unexpected arguments"), "\(far.stderr)")
        // Global options before the command do not hide it.
        let after = try orchctl(["--api", "127.0.0.1:1", "stauts"])
        #expect(after.stderr.contains("did you mean 'status'"), "\(after.stderr)")
    }

    /// Help texts are paragraphs the parser wraps: no line broken in mid-sentence, no example
    /// line wrapped, at 80 columns, for every command.
    @Test func helpTextsBreakNoSentence() throws {
        var commands: [[String]] = [[]] + "manager worker dev run status stop rm service deploy nodes logs events token validate".split(separator: " ").map { [String($0)] }
        commands += "create ls ps endpoints scale update rollback rm".split(separator: " ").map { ["service", String($0)] }
        commands += "ls drain undrain rm".split(separator: " ").map { ["nodes", String($0)] }
        commands += "create list revoke rotate-join".split(separator: " ").map { ["token", String($0)] }
        for command in commands {
            let help = try orchctl(command + ["--help"])
            #expect(help.status == 0 && help.stdout.contains("USAGE:"), "\(command): \(help.stderr)")
            let lines = help.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            for (line, next) in zip(lines, lines.dropFirst()) where !line.isEmpty && !next.isEmpty {
                let plain = !line.hasPrefix(" ") && !next.hasPrefix(" ")
                #expect(!(plain && line.count < 45 && !".:)".contains(line.last!) && next.first!.isLowercase),
                        "\(command): a sentence broken after \"\(line)\"")
                #expect(!(line.hasPrefix("  orchctl") && !next.hasPrefix(" ")), "\(command): an example wrapped: \"\(line)\" / \"\(next)\"")
            }
        }
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
