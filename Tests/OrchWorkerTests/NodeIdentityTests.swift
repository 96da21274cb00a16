import Foundation
@testable import OrchWorker
import Testing

@Suite struct NodeIdentityTests {
    func directory() -> String {
        NSTemporaryDirectory() + "orch-identity-\(UUID().uuidString.prefix(8))/worker-a"
    }

    @Test func aNewDirectoryGetsAnIdThatStaysTheSame() throws {
        let dir = directory()
        let first = try NodeIdentity.loadOrCreate(in: dir)
        #expect(FileManager.default.fileExists(atPath: dir + "/node-id"))
        #expect(try NodeIdentity.loadOrCreate(in: dir) == first, "a restarted worker is the same node")
        #expect(try NodeIdentity.loadOrCreate(in: directory()) != first)
    }

    @Test func aFileThatHoldsNoValidIdIsAClearErrorAndIsLeftAlone() throws {
        let dir = directory()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data("not a valid id!\n".utf8).write(to: URL(fileURLWithPath: dir + "/node-id"))
        #expect {
            try NodeIdentity.loadOrCreate(in: dir)
        } throws: { error in
            "\(error)".contains("holds no valid node id") && "\(error)".contains("remove it")
        }
        #expect(try String(contentsOfFile: dir + "/node-id", encoding: .utf8) == "not a valid id!\n")
    }

    @Test func aDirectoryThatCannotBeMadeIsAClearError() throws {
        #expect {
            try NodeIdentity.loadOrCreate(in: "/proc/orch-cannot-be-here")
        } throws: { error in
            "\(error)".contains("cannot keep the node id in /proc/orch-cannot-be-here")
        }
    }
}
