import OrchCore

/// The newest changes of the cluster, numbered in order, for `GET /events`. An event
/// about a change not yet durable is kept back (with every one after it, so that a reader
/// never skips one): `visible(committed:)` gives the prefix whose revisions are written.
/// Bounded: beyond `capacity` the oldest go.
public struct EventLog: Sendable {
    struct Entry: Sendable {
        var event: ClusterEventDTO
        /// The commit the change is in (0: none, visible at once).
        var revision: UInt64
    }

    public let capacity: Int
    private var entries: [Entry] = []
    /// The id the next event gets.
    public private(set) var nextID: UInt64 = 1

    public init(capacity: Int = 10_000) { self.capacity = max(1, capacity) }

    public mutating func append(_ event: ClusterEventDTO, revision: UInt64) {
        var event = event
        event.id = nextID
        nextID += 1
        entries.append(Entry(event: event, revision: revision))
        // Dropped a quarter at a time: appends stay cheap.
        if entries.count > capacity + capacity / 4 { entries.removeFirst(entries.count - capacity) }
    }

    /// The id of the newest event whose change is durable.
    public func lastVisible(committed: UInt64) -> UInt64 {
        guard let first = entries.firstIndex(where: { $0.revision > committed }) else { return nextID - 1 }
        return first == 0 ? entries[0].event.id - 1 : entries[first - 1].event.id
    }

    /// The durable events after `id`, oldest first, at most `limit`. An `id` beyond the
    /// newest given (a manager that restarted since) reads from the oldest kept.
    public func page(after id: UInt64, limit: Int, committed: UInt64, matching: (ClusterEventDTO) -> Bool = { _ in true }) -> EventPageDTO {
        let newest = lastVisible(committed: committed)
        let from = id > newest ? 0 : id
        let oldest = entries.first?.event.id ?? nextID
        let start = entries.partitionPoint { $0.event.id <= from }
        var events: [ClusterEventDTO] = []
        var last = from
        for entry in entries[start...] where entry.event.id <= newest {
            last = entry.event.id
            if matching(entry.event) {
                events.append(entry.event)
                if events.count == limit { break }
            }
        }
        return EventPageDTO(events: events, last: last, gap: id > newest || from + 1 < oldest)
    }
}

extension Array {
    /// The first index whose element is not `belowOrAt` (the elements are ordered by it).
    func partitionPoint(_ belowOrAt: (Element) -> Bool) -> Int {
        var low = 0, high = count
        while low < high {
            let middle = (low + high) / 2
            if belowOrAt(self[middle]) { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
