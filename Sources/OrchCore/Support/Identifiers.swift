/// Identifies a task across the cluster; users may choose it, otherwise it is a UUID.
///
/// Valid ids are 1 to 64 characters: letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit, so that they can stand in a container label and in a URL path unescaped.
public struct TaskID: RawRepresentable, Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// A new random id (a lowercase UUID, as Cube's files use).
    public static func random() -> TaskID { TaskID(rawValue: UUID().uuidString.lowercased()) }
    public var description: String { rawValue }
    public static func < (lhs: TaskID, rhs: TaskID) -> Bool { lhs.rawValue < rhs.rawValue }
    /// The first 12 characters without dashes (`2937c96ebf9b` for a UUID), as tables show
    /// it; every route that takes an id takes it.
    public var short: String { String(rawValue.filter { $0 != "-" }.prefix(12)) }
    /// Why `text` cannot be a task id, or nil when it can.
    public static func problem(with text: String) -> String? { Identifier.problem(with: text) }
}

/// Identifies a worker node; stable across the worker's restarts (kept in its state directory).
public struct NodeID: RawRepresentable, Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static func random() -> NodeID { NodeID(rawValue: UUID().uuidString.lowercased()) }
    public var description: String { rawValue }
    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A container's id as the runtime reports it.
public struct ContainerID: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }
    /// The first 12 characters, as `docker ps` shows them.
    public var short: String { String(rawValue.prefix(12)) }
}

enum Identifier {
    static let maximumLength = 64

    static func problem(with text: String) -> String? {
        if text.isEmpty { return "must not be empty" }
        if text.utf8.count > maximumLength { return "must be at most \(maximumLength) characters" }
        guard let first = text.unicodeScalars.first, isAlphanumeric(first) else {
            return "must start with a letter or digit"
        }
        for scalar in text.unicodeScalars where !(isAlphanumeric(scalar) || "._-".unicodeScalars.contains(scalar)) {
            return "may hold only letters, digits, '.', '_' and '-' (found '\(scalar)')"
        }
        return nil
    }

    static func isAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
    }
}
