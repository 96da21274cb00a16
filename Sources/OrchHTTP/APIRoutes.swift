import Hummingbird
import Synchronization

/// Registers an API's routes on a Hummingbird router and remembers each path's methods,
/// so that a known path asked with a method it lacks answers 405 with an `Allow` header
/// (RFC 9110 §15.5.6) instead of the router's 404. It installs ``APIErrorMiddleware``
/// first, so that every route and every miss answers in the API's error shape.
///
/// ```swift
/// let router = Router()
/// let routes = APIRoutes(router)
/// routes.get("tasks") { ... }
/// ```
public struct APIRoutes<Context: RequestContext>: RouterMethods {
    public let router: Router<Context>
    public let table: APIRouteTable

    public init(_ router: Router<Context>) {
        self.router = router
        table = APIRouteTable()
        // Middleware applies to the routes added after it (and to the router's misses).
        router.add(middleware: APIErrorMiddleware<Context>(routes: table))
    }

    @discardableResult
    public func on<Responder: HTTPResponder>(
        _ path: RouterPath, method: HTTPRequest.Method, responder: Responder
    ) -> Self where Responder.Context == Context {
        table.add(path, method: method)
        router.on(path, method: method, responder: responder)
        return self
    }

    @discardableResult
    public func add(middleware: any MiddlewareProtocol<Request, Response, Context>) -> Self {
        router.add(middleware: middleware)
        return self
    }
}

/// The paths of an API and the methods each has, in the order they were registered.
/// Filled while the router is built, read while it serves.
public final class APIRouteTable: Sendable {
    private let routes = Mutex<[(path: RouterPath, methods: [HTTPRequest.Method])]>([])

    public init() {}

    func add(_ path: RouterPath, method: HTTPRequest.Method) {
        routes.withLock { routes in
            if let index = routes.firstIndex(where: { $0.path == path }) {
                if !routes[index].methods.contains(method) { routes[index].methods.append(method) }
            } else {
                routes.append((path, [method]))
            }
        }
    }

    /// The methods of every route whose pattern matches `path` (empty when none does).
    public func methods(for path: String) -> [HTTPRequest.Method] {
        let segments = Self.segments(of: path)
        return routes.withLock { routes in
            var methods: [HTTPRequest.Method] = []
            for route in routes where Self.matches(route.path, segments) {
                methods += route.methods.filter { !methods.contains($0) }
            }
            return methods
        }
    }

    /// The segments of a path as written, empty ones kept: `/tasks//logs` is
    /// `["tasks", "", "logs"]`, `/tasks/` is `["tasks", ""]`, `/` is `[]`.
    static func segments(of path: String) -> [Substring] {
        let trimmed = path.hasPrefix("/") ? path.dropFirst() : path[...]
        if trimmed.isEmpty { return [] }
        return trimmed.split(separator: "/", omittingEmptySubsequences: false)
    }

    private static func matches(_ pattern: RouterPath, _ segments: [Substring]) -> Bool {
        guard pattern.components.count == segments.count else { return false }
        return zip(pattern.components, segments).allSatisfy { element, segment in element ~= segment }
    }
}
