import Dispatch
import OrchCore
@testable import OrchSim
import Synchronization

/// Runs seeds on every core; the results in seed order.
func runSeeds(_ seeds: Range<UInt64>, workers: Int = 3, steps: Int, configure: @escaping @Sendable (Simulation) -> Void = { _ in }) -> [SimulationResult] {
    let count = seeds.count
    let results = Mutex<[Int: SimulationResult]>([:])
    let next = Atomic<Int>(0)
    let first = seeds.lowerBound
    DispatchQueue.concurrentPerform(iterations: max(1, min(count, Simulation.onlineCores))) { _ in
        while true {
            let index = next.add(1, ordering: .relaxed).oldValue
            guard index < count else { return }
            let simulation = Simulation(seed: first + UInt64(index), workers: workers, steps: steps)
            configure(simulation)
            let result = simulation.run()
            results.withLock { $0[index] = result }
        }
    }
    let done = results.withLock { $0 }
    return (0..<count).map { done[$0]! }
}

/// A cluster with clients (and the service client, with `services`) but no faults, started
/// and run to `moment`.
func quietCluster(seed: UInt64, until moment: Moment = .zero + .seconds(20), steps: Int = 100_000, services: Bool = false) -> Simulation {
    let simulation = Simulation(seed: seed, workers: 3, steps: steps)
    simulation.faults = .none
    simulation.faults.services = services
    simulation.begin()
    simulation.advance(until: moment)
    return simulation
}

extension Simulation {
    /// Steps until a violation or until the clock reaches `moment`.
    func runUntilViolation(or moment: Moment) -> Violation? {
        advance(until: moment)
        return violations.first
    }
}
