import OrchCore
import OrchWire
import Synchronization

/// Log streams the manager relays from workers to HTTP clients (GET /tasks/{taskID}/logs).
/// Each stream starts with a credit; the worker sends no more than it, and the manager
/// grants more as the client takes what came (WIRE.md, "Logs are flow controlled").
final class LogStreams: Sendable {
    /// What a stream delivers: output, or its end (with the worker's error, if any).
    enum Event: Sendable {
        case output([UInt8])
        case end(error: String?)
    }

    static let credit: UInt32 = 64 << 10

    private let streams = Mutex<(next: UInt64, open: [UInt64: (node: NodeID, events: AsyncStream<Event>.Continuation)])>((1, [:]))

    /// A new stream id for output from `node`, and the events it will deliver.
    func open(from node: NodeID) -> (id: UInt64, events: AsyncStream<Event>) {
        let (events, continuation) = AsyncStream<Event>.makeStream()
        let id = streams.withLock { state in
            defer { state.next += 1 }
            state.open[state.next] = (node, continuation)
            return state.next
        }
        return (id, events)
    }

    func deliver(_ data: LogData) {
        _ = streams.withLock { $0.open[data.streamID] }?.events.yield(.output(data.bytes))
    }

    func finish(_ id: UInt64, error: String?) {
        guard let stream = streams.withLock({ $0.open.removeValue(forKey: id) }) else { return }
        stream.events.yield(.end(error: error))
        stream.events.finish()
    }

    /// Ends every stream from a node whose connection went away.
    func finishAll(from node: NodeID, reason: String) {
        let ids = streams.withLock { $0.open.filter { $0.value.node == node }.map(\.key) }
        for id in ids { finish(id, error: reason) }
    }

    var openCount: Int { streams.withLock { $0.open.count } }
}
