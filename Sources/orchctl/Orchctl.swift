import ArgumentParser
import Foundation
import OrchCore

@main
struct Orchctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orchctl",
        abstract: "Runs and drives a small container orchestrator.",
        discussion: """
            Examples:
              orchctl manager                           run a manager (REST on :5555)
              orchctl worker --manager 127.0.0.1:5556   run a worker for it
              orchctl dev                               both in one process, to try
              orchctl run -f data/task1.json            run a task
              orchctl status --watch                    see the tasks change
              orchctl validate -f data/task1.json       check a task file
            """.reflowed,
        version: "0.1.0",
        subcommands: [
            ManagerCommand.self, WorkerCommand.self, DevCommand.self, RunCommand.self, StatusCommand.self, StopCommand.self, RemoveCommand.self,
            ServiceCommand.self, DeployCommand.self, NodesCommand.self, ManagersCommand.self, LogsCommand.self, EventsCommand.self, TokenCommand.self, ValidateCommand.self,
        ])

    /// The client's options may come before the command too (`orchctl --api URL status`):
    /// they are moved to its end, where its own parser takes them.
    static func main() async {
        let arguments = globalOptionsMovedLast(Array(CommandLine.arguments.dropFirst()))
        if let problem = unknownCommand(arguments) {
            printError(problem)
            Foundation.exit(ExitCode.validationFailure.rawValue)
        }
        await main(arguments)
    }

    /// A first word that names no command: said so, with the nearest command's name.
    static func unknownCommand(_ arguments: [String]) -> String? {
        guard let first = arguments.first, !first.hasPrefix("-"), first != "help" else { return nil }
        let names = configuration.subcommands.flatMap { [$0.configuration.commandName ?? ""] + $0.configuration.aliases }
        guard !names.contains(first) else { return nil }
        let hint = nearestWord(to: first, in: names).map { "; did you mean '\($0)'?" } ?? ""
        return "unknown command '\(first)'\(hint) (orchctl --help lists them)"
    }

    static let globalOptionsWithValue: Set<String> = ["--api", "--token", "--token-file", "--ca-file"]
    static let globalFlags: Set<String> = ["--json"]

    static func globalOptionsMovedLast(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name = String(argument.split(separator: "=", maxSplits: 1).first ?? "")
            if globalFlags.contains(argument) || (globalOptionsWithValue.contains(name) && argument.contains("=")) {
                leading.append(argument)
                index += 1
            } else if globalOptionsWithValue.contains(argument), index + 1 < arguments.count {
                leading += [argument, arguments[index + 1]]
                index += 2
            } else {
                break
            }
        }
        guard !leading.isEmpty, index < arguments.count else { return arguments }
        return Array(arguments[index...]) + leading
    }
}

/// Prints `message` on stderr as orchctl's one-line error format.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("orchctl: \(message)\n".utf8))
}

extension String {
    /// A help text's paragraphs each on one line, for the parser to wrap at the terminal's
    /// width: a line that is not indented joins the one before it. Indented lines (examples),
    /// blank lines and `- ` items keep their own.
    var reflowed: String {
        var lines: [String] = []
        var joinable = false
        for line in split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let plain = !line.isEmpty && !line.hasPrefix(" ") && !line.hasPrefix("- ")
            if plain && joinable, let last = lines.popLast() {
                lines.append(last + " " + line)
            } else {
                lines.append(line)
            }
            joinable = !line.isEmpty && !line.hasPrefix(" ") && !line.hasSuffix(":")
        }
        return lines.joined(separator: "\n")
    }
}
