import AsyncHTTPClient
import Foundation
import NIOHTTP1
import OrchCore
import OrchTestSupport
import Testing

/// A manager and its workers as real `orchctl` processes on loopback, killed at the end;
/// every container of their nodes is removed.
final class ClusterProcesses: @unchecked Sendable {
    let httpPort: Int
    let wirePort: Int
    /// Where its DNS answers (UDP, 127.0.0.1).
    let dnsPort: Int
    /// Where the cluster port listens (a namespace's host address, for partition tests).
    let wireHost: String
    let data: String
    var manager: LaunchedProcess
    var workers: [String: LaunchedProcess] = [:]
    var workerStateDirs: [String: String] = [:]
    var api: String { "http://127.0.0.1:\(httpPort)" }

    let restartWindow: String
    /// More options for every manager started (`--fsync`, say).
    let managerOptions: [String]

    init(grace: String = "2s", restartWindow: String = "2s", managerOptions: [String] = [], wireHost: String = "127.0.0.1") async throws {
        httpPort = try freePort()
        wirePort = try freePort()
        dnsPort = try freePort()
        self.wireHost = wireHost
        data = temporaryDirectory("manager")
        self.restartWindow = restartWindow
        self.managerOptions = managerOptions
        manager = try Self.launchManager(
            http: httpPort, wire: wirePort, data: data, grace: grace, restartWindow: restartWindow, options: managerOptions, wireHost: wireHost, dns: dnsPort)
        try await manager.waitForOutput("listening on 127.0.0.1:\(httpPort)")
        try await waitUntilLeading()
    }

    /// On PostgreSQL a manager serves once it holds the lease (at once when it is alone).
    func waitUntilLeading() async throws {
        if managerOptions.contains(where: { $0.hasPrefix("postgres") }) { try await manager.waitForOutput("leading with epoch") }
    }

    /// Runs `body` with a manager started; everything is killed and removed afterwards,
    /// also when the test fails.
    static func with(
        grace: String = "2s", restartWindow: String = "2s", managerOptions: [String] = [], wireHost: String = "127.0.0.1",
        _ body: (ClusterProcesses) async throws -> Void
    ) async throws {
        let cluster = try await ClusterProcesses(grace: grace, restartWindow: restartWindow, managerOptions: managerOptions, wireHost: wireHost)
        do {
            try await body(cluster)
        } catch {
            await cluster.tearDown()
            throw error
        }
        await cluster.tearDown()
    }

    static func launchManager(
        http: Int, wire: Int, data: String, grace: String, restartWindow: String = "2s", options: [String] = [], wireHost: String = "127.0.0.1",
        dns: Int? = nil
    ) throws -> LaunchedProcess {
        try LaunchedProcess(orchctl: [
            "manager", "--http", "127.0.0.1:\(http)", "--wire", "\(wireHost):\(wire)", "--data", data,
            "--dns", dns.map { "127.0.0.1:\($0)" } ?? "off",
            "--heartbeat-interval", "200ms", "--heartbeat-grace", grace, "--restart-window", restartWindow,
            // Placement by reservations: E-PVM also weighs each worker's measured load, and two
            // workers on one busy host measure the same machine at different instants, so
            // its choice between them follows that noise rather than anything the tests do.
            "--scheduler", "spread",
        ] + options)
    }

    /// Kills the manager with SIGKILL and starts it again on the same directory and ports.
    func restartManager(grace: String = "2s") async throws {
        try await killManager()
        try await startManagerAgain(grace: grace)
    }

    func killManager() async throws {
        manager.signal(SIGKILL)
        _ = try await manager.waitForExit()
    }

    func startManagerAgain(grace: String = "2s") async throws {
        manager = try Self.launchManager(
            http: httpPort, wire: wirePort, data: data, grace: grace, restartWindow: restartWindow, options: managerOptions, wireHost: wireHost, dns: dnsPort)
        try await manager.waitForOutput("listening on 127.0.0.1:\(httpPort)")
        try await waitUntilLeading()
    }

    /// Starts (or starts again) the worker `name` offering a share of the machine; inside
    /// `namespace` when one is given (it reaches the manager over the namespace's link).
    /// It joins with the manager's join token unless told not to (`joining: false`: it must
    /// have its certificate already); `until` is the line awaited in its output.
    func startWorker(
        _ name: String, in namespace: NetworkNamespace? = nil, options: [String] = [], joining: Bool = true,
        until line: String? = "connected to the manager"
    ) async throws {
        let stateDir = workerStateDirs[name] ?? temporaryDirectory("worker-\(name)")
        workerStateDirs[name] = stateDir
        let arguments = [
            "worker", "--manager", "\(wireHost):\(wirePort)", "--http", "127.0.0.1:0", "--name", name,
            "--state-dir", stateDir, "--cpus", "1", "--memory", "1GiB",
        ] + (joining ? ["--join-token-file", "\(data)/join.token"] : []) + options
        if let namespace {
            let inside = namespace.command(orchctlPath, arguments)
            workers[name] = try LaunchedProcess(executable: inside.executable, inside.arguments)
        } else {
            workers[name] = try LaunchedProcess(orchctl: arguments)
        }
        if let line { try await workers[name]!.waitForOutput(line) }
    }

    func killWorker(_ name: String, signal: Int32 = SIGKILL) async throws {
        workers[name]?.signal(signal)
        _ = try await workers[name]?.waitForExit()
    }

    /// Waits until the node's containers have all exited (at least one exists).
    func waitForContainersExited(of name: String, within timeout: Duration = .seconds(30)) async throws {
        let node = try nodeID(of: name)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try !dockerPS(label: "orch.node=\(node)").isEmpty, try dockerPS(label: "orch.node=\(node)", runningOnly: true).isEmpty { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestTimeout(what: "the containers of \(name) to exit")
    }

    func nodeID(of name: String) throws -> String {
        let path = try #require(workerStateDirs[name]) + "/node-id"
        return try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func tearDown() async {
        for worker in workers.values { worker.signal(SIGKILL) }
        manager.signal(SIGKILL)
        // A worker's HAProxy outlives a killed worker (the next start takes it over).
        for directory in workerStateDirs.values {
            if let text = try? String(contentsOfFile: "\(directory)/haproxy/haproxy.pid", encoding: .utf8),
               let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 {
                kill(pid, SIGKILL)
            }
        }
        for name in workerStateDirs.keys {
            guard let node = try? nodeID(of: name) else { continue }
            let ids = (try? dockerPS(label: "orch.node=\(node)")) ?? []
            if !ids.isEmpty { _ = try? runDocker(["rm", "-f"] + ids) }
        }
    }

    // MARK: - REST

    func submit(_ spec: String) async throws -> String {
        let answer = try await http(.POST, "\(api)/tasks", body: spec)
        guard answer.status == 201 else { throw TestTimeout(what: "a 201 for the submission, got \(answer.status): \(answer.body)") }
        return try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])["id"] as! String
    }

    func tasks() async throws -> [[String: Any]] {
        let answer = try await http(.GET, "\(api)/tasks")
        return try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]])
    }

    func nodes() async throws -> [[String: Any]] {
        let answer = try await http(.GET, "\(api)/nodes")
        return try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]])
    }

    /// Waits until `condition` holds for the task list.
    @discardableResult
    func waitForTasks(_ what: String, within timeout: Duration = .seconds(30), _ condition: ([[String: Any]]) -> Bool) async throws -> [[String: Any]] {
        let deadline = ContinuousClock.now + timeout
        var last: [[String: Any]] = []
        while ContinuousClock.now < deadline {
            if let list = try? await tasks() {
                last = list
                if condition(list) { return list }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let summary = last.map { "\($0["id"] as? String ?? "?"): \($0["state"] as? String ?? "?") on \($0["nodeName"] as? String ?? "-")" }
        throw TestTimeout(what: "\(what); tasks: \(summary)")
    }

    /// Waits until `condition` holds for the node list.
    func waitForNodes(_ what: String, within timeout: Duration = .seconds(30), _ condition: ([[String: Any]]) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let list = try? await nodes(), condition(list) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestTimeout(what: what)
    }
}

/// The Python of the test venv (tools/requirements-test.txt: the OpenAPI checker,
/// schemathesis), which tools/test.sh installs and names in ORCH_PYTHON.
func python() throws -> String {
    try #require(
        ProcessInfo.processInfo.environment["ORCH_PYTHON"] ?? [repositoryRoot.appendingPathComponent(".venv-test/bin/python").path]
            .first { FileManager.default.isExecutableFile(atPath: $0) },
        "tools/test.sh installs tools/requirements-test.txt into .venv-test and sets ORCH_PYTHON")
}

/// Runs the docker CLI (test side only: checking what the engine holds).
func runDocker(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["docker"] + arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

/// Ids of the containers (running or not) carrying `label`.
func dockerPS(label: String, runningOnly: Bool = false, fullIDs: Bool = false) throws -> [String] {
    try runDocker(["ps", "-q"] + (runningOnly ? [] : ["-a"]) + (fullIDs ? ["--no-trunc"] : []) + ["--filter", "label=\(label)"])
        .split(separator: "\n").map(String.init)
}

extension [String: Any] {
    var state: String { self["state"] as? String ?? "" }
    var node: String { self["node"] as? String ?? "" }
    var attempt: Int { self["attempt"] as? Int ?? 0 }
}
