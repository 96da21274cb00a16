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
            ServiceCommand.self, DeployCommand.self, NodesCommand.self, LogsCommand.self, TokenCommand.self, ValidateCommand.self,
        ])
}

/// Prints `message` on stderr as orchctl's one-line error format.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("orchctl: \(message)\n".utf8))
}
