import Foundation
import Hummingbird
import OrchCore

/// An HTTP error in the shape every API here answers (DESIGN.md, "Conventions"):
/// `{"error": {"code": ..., "message": ..., "details": [...]}}`, whatever the status.
public struct APIError: HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let body: APIErrorBody

    public init(_ status: HTTPResponse.Status, code: String, message: String, details: [SpecProblem]? = nil) {
        self.status = status
        body = APIErrorBody(code: code, message: message, details: details)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        try JSONBody(body, status: status).response(from: request, context: context)
    }
}

/// A JSON response: camelCase keys, dates in RFC 3339.
public struct JSONBody<Value: Encodable & Sendable>: ResponseGenerator, Sendable {
    public let value: Value
    public let status: HTTPResponse.Status
    public var headers: HTTPFields

    public init(_ value: Value, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) {
        self.value = value
        self.status = status
        self.headers = headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        var data = try encoder.encode(value)
        data.append(0x0A)
        var headers = headers
        headers[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Answers every error that is not an `APIError` in the same JSON shape, so that no client
/// ever meets an empty 500 (or Hummingbird's own error bodies for unknown routes).
public struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as any HTTPResponseError {
            let code = error.status == .notFound ? "not_found" : error.status.code < 500 ? "bad_request" : "internal_error"
            let message = error.status == .notFound ? "no route \(request.method) \(request.uri.path)" : "\(error.status.reasonPhrase)"
            throw APIError(error.status, code: code, message: message)
        } catch {
            context.logger.error("\(request.method) \(request.uri.path) failed: \(error)")
            throw APIError(.internalServerError, code: "internal_error", message: "\(error)")
        }
    }
}

extension Request {
    /// The body as a task file (ours or Cube's); a 400 `invalid_task` listing every problem otherwise.
    public func taskSubmission() async throws -> TaskSubmission {
        let body = try await self.body.collect(upTo: TaskFile.maximumBytes + 1)
        do {
            return try TaskFile.decode(Data(buffer: body))
        } catch {
            throw APIError(
                .badRequest, code: "invalid_task",
                message: error.problems.count == 1 ? "invalid task: \(error.problems[0])" : "invalid task: \(error.problems.count) problems",
                details: error.problems)
        }
    }
}
