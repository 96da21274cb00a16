import Foundation

/// A network namespace of a test's (or a benchmark's) own, joined to the host by a veth pair:
/// 10.77.N.1 on the host's end, 10.77.N.2 inside. Taking the host's end down cuts the inside
/// off silently (no FIN, no RST: only silence); setting it up again heals the link.
public struct NetworkNamespace: Sendable {
    public let name: String
    public let hostLink: String
    /// The host's end: where processes inside reach the host.
    public let hostAddress: String

    public struct SetupError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func create() throws -> NetworkNamespace {
        let n = Int.random(in: 1...250)
        let space = NetworkNamespace(name: "orchns\(n)", hostLink: "orh\(n)", hostAddress: "10.77.\(n).1")
        space.remove()
        let inner = "orn\(n)"
        for command in [
            ["netns", "add", space.name],
            ["link", "add", space.hostLink, "type", "veth", "peer", "name", inner],
            ["link", "set", inner, "netns", space.name],
            ["addr", "add", "\(space.hostAddress)/24", "dev", space.hostLink],
            ["link", "set", space.hostLink, "up"],
            ["netns", "exec", space.name, "ip", "addr", "add", "10.77.\(n).2/24", "dev", inner],
            ["netns", "exec", space.name, "ip", "link", "set", inner, "up"],
            ["netns", "exec", space.name, "ip", "link", "set", "lo", "up"],
        ] {
            guard ip(command) == 0 else {
                space.remove()
                throw SetupError(description: "ip \(command.joined(separator: " ")) failed (run as root, with iproute2 installed)")
            }
        }
        return space
    }

    /// The inside end: where the host reaches processes inside.
    public var insideAddress: String { String(hostAddress.dropLast()) + "2" }

    /// The command line that runs `arguments` inside the namespace.
    public func command(_ executable: String, _ arguments: [String]) -> (executable: String, arguments: [String]) {
        (Self.ipPath, ["netns", "exec", name, executable] + arguments)
    }

    public func cut() { Self.ip(["link", "set", hostLink, "down"]) }

    public func heal() { Self.ip(["link", "set", hostLink, "up"]) }

    public func remove() {
        Self.ip(["link", "del", hostLink])
        Self.ip(["netns", "del", name])
    }

    static let ipPath = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"

    @discardableResult
    static func ip(_ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ipPath)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return 127 }
        process.waitUntilExit()
        return process.terminationStatus
    }
}
