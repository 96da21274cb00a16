/// The body of every HTTP error, manager and worker alike (DESIGN.md, "Conventions"):
/// `{"error": {"code": "task_not_found", "message": "...", "details": [{"path": ..., "message": ...}]}}`.
public struct APIErrorBody: Codable, Sendable, Hashable {
    public struct Content: Codable, Sendable, Hashable {
        /// Stable snake_case, for programs.
        public var code: String
        /// For people.
        public var message: String
        /// Every problem, for invalid input.
        public var details: [SpecProblem]?
    }
    public var error: Content

    public init(code: String, message: String, details: [SpecProblem]? = nil) {
        error = Content(code: code, message: message, details: details)
    }
}

/// A task as a worker's API shows it.
public struct WorkerTaskDTO: Codable, Sendable, Hashable {
    public var id: TaskID
    public var attempt: UInt64
    public var state: TaskState
    public var image: String?
    public var container: ContainerID?
    public var exitCode: Int32?
    public var error: String?
    public var ports: [PublishedPort]
    public var health: TaskHealth

    public init(
        id: TaskID, attempt: UInt64, state: TaskState, image: String?, container: ContainerID?, exitCode: Int32?,
        error: String?, ports: [PublishedPort], health: TaskHealth
    ) {
        self.id = id
        self.attempt = attempt
        self.state = state
        self.image = image
        self.container = container
        self.exitCode = exitCode
        self.error = error
        self.ports = ports
        self.health = health
    }
}
