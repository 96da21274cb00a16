import Foundation

/// A free TCP port on 127.0.0.1 (bound, read and released), for a process that must be
/// started on a known port.
public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestTimeout(what: "a socket") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw TestTimeout(what: "a free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether `host:port` can be bound now (TCP).
public func canBind(_ host: String, _ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr(host)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// A port free on every one of `hosts` (TCP), found among free ports of 127.0.0.1.
public func freePort(onEvery hosts: [String], excluding taken: Set<Int> = []) throws -> Int {
    for _ in 0..<50 {
        let port = try freePort()
        if !taken.contains(port), hosts.allSatisfy({ canBind($0, port) }) { return port }
    }
    throw TestTimeout(what: "a port free on \(hosts.joined(separator: ", "))")
}

/// A new directory under the system's temporary folder, named for `name`.
public func temporaryDirectory(_ name: String) -> String {
    let path = NSTemporaryDirectory() + "orch-\(name)-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
