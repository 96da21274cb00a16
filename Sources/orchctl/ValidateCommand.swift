import ArgumentParser
import Foundation
import OrchCore

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Checks a task file, ours or Cube's, and prints the task as it would run.",
        discussion: """
            Every problem is listed with the path of its field; the exit code is 1 when there is one.
            Cube's task events are translated (see docs/TASKS.md); fields that have no effect are named.

            Examples:
              orchctl validate -f data/task1.json
              cat data/cube-task.json | orchctl validate -f -
            """.reflowed)

    @Option(name: [.short, .customLong("filename")], help: ArgumentHelp("The task file, or - for standard input.", valueName: "file"))
    var file: String

    func run() throws {
        let data: Data
        do {
            data = try readTaskFile(file)
        } catch {
            printError(error.localizedDescription)
            throw ExitCode(1)
        }
        let submission: TaskSubmission
        do {
            submission = try TaskFile.decode(data)
        } catch {
            printError("\(file): \(error.problems.count == 1 ? "1 problem" : "\(error.problems.count) problems")")
            for problem in error.problems { FileHandle.standardError.write(Data("  \(problem)\n".utf8)) }
            throw ExitCode(1)
        }
        noteIgnoredFields(submission.ignoredFields)
        print(Self.readable(submission.spec).prettyText)
    }

    /// The normalized spec as a task file would say it: sizes with their unit (`64MiB`).
    static func readable(_ spec: TaskSpec) -> JSONValue {
        guard case .object(var object) = spec.json, case .object(var resources)? = object["resources"] else { return spec.json }
        for key in ["memory", "memoryMax"] {
            if case .number(let bytes)? = resources[key] { resources[key] = .string(ByteCount.exactText(Int(bytes))) }
        }
        object["resources"] = .object(resources)
        return .object(object)
    }
}

/// A note on stderr for each field of a task file that has no effect (Cube's `State`, ...).
func noteIgnoredFields(_ fields: [String]) {
    for field in fields {
        FileHandle.standardError.write(Data("note: \(field) has no effect here and is ignored\n".utf8))
    }
}

/// Reads a task file from `path`, or standard input for `-`, refusing files over 1 MiB.
func readTaskFile(_ path: String) throws -> Data {
    let data: Data
    if path == "-" {
        data = FileHandle.standardInput.readDataToEndOfFile()
    } else {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CLIError("no such file: \(path)")
        }
        data = try Data(contentsOf: URL(fileURLWithPath: path))
    }
    guard data.count <= TaskFile.maximumBytes else { throw CLIError("\(path) is larger than 1 MiB") }
    return data
}

struct CLIError: LocalizedError {
    let message: String
    init(_ message: String) { self.message = message }
    var errorDescription: String? { message }
}
