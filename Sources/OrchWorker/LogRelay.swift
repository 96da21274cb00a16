import OrchCore
import OrchRuntime
import OrchWire

/// Serves log streams to the manager over the cluster protocol (WIRE.md, "Logs are flow
/// controlled"): reads a container's output from the runtime and sends it in chunks that
/// never exceed the credit the manager granted, waiting for more credit when it runs out.
public actor LogRelay {
    /// Largest `log_chunk` payload: well under the frame limit.
    public static let chunkBytes = 32 << 10

    private struct Stream {
        var credit: Int
        var waiter: CheckedContinuation<Int, Never>?
        var reader: Task<Void, Never>?
    }

    private let runtime: any ContainerRuntime
    private let send: @Sendable (WireMessage) async throws -> Void
    private var streams: [UInt64: Stream] = [:]

    public init(runtime: any ContainerRuntime, send: @escaping @Sendable (WireMessage) async throws -> Void) {
        self.runtime = runtime
        self.send = send
    }

    /// Where a stream's output comes from.
    public enum Source: Sendable {
        /// The attempt's container, through the runtime.
        case container(ContainerID)
        /// The copy kept of a removed attempt's output.
        case kept([LogChunk])
    }

    /// Opens a stream for `request`, reading from `source` (nil: this worker has neither the
    /// attempt's container nor a copy of its output).
    public func open(_ request: LogRequest, source: Source?) async {
        let id = request.streamID
        guard let source else {
            try? await send(.logEnd(LogEnd(streamID: id, error: "attempt \(request.attempt) of task \(request.task) is not on this worker, and no copy of its output was kept")))
            return
        }
        guard streams[id] == nil else { return }
        streams[id] = Stream(credit: Int(request.credit))
        let runtime = runtime
        let reader = Task {
            var failure: String?
            do {
                let output: RuntimeStream<LogChunk>
                switch source {
                case .container(let container):
                    output = try await runtime.logs(container, tail: request.tail.map(Int.init), follow: request.follow)
                case .kept(let chunks):
                    let served = request.tail.map { KeptOutput.tail(Int($0), of: chunks) } ?? chunks
                    output = RuntimeStream { var rest = served[...]; return { rest.popFirst() } }
                }
                reading: for try await chunk in output {
                    var rest = chunk.bytes[...]
                    while !rest.isEmpty {
                        let granted = await self.take(id, upTo: min(rest.count, Self.chunkBytes))
                        if granted == 0 { break reading }   // the manager ended the stream
                        let stream: LogData.Stream = chunk.stream == .stderr ? .stderr : .stdout
                        try await self.send(.logChunk(LogData(streamID: id, stream: stream, bytes: Array(rest.prefix(granted)))))
                        rest = rest.dropFirst(granted)
                    }
                }
            } catch is CancellationError {
            } catch {
                failure = "\(error)"
            }
            await self.finish(id, error: failure)
        }
        streams[id]?.reader = reader
    }

    /// More credit for a stream.
    public func credit(_ credit: LogCredit) {
        guard var stream = streams[credit.streamID] else { return }
        stream.credit += Int(credit.bytes)
        if let waiter = stream.waiter {
            stream.waiter = nil
            let granted = stream.credit
            stream.credit = 0
            waiter.resume(returning: granted)
        }
        streams[credit.streamID] = stream
    }

    /// The manager ended a stream (its client went away).
    public func end(_ streamID: UInt64) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        stream.waiter?.resume(returning: 0)
        stream.reader?.cancel()
    }

    /// Every open stream ends: the connection they were for dropped.
    public func endAll() {
        for id in Array(streams.keys) { end(id) }
    }

    public var openStreams: Int { streams.count }

    /// Up to `wanted` bytes of credit, waiting for some when none is left; 0 once the stream ended.
    private func take(_ id: UInt64, upTo wanted: Int) async -> Int {
        guard var stream = streams[id] else { return 0 }
        if stream.credit > 0 {
            let granted = min(wanted, stream.credit)
            stream.credit -= granted
            streams[id] = stream
            return granted
        }
        let credit = await withCheckedContinuation { continuation in
            streams[id]?.waiter = continuation
        }
        guard credit > 0 else { return 0 }
        let granted = min(wanted, credit)
        streams[id]?.credit += credit - granted
        return granted
    }

    private func finish(_ id: UInt64, error: String?) async {
        guard streams.removeValue(forKey: id) != nil else { return }
        try? await send(.logEnd(LogEnd(streamID: id, error: error)))
    }
}
