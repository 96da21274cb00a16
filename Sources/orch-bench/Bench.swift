import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OrchTestSupport

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orch-bench",
        abstract: "Benchmarks of the orchestrator, printed side by side with ratios (docs/BENCHMARKS.md).",
        discussion: """
            Each benchmark starts what it measures (orchctl processes, simulated workers, Docker
            containers) on loopback and removes it afterwards. --smoke runs tiny sizes (CI).

            Examples:
              orch-bench docker --counts 1,20,100
              orch-bench scheduling --workers 100,1000 --tasks 100000
              orch-bench heartbeats --workers 1000,10000
              orch-bench failover
              orch-bench rest --tasks 10000
              orch-bench recovery --tasks 100000
              orch-bench rolling --replicas 10 --runs 3
              orch-bench mesh
              orch-bench store --placements 20000
              orch-bench leader --kills 20 --handovers 20
            """,
        subcommands: [
            DockerBench.self, SchedulingBench.self, HeartbeatBench.self, FailoverBench.self, RESTBench.self, RecoveryBench.self,
            RollingBench.self, MeshBench.self, StoreBench.self, LeaderBench.self,
            SimWorkersCommand.self, BareListenerCommand.self,
        ])
}

// MARK: - Numbers

func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let index = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func format(_ value: Double, _ digits: Int = 2) -> String {
    value.isNaN ? "-" : String(format: "%.\(digits)f", value)
}

/// A table with a header row, columns padded to their widest cell.
func table(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows { for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
    print(line(header))
    print(line(widths.map { String(repeating: "-", count: $0) }))
    for row in rows { print(line(row)) }
    fflush(nil)
}

func note(_ text: String) {
    FileHandle.standardError.write(Data("orch-bench: \(text)\n".utf8))
}

/// A comma-separated list of integers option.
struct IntList: ExpressibleByArgument {
    var values: [Int]
    init?(argument: String) {
        let parts = argument.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        values = parts.compactMap { $0 }
    }
}

// MARK: - Processes and HTTP

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A manager process on free ports, with its data in a temporary directory unless given.
struct ManagerProcess {
    let process: LaunchedProcess
    let api: String
    let wireHost: String
    let wirePort: Int
    let data: String

    static func start(data: String? = nil, wireHost: String = "127.0.0.1", extra: [String] = []) async throws -> ManagerProcess {
        let http = try freePort(), wire = try freePort()
        let data = data ?? temporaryDirectory("manager")
        let process = try LaunchedProcess(orchctl: [
            "manager", "--http", "127.0.0.1:\(http)", "--wire", "\(wireHost):\(wire)", "--data", data, "--dns", "off", "--log-level", "warning",
        ] + extra)
        let api = "http://127.0.0.1:\(http)"
        try await waitUntil("the manager to answer", within: .seconds(120)) { (try? await get(api + "/healthz").status) == 200 }
        return ManagerProcess(process: process, api: api, wireHost: wireHost, wirePort: wire, data: data)
    }

    /// The join token the manager made in its data directory.
    var joinTokenPath: String { "\(data)/join.token" }

    func stop() async {
        process.signal(SIGKILL)
        _ = try? await process.waitForExit(within: .seconds(10))
    }
}

let httpClient: HTTPClient = {
    var configuration = HTTPClient.Configuration()
    configuration.timeout = .init(connect: .seconds(3))
    configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}()

func get(_ url: String) async throws -> (status: Int, body: ByteBuffer) {
    try await send(.GET, url)
}

func send(_ method: HTTPMethod, _ url: String, body: String? = nil) async throws -> (status: Int, body: ByteBuffer) {
    var request = HTTPClientRequest(url: url)
    request.method = method
    // The token the manager left for this user, as orchctl finds it.
    if let authorization = TestToken.local.authorization(for: url) { request.headers.add(name: "Authorization", value: authorization) }
    if let body { request.body = .bytes(ByteBuffer(string: body)) }
    let response = try await httpClient.execute(request, timeout: .seconds(60))
    return (Int(response.status.code), try await response.body.collect(upTo: 512 << 20))
}

/// Polls `condition` every 50 ms until it holds, or throws after `timeout`.
func waitUntil(_ what: String, within timeout: Duration, every period: Duration = .milliseconds(50), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: period)
    }
    throw BenchError("timed out waiting for \(what)")
}

/// A gauge or counter from the manager's /metrics, summed over its label sets that contain `labels`.
func metric(_ api: String, _ name: String, labels: String = "") async throws -> Double {
    let text = String(buffer: try await get(api + "/metrics").body)
    var total = 0.0
    for line in text.split(separator: "\n") where line.hasPrefix(name) && !line.hasPrefix("#") {
        let head = line.split(separator: " ").first.map(String.init) ?? ""
        guard head == name || head.hasPrefix(name + "{"), labels.isEmpty || head.contains(labels) else { continue }
        total += Double(line.split(separator: " ").last ?? "0") ?? 0
    }
    return total
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
func cpuSeconds(pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return .nan }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return .nan }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Resident memory of a process in bytes, from /proc/PID/status.
func residentBytes(pid: Int32) -> Double {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return .nan }
    return kb * 1024
}

/// The CPU model and count of this machine, for the record.
func machineDescription() -> String {
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }?.split(separator: ":").last?
        .trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
    return "\(ProcessInfo.processInfo.activeProcessorCount) × \(model), \(ProcessInfo.processInfo.physicalMemory >> 30) GiB"
}
