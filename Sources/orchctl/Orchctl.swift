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
              orchctl manager                         run a manager (REST on 127.0.0.1:5555)
              orchctl worker --manager 127.0.0.1:5556   run a worker for the manager there
              orchctl validate -f data/task1.json     check a task file and show it as it would run
            """,
        version: "0.1.0",
        subcommands: [
            ManagerCommand.self, WorkerCommand.self, DevCommand.self, RunCommand.self, StatusCommand.self, StopCommand.self, RemoveCommand.self,
            ServiceCommand.self, DeployCommand.self, NodesCommand.self, LogsCommand.self, EventsCommand.self, TokenCommand.self, ValidateCommand.self,
        ])

    /// The client's options may come before the command too (`orchctl --api URL status`):
    /// they are moved to its end, where its own parser takes them.
    static func main() async {
        await main(globalOptionsMovedLast(Array(CommandLine.arguments.dropFirst())))
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
