import OrchCore

/// The simulator's draws, all from SplitMix64 and computed here (not with the standard
/// library's `random(in:using:)`, whose algorithm is not promised to stay the same), so that
/// a seed replays exactly. Every part that draws has a stream of its own, split from the
/// run's stream when the part is made: the order in which a machine lists its effects for
/// different connections or nodes then does not shift the draws of the others.
struct SimRandom {
    private var generator: SplitMix64

    init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    mutating func next() -> UInt64 { generator.next() }

    /// A new, independent stream.
    mutating func split() -> SimRandom { SimRandom(seed: next() ^ 0x5DEE_CE66_D1CE_4E5B) }

    /// Uniform in `0..<bound` (bound > 0), by the multiply-high method.
    mutating func below(_ bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        return next().multipliedFullWidth(by: bound).high
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int {
        let width = UInt64(range.upperBound - range.lowerBound) + 1
        return range.lowerBound + Int(below(width))
    }

    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }

    mutating func chance(_ probability: Double) -> Bool { unit() < probability }

    /// Uniform between the two bounds, to the nanosecond.
    mutating func duration(_ range: ClosedRange<Duration>) -> Duration {
        let low = range.lowerBound.nanoseconds, high = range.upperBound.nanoseconds
        guard high > low else { return range.lowerBound }
        return .nanoseconds(low + Int64(below(UInt64(high - low) + 1)))
    }

    mutating func pick<T>(_ items: [T]) -> T { items[Int(below(UInt64(items.count)))] }

    /// An index drawn with these weights.
    mutating func weighted(_ weights: [Int]) -> Int {
        let total = weights.reduce(0, +)
        var draw = Int(below(UInt64(total)))
        for (index, weight) in weights.enumerated() {
            if draw < weight { return index }
            draw -= weight
        }
        return weights.count - 1
    }
}

extension Duration {
    /// This duration scaled by `factor`, to the nanosecond.
    func scaled(by factor: Double) -> Duration { .nanoseconds(Int64(Double(nanoseconds) * factor)) }
}

/// Events ordered by (time, insertion sequence): two events at the same moment run in the
/// order they were scheduled, so that nothing depends on a heap's tie-breaking.
struct EventQueue<Element> {
    private struct Entry {
        var time: Moment
        var sequence: UInt64
        var element: Element
        func precedes(_ other: Entry) -> Bool { (time, sequence) < (other.time, other.sequence) }
    }

    private var heap: [Entry] = []
    private var nextSequence: UInt64 = 0

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }

    mutating func push(_ element: Element, at time: Moment) {
        heap.append(Entry(time: time, sequence: nextSequence, element: element))
        nextSequence += 1
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (time: Moment, element: Element)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var first = parent
            if left < heap.count, heap[left].precedes(heap[first]) { first = left }
            if right < heap.count, heap[right].precedes(heap[first]) { first = right }
            if first == parent { break }
            heap.swapAt(parent, first)
            parent = first
        }
        return (top.time, top.element)
    }

    /// The time of the next event, if any.
    var nextTime: Moment? { heap.first?.time }
}

#if canImport(Glibc)
import Glibc
#endif

extension Simulation {
    /// The cores online, for running seeds side by side (each seed is one thread's work).
    public static var onlineCores: Int {
        #if canImport(Glibc)
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        #else
        return 2
        #endif
    }
}
