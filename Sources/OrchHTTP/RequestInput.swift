import Foundation
import Hummingbird
import NIOCore
import OrchCore

extension Request {
    /// The body as a task file (ours or Cube's). Refused, before the body is read when the
    /// headers tell: a content type that is not JSON (415 `unsupported_media_type`), a body
    /// over ``TaskFile/maximumBytes`` (413 `body_too_large`); then a body that is not a
    /// task file (400 `invalid_task`, listing every problem).
    public func taskSubmission() async throws -> TaskSubmission {
        try await decodedFile(what: "task file", code: "invalid_task", noun: "task", TaskFile.decode)
    }

    /// The body as a service file (`POST /services`), refused as a task file is (400 `invalid_service`).
    public func serviceFile() async throws -> ServiceSpec {
        try await decodedFile(what: "service file", code: "invalid_service", noun: "service", ServiceSpec.decode)
    }

    /// The body as a change to a service (`PUT /services/{name}`): a service file's fields, each optional.
    public func serviceChange() async throws -> ServiceChange {
        try await decodedFile(what: "service change", code: "invalid_service", noun: "service", ServiceChange.decode)
    }

    private func decodedFile<Value>(
        what: String, code: String, noun: String, _ decode: (Data) throws(TaskSpecError) -> Value
    ) async throws -> Value {
        try requireJSONContent(of: "a \(what)")
        let limit = TaskFile.maximumBytes
        if let text = headers[.contentLength], let length = Int(text), length > limit {
            throw Self.bodyTooLarge("the \(what) is \(length) bytes", what: what)
        }
        let body: ByteBuffer
        do {
            body = try await self.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw Self.bodyTooLarge("the \(what) (sent without a length, or chunked) is larger", what: what)
        }
        let data = Data(buffer: body)
        do {
            if let problem = TaskFileJSON.nestingProblem(in: data) {
                throw TaskSpecError(problems: [SpecProblem(path: "", message: problem)])
            }
            return try decode(data)
        } catch var error as TaskSpecError {
            if let reason = TaskFileJSON.syntaxError(in: data), error.problems.count == 1, error.problems[0].path.isEmpty,
               error.problems[0].message.hasPrefix("not valid JSON") {
                error.problems[0].message = "not valid JSON: \(reason)"
            }
            throw APIError(
                .badRequest, code: code,
                message: error.problems.count == 1 ? "invalid \(noun): \(error.problems[0])" : "invalid \(noun): \(error.problems.count) problems",
                details: error.problems)
        }
    }

    /// A small JSON object body (a token's name and role, say): 415 when it is sent as
    /// something else, 413 over `limit` bytes, 400 when it is not one JSON object.
    public func jsonObject(limit: Int) async throws -> [String: Any] {
        try requireJSONContent(of: "the body")
        let body: ByteBuffer
        do {
            body = try await self.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, code: "body_too_large", message: "the body is over \(limit) bytes")
        }
        let data = Data(buffer: body)
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            let reason = TaskFileJSON.syntaxError(in: data).map { "not valid JSON: \($0)" } ?? "not a JSON object"
            throw APIError(.badRequest, code: "invalid_body", message: "the body is \(reason)")
        }
        return object
    }

    /// Refuses a body whose `Content-Type` is not JSON: `application/json` or a `+json`
    /// type, with no charset or UTF-8 (the only one JSON has, RFC 8259 §8.1). A request
    /// without the header is read as JSON, as `curl --data-binary` and most scripts send it.
    public func requireJSONContent(of what: String) throws {
        guard let contentType = headers[.contentType], !contentType.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        if !Self.isJSON(contentType) {
            throw APIError(
                .unsupportedMediaType, code: "unsupported_media_type",
                message: "\(what) is JSON: send it with Content-Type: application/json, not \(contentType)")
        }
    }

    static func isJSON(_ contentType: String) -> Bool {
        var parts = contentType.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard !parts.isEmpty else { return false }
        let mediaType = parts.removeFirst()
        guard mediaType == "application/json" || (mediaType.hasPrefix("application/") && mediaType.hasSuffix("+json")) else { return false }
        for parameter in parts {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if pair.first == "charset", pair.count == 2, !["utf-8", "\"utf-8\"", "utf8"].contains(pair[1]) { return false }
        }
        return true
    }

    private static func bodyTooLarge(_ text: String, what: String) -> APIError {
        APIError(
            .contentTooLarge, code: "body_too_large",
            message: "\(text); a \(what) is at most 1 MiB (\(TaskFile.maximumBytes) bytes)")
    }
}

/// What the gateway checks of a task file's JSON itself, around TaskFile's decoder.
enum TaskFileJSON {
    /// How deep JSON may nest before it is refused, checked before it is parsed: a body of a
    /// million `[` must be a clear 400 (Foundation only says "The given data was not valid
    /// JSON"), and must not cost a recursion per level anywhere after. A task file is a few
    /// levels deep.
    static let maximumDepth = 64

    /// Why `data` nests too deep, or nil. Brackets inside strings do not count.
    static func nestingProblem(in data: Data) -> String? {
        var depth = 0
        var inString = false
        var escaped = false
        var offset = 0
        for byte in data {
            offset += 1
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > maximumDepth { return "nested more than \(maximumDepth) levels deep (at byte \(offset)); a task file needs a few" }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return nil
    }

    /// Where `data` stops being JSON ("invalid value around character 0"), or nil when it
    /// is JSON. Asked only once a body was refused: JSONDecoder says no more than "The
    /// given data was not valid JSON", JSONSerialization says where.
    static func syntaxError(in data: Data) -> String? {
        do {
            _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
            return nil
        } catch {
            guard let text = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String, let first = text.first else { return nil }
            let reason = first.lowercased() + text.dropFirst()
            return reason.hasSuffix(".") ? String(reason.dropLast()) : reason
        }
    }
}

extension Parameters {
    /// The path parameter `name` as the client meant it: percent-decoded (`a%2Db` is
    /// `a-b`; Hummingbird's router leaves path segments encoded). A 400 `code` when the
    /// encoding is broken or decodes to something that is not UTF-8.
    public func decoded(_ name: String, code: String, what: String) throws -> String {
        let raw = try require(name)
        guard let text = raw.removingPercentEncoding else {
            throw APIError(.badRequest, code: code, message: "\(what) \(Self.quoted(raw)) is not valid percent-encoded UTF-8")
        }
        return text
    }

    /// The path parameter `name` as a task id, or the prefix of one: decoded, then held to
    /// the rules of task ids (1 to 64 letters, digits, `.`, `_`, `-`), which every prefix of
    /// an id keeps too. A 400 `invalid_task_id` otherwise, never a lookup of text that no
    /// task can have.
    public func taskID(_ name: String = "taskID") throws -> String {
        let text = try decoded(name, code: "invalid_task_id", what: "task id")
        if let problem = TaskID.problem(with: text) {
            throw APIError(.badRequest, code: "invalid_task_id", message: "task id \(Self.quoted(text)) \(problem)")
        }
        return text
    }

    /// `text` quoted for a message, with control characters escaped and at most 64
    /// characters of it.
    static func quoted(_ text: String) -> String {
        let shown = text.count > 64 ? String(text.prefix(64)) + "…" : text
        return String(reflecting: shown)
    }
}
