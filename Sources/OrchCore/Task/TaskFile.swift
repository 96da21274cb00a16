/// A task file as submitted: ours, or a task event of Cube, the orchestrator this one grows from.
///
/// One decoder serves both. A document whose top level has a `Task` object (any case, as
/// Go matches keys) is Cube's and is translated (see ``CubeTaskEvent``); anything else is
/// read in our shape (``TaskSpec``).
public struct TaskSubmission: Sendable, Hashable {
    /// The spec to run, normalized.
    public var spec: TaskSpec
    /// Which shape the file had.
    public var format: Format
    /// What the file asks for: Cube sends a stop as the same event with State 3 (Completed).
    public var intent: Intent
    /// Paths of fields that were present but have no effect here (Cube's bookkeeping fields,
    /// unknown Cube fields); a client may show them as warnings.
    public var ignoredFields: [String]

    public enum Format: Sendable, Hashable {
        case native
        /// Cube's task event, with the event's own id when it had one.
        case cube(eventID: String?)
    }

    public enum Intent: Sendable, Hashable {
        case run, stop
    }
}

public enum TaskFile {
    /// The largest task file accepted.
    public static let maximumBytes = 1 << 20

    /// Reads a task file in either shape; throws ``TaskSpecError`` with every problem found.
    public static func decode(_ data: Data) throws(TaskSpecError) -> TaskSubmission {
        try decode(try parse(data, what: "task file"))
    }

    /// The JSON of a file of at most 1 MiB (a task or a service file), or the one problem
    /// that keeps it from being read.
    public static func parse(_ data: Data, what: String) throws(TaskSpecError) -> JSONValue {
        guard data.count <= maximumBytes else {
            throw TaskSpecError(problems: [SpecProblem(path: "", message: "the \(what) is larger than 1 MiB")])
        }
        if let problem = JSONSyntax.problem(in: data) {
            throw TaskSpecError(problems: [SpecProblem(path: "", message: "not valid JSON: \(problem)")])
        }
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw TaskSpecError(problems: [SpecProblem(path: "", message: "not valid JSON: \(jsonErrorText(error))")])
        }
    }

    /// Reads an already-parsed task file in either shape.
    public static func decode(_ json: JSONValue) throws(TaskSpecError) -> TaskSubmission {
        if case .object(let fields) = json, fields["replicas"] != nil || fields["update"] != nil, case .object? = fields["task"] {
            // A service file (a name, replicas, a task template), not a task or a Cube event.
            throw TaskSpecError(problems: [SpecProblem(
                path: "", message: "this is a service file (name, replicas, task); create it with orchctl service create -f FILE or POST /services")])
        }
        if CubeTaskEvent.isCubeShaped(json) {
            return try CubeTaskEvent.translate(json)
        }
        guard case .object = json else {
            throw TaskSpecError(problems: [SpecProblem(path: "", message: "expected a task object, found \(json.kindName)")])
        }
        return TaskSubmission(spec: try TaskSpec(json: json), format: .native, intent: .run, ignoredFields: [])
    }

    private static func jsonErrorText(_ error: any Error) -> String {
        guard case DecodingError.dataCorrupted(let context) = error else { return "\(error)" }
        if let underlying = context.underlyingError {
            let text = "\(underlying)"
            // Foundation's underlying errors read like `Error Domain=... "Unexpected character..."`.
            if let start = text.firstIndex(of: "\""), let end = text.lastIndex(of: "\""), start < end {
                return String(text[text.index(after: start)..<end])
            }
            return text
        }
        return context.debugDescription
    }
}
