import Foundation

/// Any JSON document, decoded first so that a task file can be read field by field and
/// every problem reported with its path, instead of stopping at the first one as Codable does.
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// What kind of value this is, for error messages ("expected a string, found a number").
    public var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

extension JSONValue {
    /// JSON for people: keys sorted, two spaces of indent, `{}` and `[]` when empty, a
    /// short array of plain values on one line.
    public var prettyText: String { pretty(indent: "") }

    private func pretty(indent: String) -> String {
        let inner = indent + "  "
        switch self {
        case .array(let values) where values.isEmpty: return "[]"
        case .object(let fields) where fields.isEmpty: return "{}"
        case .array(let values):
            let flat = values.allSatisfy { if case .array = $0 { false } else if case .object = $0 { false } else { true } }
            let line = "[" + values.map { $0.pretty(indent: inner) }.joined(separator: ", ") + "]"
            if flat && line.count + indent.count <= 80 { return line }
            return "[\n" + values.map { inner + $0.pretty(indent: inner) }.joined(separator: ",\n") + "\n" + indent + "]"
        case .object(let fields):
            return "{\n" + fields.keys.sorted().map { key in
                inner + JSONValue.string(key).pretty(indent: inner) + ": " + fields[key]!.pretty(indent: inner)
            }.joined(separator: ",\n") + "\n" + indent + "}"
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 { return String(Int64(value)) }
            return "\(value)"
        case .string(let text):
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.withoutEscapingSlashes]
            return (try? String(decoding: encoder.encode(text), as: UTF8.self)) ?? "\"\""
        }
    }
}

extension ByteCount {
    /// A size as a task file takes it, exactly: `64MiB`, `1GiB`, or the bytes when no unit divides it.
    public static func exactText(_ bytes: Int) -> String {
        for (unit, size) in [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] where bytes > 0 && bytes % size == 0 {
            return "\(bytes / size)\(unit)"
        }
        return String(bytes)
    }
}
