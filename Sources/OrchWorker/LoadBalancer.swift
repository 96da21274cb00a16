import Foundation
import Logging
import OrchControl
import OrchCore
import OrchWire

#if canImport(Glibc)
import Glibc
#endif

/// The worker's side of the routing mesh: runs HAProxy as a child process and carries out
/// what ``LoadBalancerPlan`` decides. HAProxy is started when the first service publishes a
/// port, driven through its runtime API (a unix socket) for every change of endpoints,
/// started again with a new configuration only when the published ports change (the old
/// process finishes its connections), restarted from the tables when it dies, and stopped
/// when nothing is published any more.
public actor LoadBalancer {
    public struct Settings: Sendable {
        /// The HAProxy binary: a path, or a name looked up in `PATH`.
        public var haproxy: String
        /// Where its configuration, socket, pid file and log live.
        public var directory: String
        /// Where published ports listen: the worker's advertise address.
        public var bindAddress: String

        public init(haproxy: String = "haproxy", directory: String, bindAddress: String) {
            self.haproxy = haproxy
            self.directory = directory
            self.bindAddress = bindAddress
        }
    }

    private let settings: Settings
    private let logger: Logger
    /// The binary found, or why there is none.
    private let binary: Result<String, LoadBalancerError>
    private var plan: LoadBalancerPlan
    private var process: Process?
    private var generation = 0
    /// Actions waiting to be carried out, in order, by one loop at a time.
    private var queue: [LoadBalancerPlan.Action] = []
    private var working = false
    private var restartBackoff = ReconnectBackoff(initial: .milliseconds(50), maximum: .seconds(2))
    private var startedAt: ContinuousClock.Instant?
    private var warnedMissing: Set<String> = []
    private var stopped = false

    public init(settings: Settings, logger: Logger) {
        self.settings = settings
        self.logger = logger
        binary = Self.find(settings.haproxy)
        plan = LoadBalancerPlan(settings: .init(bindAddress: settings.bindAddress, socketPath: "\(settings.directory)/admin.sock"))
    }

    /// Whether HAProxy can run here: nil when it can, else the reason.
    public nonisolated var unavailable: String? {
        if case .failure(let error) = binary { return error.description }
        return nil
    }

    /// The pid of the HAProxy running now, if any (for tests and the worker's API).
    public var pid: Int32? { process?.isRunning == true ? process?.processIdentifier : nil }

    /// The tables the plan holds, by service.
    public var tables: [String: ServiceTable] { plan.tables }

    /// The ports `service` is published on, if it publishes any.
    public func publishedPorts(of service: String) -> [UInt16]? {
        plan.tables[service].map { $0.listeners.map(\.publish) }
    }

    /// Published ports listen on `address` too (the containers' gateway).
    public func listenForContainers(on address: String?) { enqueue(plan.listenForContainers(on: address)) }

    // MARK: - From the manager

    /// A new connection was welcomed: `count` tables follow, and replace all held.
    public func welcomed(tables count: UInt32) {
        enqueue(plan.welcomed(tables: count))
        retireLeftBehind()
    }

    public func apply(_ table: ServiceTable) {
        if !table.listeners.isEmpty, let reason = unavailable, warnedMissing.insert(table.service).inserted {
            logger.error("service \(table.service) publishes port \(table.listeners.map { String($0.publish) }.joined(separator: ", ")) but this worker cannot balance it: \(reason)")
        }
        enqueue(plan.received(table))
        retireLeftBehind()
    }

    /// An HAProxy left by an earlier process of this worker, with nothing to balance now, is
    /// told to finish (one with something to balance is taken over by the next start).
    private func retireLeftBehind() {
        if !plan.isSyncing, plan.running == nil, process == nil, plan.tables.isEmpty, let pid = Self.leftBehind(pidPath) {
            logger.info("stopping the load balancer left by an earlier run (pid \(pid)): nothing is published")
            kill(pid, SIGUSR1)
            try? FileManager.default.removeItem(atPath: pidPath)
        }
    }

    /// The worker stops: HAProxy finishes its connections and exits.
    public func shutdown() {
        stopped = true
        queue = []
        stopProcess()
    }

    // MARK: - Carrying actions out

    private func enqueue(_ actions: [LoadBalancerPlan.Action]) {
        guard !actions.isEmpty, !stopped, case .success = binary else { return }
        queue += actions
        guard !working else { return }
        working = true
        Task { await self.work() }
    }

    private func work() async {
        while !queue.isEmpty, !stopped {
            let action = queue.removeFirst()
            switch action {
            case .start(let config): await start(config)
            case .commands(let commands): await send(commands)
            case .stop: stopProcess()
            }
        }
        working = false
    }

    private var configPath: String { "\(settings.directory)/haproxy.cfg" }
    private var pidPath: String { "\(settings.directory)/haproxy.pid" }
    private var socketPath: String { "\(settings.directory)/admin.sock" }

    /// Starts HAProxy with `config`, taking over from the one running (this worker's, or an
    /// earlier process's whose pid file is left), and waits until its socket answers.
    private func start(_ config: String) async {
        guard case .success(let path) = binary else { return }
        do {
            try FileManager.default.createDirectory(atPath: settings.directory, withIntermediateDirectories: true)
            try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        } catch {
            logger.error("cannot write the load balancer's configuration in \(settings.directory): \(error)")
            return await startFailed()
        }
        let previous = process.flatMap { $0.isRunning ? $0.processIdentifier : nil } ?? Self.leftBehind(pidPath)
        let child = Process()
        child.executableURL = URL(fileURLWithPath: path)
        child.arguments = ["-db", "-f", configPath] + (previous.map { ["-sf", String($0)] } ?? [])
        let log = FileHandle(forWritingAtPath: logPath) ?? {
            FileManager.default.createFile(atPath: logPath, contents: nil)
            return FileHandle(forWritingAtPath: logPath)
        }()
        _ = try? log?.seekToEnd()
        child.standardOutput = log
        child.standardError = log
        generation += 1
        let started = generation
        child.terminationHandler = { [weak self] ended in
            let status = ended.terminationStatus
            Task { await self?.exited(generation: started, status: status) }
        }
        do {
            try child.run()
        } catch {
            logger.error("cannot start HAProxy (\(path)): \(error)")
            return await startFailed()
        }
        process = child
        startedAt = .now
        try? "\(child.processIdentifier)\n".write(toFile: pidPath, atomically: true, encoding: .utf8)
        // Ready once its runtime API answers (it binds its ports before it opens the socket).
        let deadline = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < deadline, child.isRunning {
            if (try? Self.command("show info", socket: socketPath)) != nil {
                logger.info("load balancer (HAProxy, pid \(child.processIdentifier)) serves \(plan.running?.count ?? 0) published port\(plan.running?.count == 1 ? "" : "s") on \(settings.bindAddress)")
                return
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        logger.warning("HAProxy (pid \(child.processIdentifier)) did not answer on \(socketPath) within 3 s; see \(logPath)")
    }

    private var logPath: String { "\(settings.directory)/haproxy.log" }

    /// A start that did not happen is tried again, after the restart backoff.
    private func startFailed() async {
        var random = SystemRandomNumberGenerator()
        try? await Task.sleep(for: restartBackoff.nextDelay(using: &random))
        guard !stopped, process == nil else { return }
        queue += plan.exited()
    }

    /// The last line HAProxy wrote (why it exited, mostly).
    private var lastLogLine: String? {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").last.map { String($0.suffix(200)) }
    }

    private func stopProcess() {
        if let process, process.isRunning { kill(process.processIdentifier, SIGUSR1) }
        process = nil
        try? FileManager.default.removeItem(atPath: pidPath)
    }

    /// HAProxy ended. The current one ending by itself (killed, crashed) is started again
    /// from the tables at once, then with a backoff while it keeps dying young.
    private func exited(generation ended: Int, status: Int32) async {
        guard ended == generation, !stopped, process != nil else { return }
        process = nil
        let young = startedAt.map { ContinuousClock.now - $0 < .seconds(10) } ?? true
        if !young { restartBackoff.reset() }
        var random = SystemRandomNumberGenerator()
        let delay = young ? restartBackoff.nextDelay(using: &random) : .zero
        logger.warning("HAProxy exited (status \(status)\(lastLogLine.map { ": \($0)" } ?? "")); starting it again from the service tables\(delay > .zero ? " in \(DurationText.format(delay))" : "")")
        if delay > .zero { try? await Task.sleep(for: delay) }
        guard !stopped, process == nil else { return }
        enqueue(plan.exited())
    }

    /// Sends each command on a connection of its own, and tells the plan which deletions
    /// HAProxy refused (connections remain on the server).
    private func send(_ commands: [String]) async {
        for command in commands {
            do {
                let answer = try Self.command(command, socket: socketPath)
                let text = answer.trimmingCharacters(in: .whitespacesAndNewlines)
                if command.hasPrefix("del server ") {
                    let name = String(command.dropFirst("del server ".count))
                    if text.hasPrefix("Server deleted") || text.hasPrefix("No such server") { plan.deleted(name) } else { plan.deleteRefused(name) }
                } else if !text.isEmpty, !text.hasPrefix("New server registered") {
                    logger.warning("load balancer: \(command): \(text)")
                }
            } catch {
                // Not answering: it is dead or dying; its exit starts it again from the tables.
                logger.warning("load balancer: \(command): \(error)")
                return
            }
        }
    }

    // MARK: - Helpers

    /// One runtime API command on its own connection: the answer, up to its end.
    public static func command(_ line: String, socket path: String) throws -> String {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LoadBalancerError.socket("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw LoadBalancerError.socket("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw LoadBalancerError.socket("connect \(path): \(String(cString: strerror(errno)))") }
        let request = Array((line + "\n").utf8)
        guard request.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == request.count else {
            throw LoadBalancerError.socket("write: \(String(cString: strerror(errno)))")
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 { throw LoadBalancerError.socket("read: \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            answer += buffer[0..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    /// The binary: a path that can be run, or a name found in `PATH`.
    static func find(_ name: String) -> Result<String, LoadBalancerError> {
        let manager = FileManager.default
        if name.contains("/") {
            return manager.isExecutableFile(atPath: name) ? .success(name) : .failure(.missing(name))
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        for directory in path.split(separator: ":") + ["/usr/sbin", "/sbin"] {
            let candidate = "\(directory)/\(name)"
            if manager.isExecutableFile(atPath: candidate) { return .success(candidate) }
        }
        return .failure(.missing(name))
    }

    /// An HAProxy left running by an earlier process of this worker (killed without its
    /// goodbye): taken over rather than fought for the ports.
    static func leftBehind(_ pidPath: String) -> Int32? {
        guard let text = try? String(contentsOfFile: pidPath, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0,
              let command = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
              command.contains("haproxy") else { return nil }
        return pid
    }
}

public enum LoadBalancerError: Error, CustomStringConvertible, Sendable {
    case missing(String)
    case socket(String)

    public var description: String {
        switch self {
        case .missing(let name):
            "HAProxy is not installed (no \(name) \(name.contains("/") ? "there" : "in PATH")): install it (apt-get install haproxy) or start the worker with --haproxy PATH"
        case .socket(let text): "the runtime API: \(text)"
        }
    }
}
