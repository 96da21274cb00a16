import AsyncHTTPClient
import Foundation
import NIOCore
import OrchCore

extension DockerRuntime {
    /// The longest event or progress line accepted from the engine.
    static let maximumLineBytes = 1 << 20

    public func ensureImage(_ image: String) async throws -> ImageAvailability {
        do {
            _ = try await request(
                .GET, "/images/\(image)/json", operation: "inspect image \(image)",
                notFound: .imageUnavailable(image: image, reason: "not present locally"))
            return .present
        } catch RuntimeError.imageUnavailable {
            try await pull(image)
            return .pulled
        }
    }

    /// Pulls `image`; the engine answers 200 and streams progress, and a failure may come
    /// as an `error` line in that stream, so every line is read. The whole pull, progress
    /// included, is bounded by `pullTimeout`: a registry that stalls mid-layer does not hold
    /// the start up for ever.
    private func pull(_ image: String) async throws {
        let timeout = pullTimeout
        let operation = "pull image \(image)"
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await self.pullUnbounded(image)
                return true
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return false
            }
            defer { group.cancelAll() }
            guard try await group.next() == true else {
                throw RuntimeError.timeout(operation: operation, after: timeout)
            }
        }
    }

    private func pullUnbounded(_ image: String) async throws {
        let (name, tag) = Self.splitReference(image)
        var query = [("fromImage", name)]
        if let tag { query.append(("tag", tag)) }
        logger.info("Pulling image", metadata: ["image": "\(image)"])
        let response: HTTPClientResponse
        do {
            response = try await stream(.POST, "/images/create", query: query, operation: "pull image \(image)", timeout: pullTimeout)
        } catch RuntimeError.engine(_, _, let message) {
            throw RuntimeError.imageUnavailable(image: image, reason: message)
        }
        var lines = LineSplitter(maximumLineBytes: Self.maximumLineBytes)
        for try await buffer in response.body {
            for line in try lines.feed(buffer, operation: "pull image \(image)") {
                if let message = try? JSONDecoder().decode(PullProgressMessage.self, from: Data(line)), let error = message.error {
                    throw RuntimeError.imageUnavailable(image: image, reason: error)
                }
            }
        }
    }

    /// `registry:5000/team/app:1.2` as ("registry:5000/team/app", "1.2"); a digest stays whole.
    static func splitReference(_ image: String) -> (name: String, tag: String?) {
        if image.contains("@") { return (image, nil) }
        let lastSlash = image.lastIndex(of: "/") ?? image.startIndex
        if let colon = image[lastSlash...].lastIndex(of: ":") {
            return (String(image[..<colon]), String(image[image.index(after: colon)...]))
        }
        return (image, "latest")
    }

    public func logs(_ id: ContainerID, tail: Int?, follow: Bool) async throws -> RuntimeStream<LogChunk> {
        let query = [
            ("stdout", "true"), ("stderr", "true"), ("follow", follow ? "true" : "false"),
            ("tail", tail.map(String.init) ?? "all"),
        ]
        let operation = "read logs of container \(id.short)"
        let response = try await stream(
            .GET, "/containers/\(id)/logs", query: query, operation: operation, notFound: .containerNotFound(id.rawValue))
        return RuntimeStream {
            var body = response.body.makeAsyncIterator()
            var demultiplexer = LogDemultiplexer()
            var ready: [LogChunk] = []
            return {
                while ready.isEmpty {
                    guard let buffer = try await body.next() else { return nil }
                    ready = try demultiplexer.feed(buffer.readableBytesView, operation: operation)
                }
                return ready.removeFirst()
            }
        }
    }

    public func events(labels: [String: String]) async throws -> RuntimeStream<ContainerEvent> {
        let operation = "stream events"
        let response = try await stream(
            .GET, "/events", query: [("filters", Self.labelFilter(labels, type: "container"))], operation: operation)
        return RuntimeStream {
            var body = response.body.makeAsyncIterator()
            var lines = LineSplitter(maximumLineBytes: Self.maximumLineBytes)
            var ready: [ContainerEvent] = []
            return {
                while ready.isEmpty {
                    guard let buffer = try await body.next() else { return nil }
                    ready = try lines.feed(buffer, operation: operation).compactMap { line in
                        try Self.containerEvent(from: line, operation: operation)
                    }
                }
                return ready.removeFirst()
            }
        }
    }

    static func containerEvent(from line: [UInt8], operation: String) throws -> ContainerEvent? {
        let message: EventMessage
        do {
            message = try JSONDecoder().decode(EventMessage.self, from: Data(line))
        } catch {
            throw RuntimeError.invalidResponse(operation: operation, reason: "an event that is not JSON: \(error)")
        }
        guard message.Type == nil || message.Type == "container",
              let id = message.Actor?.ID ?? message.id, let action = message.Action
        else { return nil }
        let seconds = message.timeNano.map { Double($0) / 1e9 } ?? Double(message.time ?? 0)
        return ContainerEvent(
            action: action, container: ContainerID(rawValue: id), attributes: message.Actor?.Attributes ?? [:],
            time: Date(timeIntervalSince1970: seconds))
    }
}

/// Splits a byte stream into lines; a chunk of a streamed body is not a line.
struct LineSplitter {
    let maximumLineBytes: Int
    private var partial: [UInt8] = []

    init(maximumLineBytes: Int) { self.maximumLineBytes = maximumLineBytes }

    /// The complete lines (without their newline) that `buffer` finishes; empty lines are skipped.
    mutating func feed(_ buffer: ByteBuffer, operation: String) throws -> [[UInt8]] {
        var lines: [[UInt8]] = []
        for byte in buffer.readableBytesView {
            if byte == UInt8(ascii: "\n") {
                if !partial.isEmpty { lines.append(partial) }
                partial.removeAll(keepingCapacity: true)
            } else {
                guard partial.count < maximumLineBytes else {
                    throw RuntimeError.responseTooLarge(operation: operation, limitBytes: maximumLineBytes)
                }
                partial.append(byte)
            }
        }
        return lines
    }
}
