import Foundation
import Hummingbird
import NIOHTTP1
import OrchCore

/// An HTTP error in the shape every API here answers (DESIGN.md, "Conventions"):
/// `{"error": {"code": ..., "message": ..., "details": [...]}}`, whatever the status.
public struct APIError: HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let body: APIErrorBody
    /// Header fields the error needs besides the body's, such as `Allow` on a 405.
    public let headers: HTTPFields

    public init(_ status: HTTPResponse.Status, code: String, message: String, details: [SpecProblem]? = nil, headers: HTTPFields = [:]) {
        self.status = status
        body = APIErrorBody(code: code, message: message, details: details)
        self.headers = headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        try JSONBody(body, status: status, headers: headers).response(from: request, context: context)
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
        let data = try APIJSON.encode(value)
        var headers = headers
        headers[.contentType] = APIJSON.contentType
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// How every JSON body here is written.
enum APIJSON {
    static let contentType = "application/json; charset=utf-8"

    /// Sorted keys, ISO 8601 dates, a final newline.
    static func encode(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        var data = try encoder.encode(value)
        data.append(0x0A)
        return data
    }
}

/// Answers every error that is not an `APIError` in the same JSON shape, so that no client
/// ever meets an empty 500 (or Hummingbird's own error bodies for unknown routes).
///
/// With the routes of its API (see ``APIRoutes``), it also tells a path that exists apart
/// from a method it lacks: 405 with `Allow` rather than 404. Paths are matched as written:
/// an empty segment (`/tasks/`, `/tasks//logs`) names no route, where Hummingbird's router
/// would quietly drop it and answer another route (the list for `/tasks/`, the task
/// called `logs` for `/tasks//logs`).
public struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: APIRouteTable?

    public init(routes: APIRouteTable? = nil) {
        self.routes = routes
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await answer(request, context: context, next: next)
        } catch let error as APIError where request.method == .head {
            // A HEAD answer has no body: the JSON would be read as the start of the next response.
            return try error.response(from: request, context: context).createHeadResponse()
        }
    }

    private func answer(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if APIRouteTable.segments(of: path).contains(where: \.isEmpty) {
            throw APIError(.notFound, code: "not_found", message: "no route \(request.method) \(path): a path segment is empty (a missing id?)")
        }
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError where error.status == .notFound {
            // The router's own 404: no route has this path and method. Our handlers answer
            // their 404s (an unknown task, say) as APIError.
            if let allowed = routes?.methods(for: path), !allowed.isEmpty {
                let list = allowed.map(\.rawValue).joined(separator: ", ")
                var headers = HTTPFields()
                headers[.allow] = list
                throw APIError(
                    .methodNotAllowed, code: "method_not_allowed",
                    message: "\(request.method) is not allowed on \(path); it allows \(list)", headers: headers)
            }
            throw APIError(.notFound, code: "not_found", message: "no route \(request.method) \(path)")
        } catch let error as any HTTPResponseError {
            let code = error.status.code < 500 ? "bad_request" : "internal_error"
            let message = (error as? HTTPError)?.body ?? error.status.reasonPhrase
            throw APIError(error.status, code: code, message: message)
        } catch let error as HTTPParserError {
            // The body turned out not to be valid HTTP (a broken chunked encoding, say):
            // the client's fault, not the server's.
            throw APIError(.badRequest, code: "bad_request", message: "the request is not valid HTTP/1.1: \(error)")
        } catch {
            context.logger.error("\(request.method) \(path) failed: \(error)")
            throw APIError(.internalServerError, code: "internal_error", message: "\(error)")
        }
    }
}
