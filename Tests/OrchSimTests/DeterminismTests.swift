import OrchCore
@testable import OrchSim
import Testing

@Suite("Simulator replays exactly")
struct DeterminismTests {
    func trace(_ seed: UInt64, steps: Int = 600, workers: Int = 3, services: Bool = false) -> SimulationResult {
        let simulation = Simulation(seed: seed, workers: workers, steps: steps)
        simulation.faults.services = services
        simulation.recordsFullTrace = true
        return simulation.run()
    }

    @Test("two runs of a seed give the same trace, step for step", arguments: [(UInt64(1), false), (42, false), (977, false), (31_337, false), (1, true), (42, true)])
    func sameSeedSameTrace(seed: UInt64, services: Bool) {
        let first = trace(seed, services: services)
        // Something else in between: other dictionaries, other hash seeds per instance.
        _ = trace(seed &+ 1, services: services)
        let second = trace(seed, services: services)
        if services { #expect(first.counters.serviceAnswers > 0, "the service client was answered") }
        #expect(first.trace.count == first.steps)
        #expect(first.steps > 600)
        #expect(first.trace == second.trace)
        #expect(first.steps == second.steps)
        #expect(first.simulatedTime == second.simulatedTime)
        #expect(first.violations == second.violations)
        #expect(first.counters == second.counters)
        if let index = zip(first.trace, second.trace).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
            Issue.record("the traces part at step \(index + 1):\n  \(first.trace[index])\n  \(second.trace[index])")
        }
    }

    @Test("recording the trace changes nothing else")
    func traceDoesNotChangeTheRun() {
        let recorded = trace(5)
        let plain = Simulation(seed: 5, workers: 3, steps: 600).run()
        #expect(plain.steps == recorded.steps)
        #expect(plain.violations == recorded.violations)
        #expect(plain.counters == recorded.counters)
        #expect(plain.trace == Array(recorded.trace.suffix(plain.trace.count)))
    }

    @Test("the service client draws from a stream of its own: a run without it is the run it was")
    func servicesOffLeavesTheRunAlone() {
        // The same seed with services on and off: the first steps (before the service client's
        // first request) are the same, and the run with them off has no service at all.
        let plain = trace(42, steps: 300)
        let withServices = trace(42, steps: 300, services: true)
        #expect(plain.counters.serviceCreates == 0)
        #expect(!plain.trace.contains { $0.contains("Service") })
        let first = withServices.trace.firstIndex { $0.contains("createService") || $0.contains("service client") } ?? 0
        #expect(first > 0)
        #expect(Array(plain.trace.prefix(first)) == Array(withServices.trace.prefix(first)))
    }

    @Test("different seeds give different runs")
    func seedsDiffer() {
        #expect(trace(1, steps: 200).trace != trace(2, steps: 200).trace)
    }

    @Test("the number of workers is honoured")
    func workerCount() {
        let result = trace(3, steps: 300, workers: 5)
        #expect(result.trace.contains { $0.contains("worker-5 <- welcome") })
    }
}
