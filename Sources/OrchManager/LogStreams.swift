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

    private struct Open {
        var node: NodeID
        var events: AsyncStream<Event>.Continuation
        /// Signals the first event, whatever it is.
        var first: AsyncStream<Void>.Continuation
        var sawOutput = false
    }

    private struct State {
        var next: UInt64 = 1
        var open: [UInt64: Open] = [:]
        /// Streams refused before any output, with the worker's reason.
        var refused: [UInt64: String] = [:]
        var firstSignals: [UInt64: AsyncStream<Void>] = [:]
    }

    private let state = Mutex(State())

    /// A new stream id for output from `node`, and the events it will deliver.
    func open(from node: NodeID) -> (id: UInt64, events: AsyncStream<Event>) {
        let (events, continuation) = AsyncStream<Event>.makeStream()
        let (first, firstContinuation) = AsyncStream<Void>.makeStream()
        let id = state.withLock { state in
            defer { state.next += 1 }
            state.open[state.next] = Open(node: node, events: continuation, first: firstContinuation)
            state.firstSignals[state.next] = first
            return state.next
        }
        return (id, events)
    }

    /// Waits up to `timeout` for the stream's first event; the worker's reason when the
    /// stream was refused before any output, nil otherwise (output came, or nothing yet).
    func refusal(of id: UInt64, within timeout: Duration) async -> String? {
        guard let first = state.withLock({ $0.firstSignals.removeValue(forKey: id) }) else { return nil }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await _ in first { break } }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
        return state.withLock { $0.refused.removeValue(forKey: id) }
    }

    func deliver(_ data: LogData) {
        let open = state.withLock { state -> Open? in
            state.open[data.streamID]?.sawOutput = true
            return state.open[data.streamID]
        }
        open?.events.yield(.output(data.bytes))
        open?.first.finish()
    }

    func finish(_ id: UInt64, error: String?) {
        guard let open = state.withLock({ state -> Open? in
            guard let open = state.open.removeValue(forKey: id) else { return nil }
            if !open.sawOutput, let error { state.refused[id] = error }
            return open
        }) else { return }
        open.events.yield(.end(error: error))
        open.events.finish()
        open.first.finish()
    }

    /// Ends every stream from a node whose connection went away.
    func finishAll(from node: NodeID, reason: String) {
        let ids = state.withLock { $0.open.filter { $0.value.node == node }.map(\.key) }
        for id in ids { finish(id, error: reason) }
    }
}

extension LogStreams {
    /// Ends every open stream, with `reason` (this manager stopped leading).
    func finishAll(reason: String) {
        let ids = state.withLock { Array($0.open.keys) }
        for id in ids { finish(id, error: reason) }
    }
}
