import Foundation
import OrchCore
import OrchRuntime
@testable import OrchWorker
import Testing

/// The copies a worker keeps of removed attempts' output: read back as written (both
/// streams, in order), only for their own attempt, cut to the last 1 MiB, never replaced by
/// an older attempt's, at most so many tasks, and no task id names a path outside.
@Suite struct KeptOutputTests {
    func directory() -> String { NSTemporaryDirectory() + "orch-kept-\(UUID().uuidString.prefix(8))" }

    func chunk(_ text: String, _ stream: LogChunk.Stream = .stdout) -> LogChunk { LogChunk(stream: stream, bytes: Array(text.utf8)) }

    @Test func aCopyIsReadBackForItsAttemptOnly() throws {
        let kept = KeptOutput(directory: directory())
        let task = TaskID(rawValue: "web")
        #expect(kept.output(of: task, attempt: 1) == nil, "nothing kept yet")
        let output = [chunk("starting\n"), chunk("oops\n", .stderr), chunk("bye\n")]
        try kept.keep(output, task: task, attempt: 3)
        #expect(kept.output(of: task, attempt: 3) == output)
        #expect(kept.output(of: task, attempt: 2) == nil, "another attempt's output is not this one's")
        #expect(kept.output(of: TaskID(rawValue: "api"), attempt: 3) == nil)
        try kept.keep([], task: task, attempt: 4)
        #expect(kept.output(of: task, attempt: 4) == [], "an attempt that printed nothing has an empty copy")
        #expect(kept.output(of: task, attempt: 3) == nil, "the newer attempt's copy replaced it")
    }

    @Test func anOlderAttemptNeverReplacesANewerOne() throws {
        let kept = KeptOutput(directory: directory())
        let task = TaskID(rawValue: "web")
        try kept.keep([chunk("five\n")], task: task, attempt: 5)
        try kept.keep([chunk("four\n")], task: task, attempt: 4)
        #expect(kept.output(of: task, attempt: 5) == [chunk("five\n")])
        #expect(kept.output(of: task, attempt: 4) == nil)
    }

    @Test func onlyTheLastMebibyteIsKept() throws {
        let kept = KeptOutput(directory: directory())
        let task = TaskID(rawValue: "chatty")
        let line = String(repeating: "x", count: 1023) + "\n"
        var output = [chunk("the very first line\n")]
        for _ in 0..<1500 { output.append(chunk(line)) }
        output.append(chunk("the end\n", .stderr))
        try kept.keep(output, task: task, attempt: 1)
        let copy = try #require(kept.output(of: task, attempt: 1))
        #expect(copy.reduce(0) { $0 + $1.bytes.count } == KeptOutput.maximumBytes)
        #expect(copy.last == chunk("the end\n", .stderr))
        #expect(!copy.contains(chunk("the very first line\n")), "the start went")
    }

    @Test func tailCountsLinesAcrossChunksAsTheEngineDoes() {
        let output = [chunk("a\nb"), chunk("c\n", .stderr), chunk("d\ne\n")]
        #expect(KeptOutput.tail(1, of: output) == [chunk("e\n")])
        #expect(KeptOutput.tail(2, of: output) == [chunk("d\ne\n")])
        #expect(KeptOutput.tail(3, of: output) == [chunk("b"), chunk("c\n", .stderr), chunk("d\ne\n")], "a line may span chunks")
        #expect(KeptOutput.tail(10, of: output) == output, "fewer lines than asked: all of them")
        #expect(KeptOutput.tail(0, of: output) == [])
        #expect(KeptOutput.tail(1, of: [chunk("no newline at the end")]) == [chunk("no newline at the end")])
        #expect(KeptOutput.tail(1, of: [chunk("x\nlast, unterminated")]) == [chunk("last, unterminated")])
    }

    @Test func atMostSoManyTasksAreKeptTheOldestGoFirst() throws {
        let path = directory()
        let kept = KeptOutput(directory: path, maximumTasks: 3)
        for index in 1...5 {
            try kept.keep([chunk("task \(index)\n")], task: TaskID(rawValue: "t\(index)"), attempt: 1)
            // Modification times a little apart, so that "oldest" is well defined.
            try FileManager.default.setAttributes(
                [.modificationDate: Date(timeIntervalSinceNow: Double(index - 10))], ofItemAtPath: kept.path(of: TaskID(rawValue: "t\(index)")))
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
        #expect(files.count == 3, "\(files)")
        #expect(kept.output(of: TaskID(rawValue: "t5"), attempt: 1) != nil)
        #expect(kept.output(of: TaskID(rawValue: "t1"), attempt: 1) == nil)
    }

    @Test func noTaskIDNamesAPathOutsideTheDirectory() throws {
        let path = directory()
        let kept = KeptOutput(directory: path)
        let odd = TaskID(rawValue: "../../etc/passwd")
        try kept.keep([chunk("mine\n")], task: odd, attempt: 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: path) == ["%2E%2E%2F%2E%2E%2Fetc%2Fpasswd.out"])
        #expect(kept.output(of: odd, attempt: 1) == [chunk("mine\n")])
    }

    @Test func aDamagedCopyServesWhatIsWholeAndAStrangeFileNothing() throws {
        let kept = KeptOutput(directory: directory())
        let task = TaskID(rawValue: "web")
        try kept.keep([chunk("whole\n"), chunk("cut short\n")], task: task, attempt: 2)
        let file = kept.path(of: task)
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        try data.prefix(data.count - 3).write(to: URL(fileURLWithPath: file))
        #expect(kept.output(of: task, attempt: 2) == [chunk("whole\n")])
        try Data("not a copy at all".utf8).write(to: URL(fileURLWithPath: file))
        #expect(kept.output(of: task, attempt: 2) == nil)
        try kept.keep([chunk("again\n")], task: task, attempt: 1)
        #expect(kept.output(of: task, attempt: 1) == [chunk("again\n")], "a file that is no copy is replaced")
    }
}
