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

    public init(orchctl arguments: [String], environment: [String: String] = [:]) throws {
        outputPath = NSTemporaryDirectory() + "orchctl-\(UUID().uuidString.prefix(8)).log"
        FileManager.default.createFile(atPath: outputPath, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.executableURL = URL(fileURLWithPath: orchctlPath)
        process.arguments = arguments
        process.currentDirectoryURL = repositoryRoot
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// Everything the process printed so far.
    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

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
