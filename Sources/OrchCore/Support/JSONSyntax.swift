/// Checks that bytes are JSON as RFC 8259 writes it, strictly (no trailing comma, no
/// comment, no single quote), and says where they are not: `line 3, column 18: ...`.
/// Foundation's decoders accept trailing commas and name no position; a file refused here is
/// never decoded.
public enum JSONSyntax {
    public struct Problem: Error, Sendable, Hashable, CustomStringConvertible {
        public var line: Int
        public var column: Int
        public var message: String
        public var description: String { "line \(line), column \(column): \(message)" }
    }

    /// The first syntax problem of `bytes`, or nil when they are one JSON value.
    public static func problem(in bytes: some Collection<UInt8>) -> Problem? {
        var scanner = Scanner(bytes: Array(bytes))
        do throws(Problem) {
            scanner.skipSpace()
            try scanner.value(depth: 0)
            scanner.skipSpace()
            if scanner.index < scanner.bytes.count { throw scanner.fail("more after the end of the document (\(scanner.shown))") }
            return nil
        } catch {
            return error
        }
    }

    struct Scanner {
        let bytes: [UInt8]
        var index = 0
        static let maximumDepth = 256

        var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        /// The byte at the position, as a user sees it.
        var shown: String {
            guard let byte = current else { return "the end of the file" }
            if byte >= 0x20 && byte < 0x7F { return "'\(Character(Unicode.Scalar(byte)))'" }
            return byte == 0x0A ? "a line break" : "byte 0x\(String(byte, radix: 16))"
        }

        func fail(_ message: String, at position: Int? = nil) -> Problem {
            let end = min(position ?? index, bytes.count)
            var line = 1, column = 1
            for byte in bytes[..<end] {
                if byte == 0x0A {
                    line += 1
                    column = 1
                } else if byte & 0xC0 != 0x80 {
                    column += 1
                }
            }
            return Problem(line: line, column: column, message: message)
        }

        mutating func skipSpace() {
            while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
        }

        mutating func value(depth: Int) throws(Problem) {
            guard depth < Self.maximumDepth else { throw fail("nested more than \(Self.maximumDepth) deep") }
            guard let byte = current else { throw fail("expected a value, found the end of the file") }
            switch byte {
            case UInt8(ascii: "{"): try object(depth: depth)
            case UInt8(ascii: "["): try array(depth: depth)
            case UInt8(ascii: "\""): try string()
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
            case UInt8(ascii: "t"): try literal("true")
            case UInt8(ascii: "f"): try literal("false")
            case UInt8(ascii: "n"): try literal("null")
            case UInt8(ascii: "'"): throw fail("strings take double quotes (\"), not single ones")
            case UInt8(ascii: "/"): throw fail("JSON has no comments")
            default: throw fail("expected a value, found \(shown)")
            }
        }

        mutating func object(depth: Int) throws(Problem) {
            index += 1
            skipSpace()
            if current == UInt8(ascii: "}") { index += 1; return }
            while true {
                guard current == UInt8(ascii: "\"") else { throw fail("expected a field name in double quotes, found \(shown)") }
                try string()
                skipSpace()
                guard current == UInt8(ascii: ":") else { throw fail("expected ':' after the field name, found \(shown)") }
                index += 1
                skipSpace()
                try value(depth: depth + 1)
                skipSpace()
                switch current {
                case UInt8(ascii: ","):
                    let comma = index
                    index += 1
                    skipSpace()
                    if current == UInt8(ascii: "}") { throw fail("a trailing comma: remove the ',' before '}'", at: comma) }
                case UInt8(ascii: "}"):
                    index += 1
                    return
                default:
                    throw fail("expected ',' or '}' after a field, found \(shown) (a missing comma?)")
                }
            }
        }

        mutating func array(depth: Int) throws(Problem) {
            index += 1
            skipSpace()
            if current == UInt8(ascii: "]") { index += 1; return }
            while true {
                try value(depth: depth + 1)
                skipSpace()
                switch current {
                case UInt8(ascii: ","):
                    let comma = index
                    index += 1
                    skipSpace()
                    if current == UInt8(ascii: "]") { throw fail("a trailing comma: remove the ',' before ']'", at: comma) }
                case UInt8(ascii: "]"):
                    index += 1
                    return
                default:
                    throw fail("expected ',' or ']' after an element, found \(shown) (a missing comma?)")
                }
            }
        }

        mutating func string() throws(Problem) {
            let start = index
            index += 1
            while let byte = current {
                switch byte {
                case UInt8(ascii: "\""):
                    index += 1
                    return
                case UInt8(ascii: "\\"):
                    index += 1
                    guard let escaped = current else { break }
                    if escaped == UInt8(ascii: "u") {
                        for offset in 1...4 {
                            guard index + offset < bytes.count, Self.isHex(bytes[index + offset]) else {
                                throw fail("\\u takes four hexadecimal digits")
                            }
                        }
                        index += 5
                    } else if Array("\"\\/bfnrt".utf8).contains(escaped) {
                        index += 1
                    } else {
                        throw fail("\\\(Character(Unicode.Scalar(escaped))) is not an escape JSON knows (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)", at: index - 1)
                    }
                case 0..<0x20:
                    throw fail(byte == 0x0A ? "a line break inside a string (write \\n, or close the quote)" : "a control character inside a string (escape it)")
                default:
                    index += 1
                }
            }
            throw fail("a string that is never closed", at: start)
        }

        static func isHex(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
        }

        mutating func digits() -> Int {
            let start = index
            while let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
            return index - start
        }

        mutating func number() throws(Problem) {
            let start = index
            if current == UInt8(ascii: "-") { index += 1 }
            if current == UInt8(ascii: "0") {
                index += 1
                if let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
                    throw fail("a number does not start with 0 (write it without the leading zero, or as a string)", at: start)
                }
            } else if digits() == 0 {
                throw fail("expected a digit, found \(shown)")
            }
            if current == UInt8(ascii: ".") {
                index += 1
                guard digits() > 0 else { throw fail("expected a digit after the decimal point, found \(shown)") }
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                index += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
                guard digits() > 0 else { throw fail("expected a digit in the exponent, found \(shown)") }
            }
        }

        mutating func literal(_ word: String) throws(Problem) {
            let expected = Array(word.utf8)
            guard index + expected.count <= bytes.count, Array(bytes[index..<index + expected.count]) == expected else {
                throw fail("expected a value, found \(shown) (true, false and null are written in lower case; text takes double quotes)")
            }
            index += expected.count
        }
    }
}
