import Foundation
import OrchTestSupport
import Testing

/// The manager's disk fills up under submissions: it answers 503 with a clear error, answers
/// 2xx only for what it stored, and recovers by itself once there is room again.
@Suite("End to end: the store's disk fills up", .serialized, .timeLimit(.minutes(3)))
struct StoreFailureTests {
    static let task = #"{"image": "orch-busybox:latest", "command": ["sleep", "600"], "resources": {"cpus": 0.02, "memory": "8MiB"}}"#

    @Test func aFullDiskAnswers503AndTheManagerRecoversByItselfLosingNothingAnswered() async throws {
        let data = temporaryDirectory("full-disk")
        try run("/bin/mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", data)
        defer { try? run("/bin/umount", "-l", data) }
        let http = try freePort(), wire = try freePort()
        var manager = try ClusterProcesses.launchManager(http: http, wire: wire, data: data, grace: "5s")
        defer { manager.signal(SIGKILL) }
        try await manager.waitForOutput("listening on 127.0.0.1:\(http)")
        let api = "http://127.0.0.1:\(http)"

        var stored: Set<String> = []
        func submit() async throws -> (status: Int, body: String) {
            let answer = try await OrchTestSupport.http(.POST, "\(api)/tasks", body: Self.task)
            if (200..<300).contains(answer.status) {
                let object = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
                stored.insert(try #require(object?["id"] as? String))
            }
            return answer
        }
        for _ in 0..<20 { #expect(try await submit().status == 201) }

        // Fill the disk, then submit until the store refuses.
        let filler = data + "/filler"
        fill(filler)
        var refusal: (status: Int, body: String)?
        let deadline = ContinuousClock.now + .seconds(60)
        while refusal == nil, ContinuousClock.now < deadline {
            let answer = try await submit()
            if answer.status != 201 { refusal = answer }
        }
        let refused = try #require(refusal, "a full disk was never noticed")
        #expect(refused.status == 503, "answer: \(refused.status) \(refused.body)")
        #expect(refused.body.contains("store_unavailable"), "\(refused.body)")
        #expect(try await submit().status == 503, "still refused while the disk is full")
        #expect(try await OrchTestSupport.http(.GET, "\(api)/tasks").status == 200, "reads are still served")

        // Room again: the manager recovers by itself, without a restart.
        try FileManager.default.removeItem(atPath: filler)
        var recovered = false
        let roomAgain = ContinuousClock.now
        while !recovered, ContinuousClock.now - roomAgain < .seconds(30) {
            recovered = try await submit().status == 201
            if !recovered { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(recovered, "the manager accepts submissions again once the disk has room")
        let recoveredAfter = ContinuousClock.now - roomAgain

        // Every submission answered 2xx is there after a crash.
        manager.signal(SIGKILL)
        _ = try await manager.waitForExit()
        manager = try ClusterProcesses.launchManager(http: http, wire: wire, data: data, grace: "5s")
        try await manager.waitForOutput("listening on 127.0.0.1:\(http)")
        let listed = try await OrchTestSupport.http(.GET, "\(api)/tasks?limit=100000")
        let ids = Set((try JSONSerialization.jsonObject(with: Data(listed.body.utf8)) as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
        #expect(stored.isSubset(of: ids), "answered 2xx but lost: \(stored.subtracting(ids).count) of \(stored.count)")
        print("fault: disk full: \(stored.count) answered 2xx, \(stored.subtracting(ids).count) lost after a crash; "
              + "accepting again \(recoveredAfter) after the disk had room")
    }

    /// Writes zeros to `path` until the file system has no room left.
    func fill(_ path: String) {
        FileManager.default.createFile(atPath: path, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: path) else { return }
        defer { try? handle.close() }
        let chunk = Data(count: 256 << 10)
        while (try? handle.write(contentsOf: chunk)) != nil {}
        // Fill the last pages too, a byte at a time would be slow: 4 KiB blocks.
        let small = Data(count: 4096)
        while (try? handle.write(contentsOf: small)) != nil {}
    }

    func run(_ executable: String, _ arguments: String...) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestTimeout(what: "\(executable) \(arguments.joined(separator: " ")) to succeed (exit \(process.terminationStatus))")
        }
    }
}
