import Foundation

/// A PostgreSQL server of the test's own, never the system's: `initdb` in a temporary
/// directory, `pg_ctl` on a free loopback port (no Unix socket outside that directory),
/// `fsync` off, trust for the user `orch` on loopback only. As root (CI), the server runs as
/// the `postgres` user that Debian's package makes, since PostgreSQL refuses to run as root.
/// Missing PostgreSQL is an error that says how to install it, never a skipped test.
public final class PostgresServer: Sendable {
    public let port: Int
    public let directory: String
    private let bin: String

    /// The URL of `database` on this server.
    public func url(_ database: String = "orch") -> String { "postgres://orch@127.0.0.1:\(port)/\(database)" }

    /// Starts a server (about a second), runs `body` with it, and stops and removes it after.
    public static func with<T>(
        durable: Bool = false, alsoOn addresses: [String] = [], trusting networks: [String] = [], _ body: (PostgresServer) async throws -> T
    ) async throws -> T {
        let server = try start(durable: durable, alsoOn: addresses, trusting: networks)
        do {
            let result = try await body(server)
            server.stop()
            return result
        } catch {
            server.stop()
            throw error
        }
    }

    /// `durable`: PostgreSQL's own defaults (`fsync`, `synchronous_commit`), for benchmarks;
    /// otherwise both off, for tests.
    /// `alsoOn`: more addresses to listen on than 127.0.0.1 (a test's network namespace's
    /// host end, say); `trusting`: networks (CIDR) from which `orch` may connect too.
    public static func start(durable: Bool = false, alsoOn addresses: [String] = [], trusting networks: [String] = []) throws -> PostgresServer {
        let bin = try binDirectory()
        let directory = temporaryDirectory("postgres")
        let port = try freePort()
        let server = PostgresServer(port: port, directory: directory, bin: bin, durable: durable, listen: ["127.0.0.1"] + addresses)
        if getuid() == 0 {
            guard let account = getpwnam("postgres") else {
                throw PostgresServerError("no postgres user to run the test's server as (tools/setup.sh installs Debian's postgresql)")
            }
            guard chown(directory, account.pointee.pw_uid, account.pointee.pw_gid) == 0 else {
                throw PostgresServerError("cannot give \(directory) to the postgres user: errno \(errno)")
            }
        }
        try server.run("initdb", ["-D", "\(directory)/data", "-U", "orch", "-A", "trust", "-E", "UTF8", "--no-sync"])
        if !networks.isEmpty {
            let hba = "\(directory)/data/pg_hba.conf"
            let lines = networks.map { "host all orch \($0) trust\n" }.joined()
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: hba))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(lines.utf8))
            try handle.close()
        }
        try server.startAgain()
        try server.createDatabase("orch")
        return server
    }

    private let durable: Bool
    private let listen: [String]

    private init(port: Int, directory: String, bin: String, durable: Bool, listen: [String]) {
        self.port = port
        self.directory = directory
        self.bin = bin
        self.durable = durable
        self.listen = listen
    }

    /// The URL of `database` at `host` (one of the addresses it listens on).
    public func url(_ database: String = "orch", host: String) -> String { "postgres://orch@\(host):\(port)/\(database)" }

    /// Starts the server (again, after ``pause()``) on its port, with its data.
    public func startAgain() throws {
        try run("pg_ctl", [
            "-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w", "-t", "30",
            "-o", "-p \(port) -c listen_addresses=\(listen.joined(separator: ",")) -k \(directory)" + (durable ? "" : " -c fsync=off -c synchronous_commit=off"), "start",
        ])
    }

    /// Stops the server at once (its clients' connections drop), keeping its data.
    public func pause() throws {
        try run("pg_ctl", ["-D", "\(directory)/data", "-m", "immediate", "-w", "-t", "20", "stop"])
    }

    /// Makes another database on the server; its URL.
    @discardableResult
    public func createDatabase(_ name: String) throws -> String {
        try run("createdb", ["-h", "127.0.0.1", "-p", "\(port)", "-U", "orch", name])
        return url(name)
    }

    /// Stops the server at once and removes its directory.
    public func stop() {
        _ = try? run("pg_ctl", ["-D", "\(directory)/data", "-m", "immediate", "-w", "-t", "20", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// What the server logged, for a failing test's message.
    public var log: String { (try? String(contentsOfFile: "\(directory)/server.log", encoding: .utf8)) ?? "" }

    /// Runs one of PostgreSQL's programs to its end (as the postgres user when root); its
    /// error output in the error when it fails.
    private func run(_ program: String, _ arguments: [String]) throws {
        let process = Process()
        // Through a shell that closes every descriptor above 2 first: Foundation's Process
        // sees its child end only when a descriptor it passed is closed, and the server that
        // pg_ctl leaves running would hold it for ever.
        let closing = #"for fd in $(ls /proc/$$/fd); do if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi; done; exec "$@""#
        let command = (getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []) + ["\(bin)/\(program)"] + arguments
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", closing, "bash"] + command
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        // Its errors go to a file, not a pipe: the server that pg_ctl starts would inherit
        // the pipe and hold it open, and reading it to its end would never end.
        let errorPath = "\(directory)/\(program).err"
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        let errors = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        defer { try? errors.close() }
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning {
            guard Date() < deadline else {
                process.terminate()
                throw PostgresServerError("\(program) did not end within 60 s\n\(log)")
            }
            usleep(20_000)
        }
        guard process.terminationStatus == 0 else {
            let output = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
            throw PostgresServerError("\(program) failed (exit \(process.terminationStatus)): \(output)\(log)")
        }
    }

    /// Debian's PostgreSQL programs: `/usr/lib/postgresql/VERSION/bin`, the newest.
    static func binDirectory() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .filter { FileManager.default.isExecutableFile(atPath: "\(root)/\($0)/bin/initdb") }
            .sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }
        guard let newest = versions.last else {
            throw PostgresServerError("PostgreSQL's server is not installed (no \(root)/*/bin/initdb): tools/setup.sh installs Debian's postgresql")
        }
        return "\(root)/\(newest)/bin"
    }
}

public struct PostgresServerError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
