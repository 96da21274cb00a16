import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Values

/// CPU jiffies from the aggregate `cpu` line of /proc/stat, and the number of per-CPU lines.
public struct CPUTimes: Sendable, Hashable {
    /// Jiffies spent working: user + nice + system + irq + softirq + steal (guest is already in user).
    public var busy: UInt64
    /// Jiffies spent idle: idle + iowait.
    public var idle: UInt64
    /// The number of `cpuN` lines.
    public var cpuCount: Int

    public init(busy: UInt64, idle: UInt64, cpuCount: Int) {
        self.busy = busy
        self.idle = idle
        self.cpuCount = cpuCount
    }

    /// All jiffies, busy and idle.
    public var total: UInt64 { busy.addingSaturating(idle) }

    /// The machine's CPU capacity: 1000 millicores per CPU.
    public var capacityMillicores: UInt32 {
        let (product, overflow) = cpuCount.multipliedReportingOverflow(by: 1000)
        return overflow ? .max : UInt32(clamping: product)
    }
}

/// Memory in bytes, from /proc/meminfo.
public struct MemoryUsage: Sendable, Hashable {
    public var totalBytes: UInt64
    public var usedBytes: UInt64

    public init(totalBytes: UInt64, usedBytes: UInt64) {
        self.totalBytes = totalBytes
        self.usedBytes = usedBytes
    }
}

/// A filesystem's size and use in bytes, from statvfs.
public struct DiskUsage: Sendable, Hashable {
    public var totalBytes: UInt64
    public var usedBytes: UInt64

    public init(totalBytes: UInt64, usedBytes: UInt64) {
        self.totalBytes = totalBytes
        self.usedBytes = usedBytes
    }

    /// Usage from statvfs's f_blocks, f_bfree and f_frsize.
    public init(blocks: UInt64, freeBlocks: UInt64, fragmentSize: UInt64) {
        totalBytes = blocks.multipliedSaturating(by: fragmentSize)
        usedBytes = blocks.subtractingSaturating(freeBlocks).multipliedSaturating(by: fragmentSize)
    }
}

/// The 1, 5 and 15 minute load averages of /proc/loadavg, each in hundredths (0.52 is 52).
public struct LoadAverage: Sendable, Hashable {
    public var load1: UInt32
    public var load5: UInt32
    public var load15: UInt32

    public init(load1: UInt32, load5: UInt32, load15: UInt32) {
        self.load1 = load1
        self.load5 = load5
        self.load15 = load15
    }
}

/// One reading of the machine's use.
public struct MachineSample: Sendable, Hashable {
    /// CPU used since the previous sample; 0 on the first.
    public var cpuMillicoresUsed: UInt32
    public var cpuCount: Int
    public var memory: MemoryUsage
    public var disk: DiskUsage
    public var load: LoadAverage

    public init(cpuMillicoresUsed: UInt32, cpuCount: Int, memory: MemoryUsage, disk: DiskUsage, load: LoadAverage) {
        self.cpuMillicoresUsed = cpuMillicoresUsed
        self.cpuCount = cpuCount
        self.memory = memory
        self.disk = disk
        self.load = load
    }
}

// MARK: - Errors

/// Content of a /proc file that cannot be understood.
public enum ProcParseError: Error, Equatable, CustomStringConvertible {
    case missingAggregateCPULine
    case malformedCPULine(String)
    case noPerCPULines
    case missingMemInfoField(String)
    case malformedMemInfoLine(String)
    case malformedLoadAvg(String)

    public var description: String {
        switch self {
        case .missingAggregateCPULine: "no aggregate cpu line in /proc/stat"
        case .malformedCPULine(let line): "malformed cpu line in /proc/stat: \"\(line)\""
        case .noPerCPULines: "no per-CPU lines (cpu0, cpu1, ...) in /proc/stat"
        case .missingMemInfoField(let name): "\(name) missing in /proc/meminfo"
        case .malformedMemInfoLine(let line): "malformed line in /proc/meminfo: \"\(line)\""
        case .malformedLoadAvg(let content): "malformed /proc/loadavg: \"\(content)\""
        }
    }
}

/// A metrics source that cannot be read.
public enum MetricsReadError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case statvfsFailed(path: String, errno: Int32)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read \(path): \(reason)"
        case .statvfsFailed(let path, let code): "statvfs(\(path)) failed: \(String(cString: strerror(code)))"
        }
    }
}

// MARK: - Parsers

/// Pure parsers for /proc/stat, /proc/meminfo and /proc/loadavg.
public enum ProcParser {
    /// The aggregate CPU times and the CPU count of /proc/stat.
    public static func cpuTimes(procStat: String) throws(ProcParseError) -> CPUTimes {
        var aggregate: [UInt64]?
        var cpuCount = 0
        for line in procStat.split(whereSeparator: \.isNewline) {
            let fields = line.split(whereSeparator: \.isWhitespace)
            guard let label = fields.first else { continue }
            if label == "cpu", aggregate == nil {
                aggregate = try jiffies(Array(fields.dropFirst()), line: line)
            } else if label.hasPrefix("cpu"), isDigits(label.dropFirst(3)) {
                cpuCount += 1
            }
        }
        guard let aggregate else { throw .missingAggregateCPULine }
        guard cpuCount > 0 else { throw .noPerCPULines }
        return cpuTimes(jiffies: aggregate, cpuCount: cpuCount)
    }

    /// The CPU capacity of /proc/stat's machine: 1000 millicores per CPU.
    public static func detectedMillicores(procStat: String) throws(ProcParseError) -> UInt32 {
        try cpuTimes(procStat: procStat).capacityMillicores
    }

    /// CPU used between two readings in millicores, rounded; 0 if no time passed or the counters went backwards.
    public static func cpuMillicoresUsed(from earlier: CPUTimes, to later: CPUTimes) -> UInt32 {
        guard later.busy >= earlier.busy, later.total > earlier.total else { return 0 }
        let totalDelta = later.total - earlier.total
        let busyDelta = min(later.busy - earlier.busy, totalDelta)
        return UInt32(clamping: roundedRatio(busyDelta, of: totalDelta, times: UInt64(later.capacityMillicores)))
    }

    /// Total and used memory of /proc/meminfo, in bytes.
    public static func memory(meminfo: String) throws(ProcParseError) -> MemoryUsage {
        let fields = memInfoFields(meminfo)
        guard let total = try kilobytes("MemTotal", in: fields) else { throw .missingMemInfoField("MemTotal") }
        let available = try availableKilobytes(in: fields)
        return MemoryUsage(
            totalBytes: total.multipliedSaturating(by: 1024),
            usedBytes: total.subtractingSaturating(available).multipliedSaturating(by: 1024))
    }

    /// The three load averages of /proc/loadavg, in hundredths.
    public static func load(loadavg: String) throws(ProcParseError) -> LoadAverage {
        let content = loadavg.trimmingCharacters(in: .whitespacesAndNewlines)
        let fields = content.split(whereSeparator: \.isWhitespace)
        guard fields.count >= 3,
              let load1 = hundredths(fields[0]), let load5 = hundredths(fields[1]), let load15 = hundredths(fields[2])
        else { throw .malformedLoadAvg(content) }
        return LoadAverage(load1: load1, load5: load5, load15: load15)
    }

    // MARK: /proc/stat

    /// The numbers after a `cpu` label: at least user, nice, system and idle.
    private static func jiffies(_ fields: [Substring], line: Substring) throws(ProcParseError) -> [UInt64] {
        let numbers = fields.compactMap(decimal)
        guard numbers.count == fields.count, numbers.count >= 4 else { throw .malformedCPULine(String(line)) }
        return numbers
    }

    /// Busy and idle from user nice system idle iowait irq softirq steal; older kernels omit the later ones.
    private static func cpuTimes(jiffies: [UInt64], cpuCount: Int) -> CPUTimes {
        func field(_ index: Int) -> UInt64 { index < jiffies.count ? jiffies[index] : 0 }
        let busy = [0, 1, 2, 5, 6, 7].map(field).reduce(UInt64(0)) { $0.addingSaturating($1) }
        return CPUTimes(busy: busy, idle: field(3).addingSaturating(field(4)), cpuCount: cpuCount)
    }

    /// part / whole * factor, rounded half up, in full width so nothing overflows (part <= whole).
    private static func roundedRatio(_ part: UInt64, of whole: UInt64, times factor: UInt64) -> UInt64 {
        let product = factor.multipliedFullWidth(by: part)
        let (low, carry) = product.low.addingReportingOverflow(whole / 2)
        let high = product.high.addingSaturating(carry ? 1 : 0)
        guard high < whole else { return .max }
        return whole.dividingFullWidth((high: high, low: low)).quotient
    }

    // MARK: /proc/meminfo

    /// Each `Name: value` line as name and the text after the colon.
    private static func memInfoFields(_ meminfo: String) -> [Substring: Substring] {
        var fields: [Substring: Substring] = [:]
        for line in meminfo.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon]
            if fields[name] == nil { fields[name] = line[line.index(after: colon)...] }
        }
        return fields
    }

    /// A `<number> kB` field, or nil when it is absent.
    private static func kilobytes(_ name: Substring, in fields: [Substring: Substring]) throws(ProcParseError) -> UInt64? {
        guard let value = fields[name] else { return nil }
        let parts = value.split(whereSeparator: \.isWhitespace)
        guard parts.count == 2, parts[1] == "kB", let number = decimal(parts[0]) else {
            throw .malformedMemInfoLine("\(name):\(value)")
        }
        return number
    }

    /// MemAvailable, or on kernels before 3.14 MemFree + Buffers + Cached.
    private static func availableKilobytes(in fields: [Substring: Substring]) throws(ProcParseError) -> UInt64 {
        if let available = try kilobytes("MemAvailable", in: fields) { return available }
        var sum: UInt64 = 0
        for name: Substring in ["MemFree", "Buffers", "Cached"] {
            guard let value = try kilobytes(name, in: fields) else { throw .missingMemInfoField(String(name)) }
            sum = sum.addingSaturating(value)
        }
        return sum
    }

    // MARK: Numbers

    /// A decimal like `1.05` as hundredths, with at most two digits after the point.
    private static func hundredths(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = decimal(parts[0]) else { return nil }
        var fraction: UInt64 = 0
        if parts.count == 2 {
            let digits = parts[1]
            guard (1...2).contains(digits.count), let value = decimal(digits) else { return nil }
            fraction = digits.count == 1 ? value * 10 : value
        }
        let (scaled, overflow) = whole.multipliedReportingOverflow(by: 100)
        guard !overflow else { return nil }
        return UInt32(exactly: scaled.addingSaturating(fraction))
    }

    /// Only ASCII digits, at least one, as a number that fits.
    private static func decimal(_ text: Substring) -> UInt64? {
        isDigits(text) ? UInt64(text) : nil
    }

    private static func isDigits(_ text: Substring) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }
}

// MARK: - Readers

/// Reads filesystem usage with statvfs.
public enum DiskReader {
    /// The size and use of the filesystem holding `path`.
    public static func disk(path: String) throws(MetricsReadError) -> DiskUsage {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { throw .statvfsFailed(path: path, errno: errno) }
        return DiskUsage(blocks: UInt64(info.f_blocks), freeBlocks: UInt64(info.f_bfree), fragmentSize: UInt64(info.f_frsize))
    }
}

/// Samples the machine from /proc and statvfs, keeping the previous CPU reading for the delta.
public struct MachineSampler: Sendable {
    public let procRoot: String
    public let diskPath: String
    /// The CPU reading of the last sample.
    public private(set) var previousCPU: CPUTimes?

    public init(procRoot: String = "/proc", diskPath: String = "/") {
        self.procRoot = procRoot
        self.diskPath = diskPath
    }

    /// Reads everything once; the CPU use is relative to the previous sample (0 on the first).
    public mutating func sample() throws -> MachineSample {
        let cpu = try ProcParser.cpuTimes(procStat: read("stat"))
        let memory = try ProcParser.memory(meminfo: read("meminfo"))
        let load = try ProcParser.load(loadavg: read("loadavg"))
        let disk = try DiskReader.disk(path: diskPath)
        let used = previousCPU.map { ProcParser.cpuMillicoresUsed(from: $0, to: cpu) } ?? 0
        previousCPU = cpu
        return MachineSample(cpuMillicoresUsed: used, cpuCount: cpu.cpuCount, memory: memory, disk: disk, load: load)
    }

    /// The text of a file under `procRoot`.
    private func read(_ name: String) throws(MetricsReadError) -> String {
        let path = URL(fileURLWithPath: procRoot).appendingPathComponent(name).path
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadable(path: path, reason: error.localizedDescription)
        }
    }
}

// MARK: - Arithmetic

extension UInt64 {
    fileprivate func addingSaturating(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }

    fileprivate func subtractingSaturating(_ other: UInt64) -> UInt64 {
        self > other ? self - other : 0
    }

    fileprivate func multipliedSaturating(by other: UInt64) -> UInt64 {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? .max : product
    }
}
