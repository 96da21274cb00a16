/// Reads a ``JSONValue`` field by field, collecting every problem with its path instead of
/// stopping at the first; the task-file parsers (ours and Cube's) are built on it.
struct FieldReader {
    private(set) var problems: [SpecProblem] = []
    /// Fields that were present but had no effect (a lenient reader's unknown fields).
    private(set) var ignored: [String] = []

    /// How an object's keys are matched.
    struct Keys {
        var known: [String]
        /// Go's encoding/json matches keys case-insensitively; Cube's files rely on it.
        var caseInsensitive = false
        /// Unknown keys are problems (ours, so typos are caught) or ignored (Go's way).
        var refuseUnknown = true
    }

    /// An object's fields by their canonical names; `null` reads as absent.
    struct Fields {
        let path: String
        var values: [String: JSONValue] = [:]
        subscript(key: String) -> JSONValue? {
            if case .null = values[key] { return nil }
            return values[key]
        }
        func path(_ key: String) -> String { join(path, key) }
    }

    mutating func report(_ path: String, _ message: String) {
        problems.append(SpecProblem(path: path, message: message))
    }

    mutating func ignore(_ path: String) { ignored.append(path) }

    func hasProblem(at path: String) -> Bool {
        problems.contains { $0.path == path || $0.path.hasPrefix(path + ".") || $0.path.hasPrefix(path + "[") }
    }

    // MARK: - Containers

    mutating func fields(_ value: JSONValue, at path: String, _ keys: Keys) -> Fields? {
        guard case .object(let object) = value else {
            report(path, "expected an object, found \(value.kindName)")
            return nil
        }
        var fields = Fields(path: path)
        for key in object.keys.sorted() {
            if keys.known.contains(key) {
                fields.values[key] = object[key]
            } else if let canonical = keys.known.first(where: { $0.lowercased() == key.lowercased() }) {
                if keys.caseInsensitive {
                    if fields.values[canonical] == nil { fields.values[canonical] = object[key] }
                } else {
                    report(join(path, key), "unknown field; did you mean '\(canonical)'?")
                }
            } else if keys.refuseUnknown {
                // A typo gets the nearest known field (at most two edits away).
                if let candidate = nearestWord(to: key, in: keys.known) {
                    report(join(path, key), "unknown field; did you mean '\(candidate)'?")
                } else {
                    report(join(path, key), "unknown field; known: \(keys.known.joined(separator: ", "))")
                }
            } else {
                ignore(join(path, key))
            }
        }
        return fields
    }

    mutating func array(_ value: JSONValue?, at path: String) -> [JSONValue]? {
        guard let value else { return nil }
        guard case .array(let elements) = value else {
            report(path, "expected an array, found \(value.kindName)")
            return nil
        }
        return elements
    }

    /// An object whose values are all strings (environment, labels).
    mutating func stringMap(_ value: JSONValue?, at path: String) -> [String: String]? {
        guard let value else { return nil }
        guard case .object(let object) = value else {
            report(path, "expected an object of strings, found \(value.kindName)")
            return nil
        }
        var map: [String: String] = [:]
        for (key, element) in object {
            switch element {
            case .string(let text): map[key] = text
            case .number, .bool:
                // Not turned into text behind the user's back: the file says what it means.
                report(join(path, key), "expected a string, found \(element.kindDescription); write \"\(element.scalarText)\"")
            default: report(join(path, key), "expected a string, found \(element.kindName)")
            }
        }
        return map
    }

    // MARK: - Scalars

    mutating func string(_ value: JSONValue?, at path: String) -> String? {
        guard let value else { return nil }
        guard case .string(let text) = value else {
            report(path, "expected a string, found \(value.kindName)")
            return nil
        }
        return text
    }

    mutating func strings(_ value: JSONValue?, at path: String) -> [String]? {
        guard let elements = array(value, at: path) else { return nil }
        var result: [String] = []
        for (index, element) in elements.enumerated() {
            if let text = string(element, at: join(path, index)) { result.append(text) }
        }
        return result
    }

    mutating func integer(_ value: JSONValue?, at path: String) -> Int? {
        guard let value else { return nil }
        if case .number(let number) = value, number == number.rounded(), abs(number) < 9.0e15 {
            return Int(number)
        }
        report(path, "expected a whole number, found \(value.kindDescription)")
        return nil
    }

    mutating func duration(_ value: JSONValue?, at path: String) -> Duration? {
        switch value {
        case nil: return nil
        case .string(let text)?:
            if let duration = DurationText.parse(text) { return duration }
        case .number(let seconds)? where seconds >= 0 && seconds < 1e9:
            return .nanoseconds(Int64((seconds * 1e9).rounded()))
        default: break
        }
        report(path, "expected a duration such as \"10s\" or \"1m30s\", found \(value!.kindDescription)")
        return nil
    }

    mutating func bytes(_ value: JSONValue?, at path: String) -> Int? {
        switch value {
        case nil: return nil
        case .string(let text)?:
            if let bytes = ByteCount.parse(text) { return bytes }
        case .number(let number)? where number >= 0 && number == number.rounded() && number < 9.0e18:
            return Int(number)
        default: break
        }
        report(path, "expected a size in bytes such as 268435456 or \"256MiB\", found \(value!.kindDescription)")
        return nil
    }

    /// CPUs as a decimal (`0.5`) or in millicores (`"500m"`), returned in millicores.
    mutating func millicores(_ value: JSONValue?, at path: String) -> Int? {
        switch value {
        case nil: return nil
        case .number(let cpus)? where cpus >= 0 && cpus < 1e6:
            return Int((cpus * 1000).rounded())
        case .string(let text)?:
            let trimmed = text.trimmingSpaces
            if trimmed.hasSuffix("m"), let milli = Int(trimmed.dropLast()), milli >= 0 { return milli }
            if let cpus = Double(trimmed), cpus >= 0, cpus < 1e6 { return Int((cpus * 1000).rounded()) }
        default: break
        }
        report(path, "expected a number of CPUs such as 0.5 or \"500m\", found \(value!.kindDescription)")
        return nil
    }
}

extension JSONValue {
    /// The kind, with the value itself for scalars: `"abc"`, `-3`, `true`.
    var kindDescription: String {
        switch self {
        case .string(let text): "\"\(text)\""
        case .number, .bool: scalarText
        default: kindName
        }
    }

    var scalarText: String {
        switch self {
        case .number(let number):
            number == number.rounded() && abs(number) < 9.0e15 ? String(Int(number)) : String(number)
        case .bool(let flag): String(flag)
        case .string(let text): text
        default: kindName
        }
    }
}

/// The candidate nearest to `word` (case aside), when it is at most two edits away: the
/// suggestion for a typo (`imgae` → `image`, `stauts` → `status`).
public func nearestWord(to word: String, in candidates: [String]) -> String? {
    let nearest = candidates.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }.min { ($0.1, $0.0) < ($1.1, $1.0) }
    guard let (candidate, distance) = nearest, distance <= 2, distance < word.count else { return nil }
    return candidate
}

/// Levenshtein distance between two short strings (field names).
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
