import Foundation
import Testing
@testable import OrchWorker

@Suite struct ProcMetricsTests {
    /// The sample files beside this source file.
    static let samples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Samples")

    static func sample(_ name: String) throws -> String {
        try String(contentsOf: samples.appendingPathComponent(name), encoding: .utf8)
    }

    // MARK: /proc/stat

    @Test func twoCPUDeltaFromRealReadings() throws {
        let earlier = try ProcParser.cpuTimes(procStat: Self.sample("stat-2cpu-a.txt"))
        let later = try ProcParser.cpuTimes(procStat: Self.sample("stat-2cpu-b.txt"))
        // a: cpu  139866 0 27628 227684 1185 0 323 29 0 0 -> busy 139866+0+27628+0+323+29 = 167846, idle 227684+1185 = 228869
        // b: cpu  139966 0 27631 227781 1185 0 323 29 0 0 -> busy 167949, idle 228966
        #expect(earlier == CPUTimes(busy: 167_846, idle: 228_869, cpuCount: 2))
        #expect(later == CPUTimes(busy: 167_949, idle: 228_966, cpuCount: 2))
        // busy delta 103 of total delta 200 on 2 CPUs: 103 / 200 * 2000 = 1030 millicores.
        let used = ProcParser.cpuMillicoresUsed(from: earlier, to: later)
        #expect((0...2000).contains(used))
        #expect(used == 1030)
    }

    @Test func sixtyFourCPUDelta() throws {
        let earlier = try ProcParser.cpuTimes(procStat: Self.sample("stat-64cpu-a.txt"))
        let later = try ProcParser.cpuTimes(procStat: Self.sample("stat-64cpu-b.txt"))
        #expect(earlier.cpuCount == 64)
        #expect(later.cpuCount == 64)
        // Each CPU advances 1000 jiffies, 250 of them busy on average; guest (+40 per CPU) is already in user.
        #expect(later.busy - earlier.busy == 16_000)
        #expect(later.total - earlier.total == 64_000)
        // 16000 / 64000 * 64 * 1000 = 16000 millicores.
        #expect(ProcParser.cpuMillicoresUsed(from: earlier, to: later) == 16_000)
    }

    @Test func detectedMillicoresIsAThousandPerCPU() throws {
        #expect(try ProcParser.detectedMillicores(procStat: Self.sample("stat-2cpu-a.txt")) == 2000)
        #expect(try ProcParser.detectedMillicores(procStat: Self.sample("stat-64cpu-a.txt")) == 64_000)
    }

    @Test func countersGoingBackwardsGiveZero() throws {
        let earlier = try ProcParser.cpuTimes(procStat: Self.sample("stat-64cpu-a.txt"))
        let later = try ProcParser.cpuTimes(procStat: Self.sample("stat-64cpu-b.txt"))
        #expect(ProcParser.cpuMillicoresUsed(from: later, to: earlier) == 0)
        #expect(ProcParser.cpuMillicoresUsed(from: later, to: later) == 0)
        #expect(ProcParser.cpuMillicoresUsed(
            from: CPUTimes(busy: 100, idle: 0, cpuCount: 2), to: CPUTimes(busy: 50, idle: 500, cpuCount: 2)) == 0)
        #expect(ProcParser.cpuMillicoresUsed(
            from: CPUTimes(busy: .max, idle: .max, cpuCount: 2), to: CPUTimes(busy: 0, idle: 0, cpuCount: 2)) == 0)
    }

    @Test func idleGoingBackwardsIsClampedToFullUse() {
        // Busy +50, total +10: iowait went backwards; the busy delta is clamped to the total delta.
        #expect(ProcParser.cpuMillicoresUsed(
            from: CPUTimes(busy: 0, idle: 100, cpuCount: 2), to: CPUTimes(busy: 50, idle: 60, cpuCount: 2)) == 2000)
    }

    @Test func millicoresAreRoundedHalfUp() {
        let zero = CPUTimes(busy: 0, idle: 0, cpuCount: 1)
        #expect(ProcParser.cpuMillicoresUsed(from: zero, to: CPUTimes(busy: 1, idle: 2, cpuCount: 1)) == 333)
        #expect(ProcParser.cpuMillicoresUsed(from: zero, to: CPUTimes(busy: 2, idle: 1, cpuCount: 1)) == 667)
        #expect(ProcParser.cpuMillicoresUsed(from: zero, to: CPUTimes(busy: 1, idle: 1999, cpuCount: 1)) == 1)
    }

    @Test func hugeCountersDoNotTrap() {
        let zero = CPUTimes(busy: 0, idle: 0, cpuCount: 4096)
        #expect(ProcParser.cpuMillicoresUsed(from: zero, to: CPUTimes(busy: .max - 1, idle: 1, cpuCount: 4096)) == 4_096_000)
        #expect(ProcParser.cpuMillicoresUsed(from: zero, to: CPUTimes(busy: .max, idle: .max, cpuCount: .max)) == .max)
        #expect(CPUTimes(busy: 1, idle: 1, cpuCount: -3).capacityMillicores == 0)
    }

    @Test func oldKernelCPULineWithFourFields() throws {
        #expect(try ProcParser.cpuTimes(procStat: "cpu 1 2 3 4\ncpu0 1 2 3 4\n") == CPUTimes(busy: 6, idle: 4, cpuCount: 1))
    }

    @Test func malformedProcStatThrows() {
        #expect(throws: ProcParseError.missingAggregateCPULine) { try ProcParser.cpuTimes(procStat: "") }
        #expect(throws: ProcParseError.missingAggregateCPULine) {
            try ProcParser.cpuTimes(procStat: "hello world\n\u{0}\u{1}garbage")
        }
        #expect(throws: ProcParseError.malformedCPULine("cpu  12 x 7 9")) {
            try ProcParser.cpuTimes(procStat: "cpu  12 x 7 9\ncpu0 12 0 7 9\n")
        }
        #expect(throws: ProcParseError.malformedCPULine("cpu  -1 0 7 9")) {
            try ProcParser.cpuTimes(procStat: "cpu  -1 0 7 9\ncpu0 1 0 7 9\n")
        }
        #expect(throws: ProcParseError.malformedCPULine("cpu  1 2 3")) {
            try ProcParser.cpuTimes(procStat: "cpu  1 2 3\ncpu0 1 2 3\n")
        }
        #expect(throws: ProcParseError.noPerCPULines) { try ProcParser.cpuTimes(procStat: "cpu  1 2 3 4\nctxt 5\n") }
    }

    // MARK: /proc/meminfo

    @Test func meminfoIsInBytes() throws {
        // MemTotal 24684092 kB, MemAvailable 24240056 kB -> used 444036 kB.
        let memory = try ProcParser.memory(meminfo: Self.sample("meminfo.txt"))
        #expect(memory == MemoryUsage(totalBytes: 24_684_092 * 1024, usedBytes: (24_684_092 - 24_240_056) * 1024))
        #expect(memory == MemoryUsage(totalBytes: 25_276_510_208, usedBytes: 454_692_864))
    }

    @Test func oldKernelMeminfoFallsBackToFreeBuffersCached() throws {
        // MemTotal 8061608 kB; available = MemFree 1523480 + Buffers 312456 + Cached 4017740 = 5853676 kB.
        let memory = try ProcParser.memory(meminfo: Self.sample("meminfo-old-kernel.txt"))
        #expect(memory == MemoryUsage(totalBytes: 8_255_086_592, usedBytes: (8_061_608 - 5_853_676) * 1024))
        #expect(memory.usedBytes == 2_260_922_368)
    }

    @Test func malformedMeminfoThrows() {
        #expect(throws: ProcParseError.missingMemInfoField("MemTotal")) { try ProcParser.memory(meminfo: "") }
        #expect(throws: ProcParseError.missingMemInfoField("MemTotal")) {
            try ProcParser.memory(meminfo: "garbage\nmore: stuff")
        }
        #expect(throws: ProcParseError.missingMemInfoField("Cached")) {
            try ProcParser.memory(meminfo: "MemTotal: 10 kB\nMemFree: 1 kB\nBuffers: 1 kB\n")
        }
        #expect(throws: ProcParseError.malformedMemInfoLine("MemTotal:   lots kB")) {
            try ProcParser.memory(meminfo: "MemTotal:   lots kB\nMemAvailable: 1 kB\n")
        }
    }

    // MARK: /proc/loadavg

    @Test func loadavgInHundredths() throws {
        // loadavg.txt: "1.08 1.55 1.19 2/88 26584"
        #expect(try ProcParser.load(loadavg: Self.sample("loadavg.txt")) == LoadAverage(load1: 108, load5: 155, load15: 119))
        #expect(try ProcParser.load(loadavg: "0.52 1.05 2.00 1/123 4567\n") == LoadAverage(load1: 52, load5: 105, load15: 200))
        #expect(try ProcParser.load(loadavg: "12.5 3 0.07") == LoadAverage(load1: 1250, load5: 300, load15: 7))
    }

    @Test func malformedLoadavgThrows() {
        #expect(throws: ProcParseError.malformedLoadAvg("")) { try ProcParser.load(loadavg: "") }
        #expect(throws: ProcParseError.malformedLoadAvg("0.52 1.05")) { try ProcParser.load(loadavg: "0.52 1.05\n") }
        #expect(throws: ProcParseError.malformedLoadAvg("garbage in here")) { try ProcParser.load(loadavg: "garbage in here") }
        #expect(throws: ProcParseError.malformedLoadAvg("0.521 1.05 2.00 1/2 3")) {
            try ProcParser.load(loadavg: "0.521 1.05 2.00 1/2 3")
        }
        #expect(throws: ProcParseError.malformedLoadAvg("99999999999.00 1 1")) {
            try ProcParser.load(loadavg: "99999999999.00 1 1")
        }
    }

    @Test func errorMessages() {
        #expect(ProcParseError.missingAggregateCPULine.description == "no aggregate cpu line in /proc/stat")
        #expect(ProcParseError.missingMemInfoField("MemTotal").description == "MemTotal missing in /proc/meminfo")
        #expect(ProcParseError.malformedLoadAvg("0.52 1.05").description == #"malformed /proc/loadavg: "0.52 1.05""#)
    }

    // MARK: Disk

    @Test func diskOfRoot() throws {
        let disk = try DiskReader.disk(path: "/")
        #expect(disk.totalBytes > 0)
        #expect(disk.usedBytes <= disk.totalBytes)
    }

    @Test func diskOfAMissingPathThrows() {
        #expect(throws: MetricsReadError.statvfsFailed(path: "/no/such/dir", errno: ENOENT)) {
            try DiskReader.disk(path: "/no/such/dir")
        }
    }

    @Test func diskUsageFromBlocks() {
        #expect(DiskUsage(blocks: 100, freeBlocks: 30, fragmentSize: 4096) == DiskUsage(totalBytes: 409_600, usedBytes: 286_720))
        #expect(DiskUsage(blocks: 10, freeBlocks: 30, fragmentSize: .max) == DiskUsage(totalBytes: .max, usedBytes: 0))
    }

    // MARK: Sampler

    @Test func samplerOverSampleFilesGivesTheSameDelta() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("procmetrics-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func put(_ name: String, as target: String) throws {
            try Data(contentsOf: Self.samples.appendingPathComponent(name)).write(to: dir.appendingPathComponent(target))
        }
        try put("stat-2cpu-a.txt", as: "stat")
        try put("meminfo.txt", as: "meminfo")
        try put("loadavg.txt", as: "loadavg")

        var sampler = MachineSampler(procRoot: dir.path, diskPath: dir.path)
        let first = try sampler.sample()
        #expect(first.cpuMillicoresUsed == 0)
        #expect(first.cpuCount == 2)

        try put("stat-2cpu-b.txt", as: "stat")
        let second = try sampler.sample()
        #expect(second.cpuMillicoresUsed == 1030)
        #expect(second.cpuCount == 2)
        #expect(second.memory == MemoryUsage(totalBytes: 25_276_510_208, usedBytes: 454_692_864))
        #expect(second.load == LoadAverage(load1: 108, load5: 155, load15: 119))
        #expect(second.disk.totalBytes > 0)
        #expect(second.disk.usedBytes <= second.disk.totalBytes)
        #expect(sampler.previousCPU == CPUTimes(busy: 167_949, idle: 228_966, cpuCount: 2))
    }

    @Test func samplerWithAMissingProcRootThrows() throws {
        var sampler = MachineSampler(procRoot: "/no/such/proc")
        let error = try #require(throws: MetricsReadError.self) { try sampler.sample() }
        guard case .unreadable(let path, _) = error else {
            Issue.record("expected .unreadable, got \(error)")
            return
        }
        #expect(path == "/no/such/proc/stat")
    }
}
