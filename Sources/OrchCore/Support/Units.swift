/// Sizes in bytes, read from what people write and printed for people.
///
/// Accepted: a whole number of bytes, or a number with a unit: `B`; binary `KiB`, `MiB`,
/// `GiB`, `TiB` (also `Ki`, `Mi`, ...); decimal `kB`, `MB`, `GB`, `TB`; and Docker's single
/// letters `k`, `m`, `g`, `t` (either case), which are binary as in `docker run -m 256m`.
public enum ByteCount {
    /// Parses `text` ("256MiB", "1.5GiB", "512m", "1048576"); nil when it is not a size.
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingSpaces
        let digits = trimmed.prefix { $0.isNumber || $0 == "." }
        guard !digits.isEmpty, let number = Double(digits), number.isFinite, number >= 0 else { return nil }
        let unit = trimmed.dropFirst(digits.count).trimmingSpaces
        let multiplier = multipliers[unit] ?? (unit.count == 1 ? multipliers[unit.lowercased()] : nil)
        guard let multiplier else { return nil }
        let bytes = number * Double(multiplier)
        // A plain number of bytes must be whole; "1.5GiB" is fine.
        guard bytes < 9.0e18, multiplier > 1 || number == number.rounded(.down) else { return nil }
        return Int(bytes.rounded())
    }

    /// `67108864` as "64 MiB", `1536` as "1.5 KiB", `12` as "12 B".
    public static func format(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(bytes)
        var index = 0
        while abs(value) >= 1024, index < units.count - 1 {
            value /= 1024
            index += 1
        }
        if index == 0 { return "\(bytes) B" }
        let rounded = (value * 10).rounded() / 10
        let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
        return "\(text) \(units[index])"
    }

    private static let multipliers: [String: Int] = [
        "": 1, "B": 1, "b": 1,
        "KiB": 1 << 10, "Ki": 1 << 10, "MiB": 1 << 20, "Mi": 1 << 20,
        "GiB": 1 << 30, "Gi": 1 << 30, "TiB": 1 << 40, "Ti": 1 << 40,
        "kB": 1_000, "KB": 1_000, "MB": 1_000_000, "GB": 1_000_000_000, "TB": 1_000_000_000_000,
        "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
    ]
}

/// Durations as people write them: "10s", "1m30s", "500ms", "2h", "1.5s" (Go's notation).
public enum DurationText {
    /// Parses `text`; nil when it is not a duration. A negative duration is refused here.
    public static func parse(_ text: String) -> Duration? {
        var rest = Substring(text.trimmingSpaces)
        guard !rest.isEmpty else { return nil }
        if rest == "0" { return .zero }
        var total: Duration = .zero
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isNumber || $0 == "." }
            guard !digits.isEmpty, let number = Double(digits), number.isFinite else { return nil }
            rest = rest.dropFirst(digits.count)
            let unitText = rest.prefix { $0.isLetter || $0 == "µ" }
            guard let unit = units[String(unitText)] else { return nil }
            rest = rest.dropFirst(unitText.count)
            let nanoseconds = number * unit
            guard nanoseconds < 9.0e18 else { return nil }
            total += .nanoseconds(Int64(nanoseconds.rounded()))
        }
        return total
    }

    /// `.seconds(90)` as "1m30s", `.milliseconds(500)` as "500ms", `.zero` as "0s".
    public static func format(_ duration: Duration) -> String {
        let nanoseconds = duration.components.seconds * 1_000_000_000
            + duration.components.attoseconds / 1_000_000_000
        if nanoseconds == 0 { return "0s" }
        let sign = nanoseconds < 0 ? "-" : ""
        let magnitude = nanoseconds.magnitude
        if magnitude < 1_000_000_000 {
            if magnitude % 1_000_000 == 0 { return "\(sign)\(magnitude / 1_000_000)ms" }
            if magnitude % 1_000 == 0 { return "\(sign)\(magnitude / 1_000)us" }
            return "\(sign)\(magnitude)ns"
        }
        var text = sign
        let hours = magnitude / 3_600_000_000_000
        let minutes = magnitude / 60_000_000_000 % 60
        let seconds = magnitude % 60_000_000_000
        if hours > 0 { text += "\(hours)h" }
        if minutes > 0 { text += "\(minutes)m" }
        if seconds > 0 {
            let whole = seconds / 1_000_000_000
            let fraction = seconds % 1_000_000_000
            if fraction == 0 {
                text += "\(whole)s"
            } else {
                var digits = String(fraction)
                digits = String(repeating: "0", count: 9 - digits.count) + digits
                while digits.hasSuffix("0") { digits.removeLast() }
                text += "\(whole).\(digits)s"
            }
        }
        return text
    }

    private static let units: [String: Double] = [
        "ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9,
    ]
}

extension Duration {
    /// Whole milliseconds, rounded down.
    public var milliseconds: Int64 {
        components.seconds * 1_000 + components.attoseconds / 1_000_000_000_000_000
    }

    /// Whole nanoseconds, rounded down.
    public var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
