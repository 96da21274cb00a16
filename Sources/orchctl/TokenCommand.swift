import ArgumentParser
import Foundation
import OrchCore

/// `orchctl token`: the REST API's tokens (an admin's token is needed for all of these).
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Creates, lists and revokes the REST API's tokens (needs an admin token).",
        discussion: """
            Roles: viewer (reads), operator (also runs and stops tasks), admin (also removes
            nodes and manages tokens). A token is printed once, when created; the manager
            keeps only its SHA-256.

            Examples:
              orchctl token create --name ci --role operator
              orchctl token list
              orchctl token revoke ci
              orchctl token rotate-join
            """.reflowed,
        subcommands: [Create.self, List.self, Revoke.self, RotateJoin.self])

    struct RotateJoin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-join",
            abstract: "Makes a new join token for workers (the old one joins no one from now on; joined nodes keep working).")

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let client = try options.client
                let answer = try await client.request(.POST, "/join-token/rotate")
                let body = try client.decode([String: String].self, from: answer)
                if options.json { printJSON(answer); return }
                print(body["token"] ?? "")
                printError("a new join token; it is also in join.token in the manager's data directory")
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Makes a token and prints it (only this once).")

        @Option(help: ArgumentHelp("Its name: who or what uses it (letters, digits, '.', '_', '-').", valueName: "name"))
        var name: String

        @Option(help: ArgumentHelp("viewer, operator or admin.", valueName: "role"))
        var role: String = APIRole.viewer.rawValue

        @OptionGroup var options: ClientOptions

        func validate() throws {
            guard APIRole(rawValue: role) != nil else {
                throw ValidationError("--role must be one of \(APIRole.allCases.map(\.rawValue).joined(separator: ", ")), not \(role)")
            }
        }

        func run() async throws {
            try await runClient {
                let client = try options.client
                let body = try JSONSerialization.data(withJSONObject: ["name": name, "role": role])
                let answer = try await client.request(.POST, "/tokens", body: body)
                let created = try client.decode(CreatedAPITokenDTO.self, from: answer)
                if options.json { printJSON(answer); return }
                print(created.token)
                printError("token \(created.name) (\(created.role.rawValue)) made; it is shown only this once")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Shows the tokens: names, roles, when made and last used.")

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let client = try options.client
                let answer = try await client.request(.GET, "/tokens")
                let tokens = try client.decode([APITokenDTO].self, from: answer)
                if options.json { printJSON(answer); return }
                printTable(["NAME", "ROLE", "CREATED", "LAST USED"], tokens.map { token in
                    [token.name, token.role.rawValue, age(since: token.createdAt) + " ago", token.lastUsedAt.map { age(since: $0) + " ago" } ?? "never"]
                })
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revokes a token: it is refused from now on.")

        @Argument(help: ArgumentHelp("The token's name.", valueName: "name"))
        var name: String

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let client = try options.client
                let path = "/tokens/" + (name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? name)
                let answer = try await client.request(.DELETE, path)
                guard answer.status == 204 else { throw APIClient.failure(answer) }
                print("revoked \(name)")
            }
        }
    }
}
