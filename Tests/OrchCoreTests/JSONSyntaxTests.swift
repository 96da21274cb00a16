import Foundation
import OrchCore
import Testing

/// The strict JSON check of task and service files: the position of the first problem, a
/// trailing comma refused, and never a document refused that is JSON (every document it
/// accepts Foundation reads too; every one Foundation reads without a trailing comma, it accepts).
@Suite struct JSONSyntaxTests {
    static func problem(_ text: String) -> JSONSyntax.Problem? { JSONSyntax.problem(in: Array(text.utf8)) }

    @Test(arguments: [
        ("{\"a\": [1,],}", 1, 9, "trailing comma"),
        ("{\"a\": 1,}", 1, 8, "trailing comma"),
        ("{\n  \"a\": 1\n  \"b\": 2\n}", 3, 3, "missing comma"),
        ("{'a': 1}", 1, 2, "double quotes"),
        ("{\"a\": tru}", 1, 7, "lower case"),
        ("{\"a\": 01}", 1, 7, "leading zero"),
        ("{\"a\": \"x\ny\"}", 1, 9, "line break inside a string"),
        ("{\"a\": \"\\q\"}", 1, 8, "escape"),
        ("{\"a\": \"open", 1, 7, "never closed"),
        ("{\"é\": 1 2}", 1, 9, "missing comma"),
        ("{} {}", 1, 4, "more after the end"),
        ("", 1, 1, "end of the file"),
        ("// no\n{}", 1, 1, "no comments"),
    ])
    func aProblemIsPlacedAndNamed(text: String, line: Int, column: Int, words: String) throws {
        let problem = try #require(Self.problem(text), "\(text) was accepted")
        #expect(problem.line == line && problem.column == column && problem.message.contains(words), "\(problem)")
    }

    @Test func everyFileOfTheRepositoryIsAccepted() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let data = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("data").path).filter { $0.hasSuffix(".json") }
        #expect(!data.isEmpty)
        for name in data {
            let bytes = try Data(contentsOf: root.appendingPathComponent("data/\(name)"))
            #expect(JSONSyntax.problem(in: bytes) == nil, "\(name): \(String(describing: JSONSyntax.problem(in: bytes)))")
        }
        for text in ["0", "-0.5e+10", "\"\\u00e9\\n\"", "[]", "{}", " [1, {\"a\": [null, true, false]}, \"x\"] ", "{\"a\":{\"b\":{\"c\":[[[]]]}}}"] {
            #expect(Self.problem(text) == nil, "\(text): \(String(describing: Self.problem(text)))")
        }
    }

    /// Mutations of a task file, each byte replaced, dropped or doubled: what the check
    /// accepts, Foundation reads; what Foundation reads and has no trailing comma, it accepts.
    @Test func agreesWithFoundationOnEveryMutation() throws {
        let document = Array(#"{"name": "web", "command": ["sh", "-c"], "resources": {"cpus": 0.5, "memory": 64}, "ok": true, "n": null}"#.utf8)
        var random = SplitMix64(seed: 7)
        let alphabet = Array(#"{}[]:,"\ 0123456789.-+eEtrufalsn'/"#.utf8)
        var checked = 0
        for position in document.indices {
            for _ in 0..<4 {
                var mutated = document
                switch random.next() % 3 {
                case 0: mutated[position] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                case 1: mutated.remove(at: position)
                default: mutated.insert(mutated[position], at: position)
                }
                let ours = JSONSyntax.problem(in: mutated)
                let foundation = (try? JSONSerialization.jsonObject(with: Data(mutated), options: [.fragmentsAllowed])) != nil
                let text = String(decoding: mutated, as: UTF8.self)
                if ours == nil { #expect(foundation, "accepted, but Foundation refuses: \(text)") }
                if foundation && !Self.hasTrailingComma(mutated) { #expect(ours == nil, "refused (\(String(describing: ours))), but it is JSON: \(text)") }
                checked += 1
            }
        }
        #expect(checked > 300)
    }

    /// A ',' followed (past spaces) by '}' or ']' outside strings.
    static func hasTrailingComma(_ bytes: [UInt8]) -> Bool {
        var inString = false, escaped = false, comma = false
        for byte in bytes {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true; comma = false
            case UInt8(ascii: ","): comma = true
            case UInt8(ascii: "}"), UInt8(ascii: "]"): if comma { return true }
            case UInt8(ascii: " "), 0x0A, 0x09, 0x0D: break
            default: comma = false
            }
        }
        return false
    }
}
