import OrchCore

/// Why a runtime call failed, in words a user can act on.
public enum RuntimeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The engine does not answer at its address.
    case daemonUnreachable(endpoint: String, reason: String)
    /// The engine speaks no API version this program speaks.
    case unsupportedAPIVersion(engine: String, minimum: String, supported: String)
    /// The image is not present and could not be pulled.
    case imageUnavailable(image: String, reason: String)
    case containerNotFound(String)
    /// The engine refused a request that conflicts with its state (a name in use, ...).
    case conflict(String)
    /// A host port the task asks for is taken.
    case portUnavailable(String)
    /// Any other refusal, with the engine's message.
    case engine(operation: String, status: Int, message: String)
    /// The engine took longer than the call allows.
    case timeout(operation: String, after: Duration)
    /// Every connection to the engine was busy for the whole time the call could wait; worth retrying.
    case busy(operation: String)
    /// The engine sent more than the call accepts.
    case responseTooLarge(operation: String, limitBytes: Int)
    /// The engine sent something this program cannot read.
    case invalidResponse(operation: String, reason: String)

    /// Whether trying again later may succeed (the engine was busy, slow or away).
    public var isTransient: Bool {
        switch self {
        case .daemonUnreachable, .timeout, .busy: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .daemonUnreachable(let endpoint, let reason):
            "Docker is not running at \(endpoint) (\(reason)); start it, e.g. with tools/setup.sh"
        case .unsupportedAPIVersion(let engine, let minimum, let supported):
            "the Docker engine speaks API \(minimum) to \(engine); this program speaks \(supported)"
        case .imageUnavailable(let image, let reason):
            "image \(image) is not present and the registry could not be reached: \(reason)"
        case .containerNotFound(let id):
            "no container \(id)"
        case .conflict(let message):
            "Docker refused: \(message)"
        case .portUnavailable(let message):
            "a host port is not available: \(message)"
        case .engine(let operation, let status, let message):
            "Docker could not \(operation) (HTTP \(status)): \(message)"
        case .busy(let operation):
            "the Docker engine is busy: \(operation) waited for a free connection to it and gave up"
        case .timeout(let operation, let after):
            "Docker did not \(operation) within \(DurationText.format(after))"
        case .responseTooLarge(let operation, let limit):
            "Docker's answer to \(operation) is larger than \(ByteCount.format(limit))"
        case .invalidResponse(let operation, let reason):
            "cannot read Docker's answer to \(operation): \(reason)"
        }
    }
}
