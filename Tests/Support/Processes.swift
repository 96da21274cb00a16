import Foundation

/// The orchctl built for the tests, next to the test bundle (tests never run `swift build`).
public let orchctlPath: String = {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    while directory.path != "/" {
        let candidate = directory.appendingPathComponent("orchctl").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    return ".build/debug/orchctl"
}()

/// The repository's root folder (for data/ files).
public let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// An orchctl process started by a test. Its output goes to a file (a pipe nobody reads
/// could block it); it is killed when the test lets go of it.
public final class LaunchedProcess: @unchecked Sendable {
    public let process = Process()
    public let outputPath: String
    public let errorPath: String

    public convenience init(orchctl arguments: [String], environment: [String: String] = [:]) throws {
        try self.init(executable: orchctlPath, arguments, environment: environment)
    }

    /// Starts `executable` (a path) in the repository's root folder.
    public init(executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let stem = NSTemporaryDirectory() + "orchctl-\(UUID().uuidString.prefix(8))"
        outputPath = stem + ".out"
        errorPath = stem + ".err"
        FileManager.default.createFile(atPath: outputPath, contents: nil)
        FileManager.default.createFile(atPath: errorPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = repositoryRoot
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// Starts `executable` with no signal blocked. A process spawned from a thread that blocks
    /// signals (libdispatch's do) inherits that mask: a tool that must end on SIGTERM or its
    /// own timeout (stress-ng), or a daemon whose children must take signals (dockerd), is
    /// started through this instead.
    public static func withSignalsUnblocked(_ executable: String, _ arguments: [String]) throws -> LaunchedProcess {
        try LaunchedProcess(executable: "/usr/bin/python3", [
            "-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv(sys.argv[1], sys.argv[1:])",
            executable,
        ] + arguments)
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// What the process printed on standard output so far.
    public var stdout: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    /// What it printed on standard error so far.
    public var stderr: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }
    /// Both.
    public var output: String { stdout + stderr }

    /// Runs orchctl to its end (within `timeout`): exit status, stdout, stderr.
    public static func run(
        orchctl arguments: [String], environment: [String: String] = [:], within timeout: Duration = .seconds(60)
    ) async throws -> (status: Int32, stdout: String, stderr: String) {
        let process = try LaunchedProcess(orchctl: arguments, environment: environment)
        let status = try await process.waitForExit(within: timeout)
        return (status, process.stdout, process.stderr)
    }

    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits for the process to end, up to `timeout`; its exit status.
    public func waitForExit(within timeout: Duration = .seconds(20)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                kill(process.processIdentifier, SIGKILL)
                throw TestTimeout(what: "orchctl \(process.arguments?.joined(separator: " ") ?? "") to exit; it printed:\n\(output)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    /// Waits until the output contains `text`, up to `timeout`.
    public func waitForOutput(_ text: String, within timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !output.contains(text) {
            guard ContinuousClock.now < deadline, process.isRunning else {
                throw TestTimeout(what: "orchctl to print \"\(text)\"; it printed:\n\(output)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}
