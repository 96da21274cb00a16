import Foundation
@testable import OrchWorker
import Testing

/// The moment the manager was last heard from outlives the worker process, so that a task's
/// disconnect policy counts the silence across a restart.
@Suite struct LastContactTests {
    @Test func whatIsWrittenIsReadBackAndNothingWrittenIsNothing() throws {
        let dir = NSTemporaryDirectory() + "orch-contact-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        #expect(LastContact.read(in: dir) == nil, "a first start knows of no contact")
        let when = Date(timeIntervalSince1970: 1_800_000_123.456)
        try LastContact.write(when, in: dir)
        let read = try #require(LastContact.read(in: dir))
        #expect(abs(read.timeIntervalSince(when)) < 0.001)
        try "not a date".write(toFile: LastContact.path(in: dir), atomically: true, encoding: .utf8)
        #expect(LastContact.read(in: dir) == nil, "an unreadable file is no contact, not a crash")
    }
}
