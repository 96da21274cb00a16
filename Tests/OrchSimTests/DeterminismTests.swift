import OrchCore
@testable import OrchSim
import Testing

@Suite("Simulator replays exactly")
struct DeterminismTests {
    func trace(_ seed: UInt64, steps: Int = 600, workers: Int = 3) -> SimulationResult {
        let simulation = Simulation(seed: seed, workers: workers, steps: steps)
        simulation.recordsFullTrace = true
        return simulation.run()
    }

    @Test("two runs of a seed give the same trace, step for step", arguments: [UInt64(1), 42, 977, 31_337])
    func sameSeedSameTrace(seed: UInt64) {
        let first = trace(seed)
        // Something else in between: other dictionaries, other hash seeds per instance.
        _ = trace(seed &+ 1)
        let second = trace(seed)
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
