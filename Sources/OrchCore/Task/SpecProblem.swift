/// One thing wrong with a task file: where (`resources.memory`, `ports[1].hostPort`) and what.
public struct SpecProblem: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The field's path in the file as submitted; empty for the whole document.
    public var path: String
    public var message: String

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// A task file that cannot be accepted, with every problem found in it (not only the first).
public struct TaskSpecError: Error, Sendable, Hashable, CustomStringConvertible {
    public var problems: [SpecProblem]

    public init(problems: [SpecProblem]) { self.problems = problems }

    public var description: String {
        let count = problems.count == 1 ? "1 problem" : "\(problems.count) problems"
        return "invalid task (\(count)): " + problems.map(\.description).joined(separator: "; ")
    }
}

/// Joins a field path: `join("resources", "memory")` is `resources.memory`.
func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

/// Joins an element path: `join("ports", 1)` is `ports[1]`.
func join(_ path: String, _ index: Int) -> String { "\(path)[\(index)]" }
