import Foundation

/// What a REST API token may do. Each role may do what the ones below it may.
///
/// | role | may |
/// |---|---|
/// | viewer | read: every GET |
/// | operator | also submit and stop tasks |
/// | admin | also remove nodes, manage API tokens and rotate the join token |
public enum APIRole: String, Codable, Sendable, Hashable, CaseIterable, Comparable {
    case viewer
    case `operator`
    case admin

    private var rank: Int {
        switch self {
        case .viewer: 0
        case .operator: 1
        case .admin: 2
        }
    }

    public static func < (a: APIRole, b: APIRole) -> Bool { a.rank < b.rank }

    /// The role a request needs: nil for the one route anybody may ask (`GET /healthz`).
    /// One rule for every route, so that a route added later is guarded as its method says:
    /// reads need viewer, writes operator, node removal and tokens admin.
    public static func required(method: String, path: String) -> APIRole? {
        let segments = path.split(separator: "?", maxSplits: 1).first.map { $0.split(separator: "/") } ?? []
        let first = segments.first.map(String.init) ?? ""
        let reading = method == "GET" || method == "HEAD"
        if first == "healthz", reading, segments.count == 1 { return nil }
        // The console's sign-in page and stylesheet; its other pages need a viewer's session.
        if first == "ui" {
            let second = segments.dropFirst().first.map(String.init)
            if segments.count == 2, second == "console.css" && reading || second == "login" { return nil }
            // Its writes (stop, remove) are an operator's, as the API's are; signing out anyone's.
            if !reading, !(segments.count == 2 && second == "logout") { return .operator }
            return .viewer
        }
        if first == "tokens" || first == "join-token" { return .admin }
        if first == "nodes", !reading { return .admin }
        return reading ? .viewer : .operator
    }
}

/// A token as `GET /tokens` lists it: never the token itself.
public struct APITokenDTO: Codable, Sendable, Hashable {
    public var name: String
    public var role: APIRole
    public var createdAt: Date
    public var lastUsedAt: Date?

    public init(name: String, role: APIRole, createdAt: Date, lastUsedAt: Date?) {
        self.name = name
        self.role = role
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
    }
}

/// What `POST /tokens` answers: the token, shown this once (only its hash is kept).
public struct CreatedAPITokenDTO: Codable, Sendable, Hashable {
    public var name: String
    public var role: APIRole
    public var token: String
    public var createdAt: Date

    public init(name: String, role: APIRole, token: String, createdAt: Date) {
        self.name = name
        self.role = role
        self.token = token
        self.createdAt = createdAt
    }
}

/// A token as the store keeps it: its SHA-256, never the token.
public struct APITokenRecord: Codable, Sendable, Hashable {
    public var name: String
    public var role: APIRole
    /// Lowercase hex of SHA-256 over the token's UTF-8 bytes.
    public var hash: String
    public var createdAt: Date
    public var lastUsedAt: Date?
    /// Set when revoked; a revoked token is refused and its name may be used again.
    public var revokedAt: Date?

    public init(name: String, role: APIRole, hash: String, createdAt: Date, lastUsedAt: Date? = nil, revokedAt: Date? = nil) {
        self.name = name
        self.role = role
        self.hash = hash
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
    }
}

/// The caller a request was authenticated as, for the handlers below the authentication
/// middleware: whose name goes into the events of what it submits and stops.
public enum APICaller {
    @TaskLocal public static var name: String?
}
