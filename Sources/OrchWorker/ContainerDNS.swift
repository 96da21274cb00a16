import Foundation
import Logging
import NIOCore
import NIOPosix
import OrchCore

#if canImport(Glibc)
import Glibc
#endif

/// The name service of this host's containers: `NAME.service.orch` is the worker's own
/// load balancer, on the container bridge's gateway (where HAProxy listens on every
/// published port too), so that a task reaches another service by name and published port
/// wherever its replicas run. Names outside the zone go to the host's own resolver, as the
/// containers would have asked without it. Containers are created with it as their only
/// DNS server (`HostConfig.Dns`).
struct ContainerDNS: Sendable {
    let address: String
    let logger: Logger
    /// The published ports of a service this worker balances (nil: it balances none).
    let published: @Sendable (String) async -> [UInt16]?
    let upstream: String?
    private let channel: NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>

    /// Binds `address:port` (no address reuse: a second worker on this host does not take
    /// it from the first, whose load balancer listens there).
    static func bind(
        address: String, port: Int = 53, logger: Logger, published: @escaping @Sendable (String) async -> [UInt16]?
    ) async throws -> ContainerDNS {
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: address, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        return ContainerDNS(address: address, logger: logger, published: published, upstream: Self.hostResolver(besides: address), channel: channel)
    }

    func run() async throws {
        try await channel.executeThenClose { inbound, outbound in
            for try await envelope in inbound {
                let query = Array(envelope.data.readableBytesView)
                let response: [UInt8]?
                if DNSAnswer.isInZone(query) {
                    var endpoints: [ServiceEndpoint]?
                    if let name = DNSAnswer.queriedService(query), let ports = await published(name) {
                        endpoints = [Self.endpoint(address, ports)]
                    }
                    let found = endpoints
                    response = DNSAnswer.respond(to: query, lookup: { _ in found })
                } else if let upstream {
                    response = await Self.forward(query, to: upstream)
                } else {
                    response = nil
                }
                guard let response else { continue }
                try? await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: response)))
            }
        }
    }

    /// The load balancer on `address` as the one endpoint of a service: A is the address,
    /// SRV the published ports.
    static func endpoint(_ address: String, _ ports: [UInt16]) -> ServiceEndpoint {
        ServiceEndpoint(
            task: TaskID(rawValue: "mesh"), slot: 0, version: 0, node: NodeID(rawValue: "mesh"), nodeName: nil, address: address,
            ports: ports.map { PublishedPort(containerPort: Int($0), protocol: .tcp, hostIP: address, hostPort: Int($0)) },
            health: .none, draining: false)
    }

    /// The first name server of the host's `/etc/resolv.conf` that is not `address`.
    static func hostResolver(besides address: String, path: String = "/etc/resolv.conf") -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let words = line.split(whereSeparator: \.isWhitespace)
            if words.count >= 2, words[0] == "nameserver", words[1] != address { return String(words[1]) }
        }
        return nil
    }

    /// Asks `server` (IPv4) and gives its answer, or nil after 2 s.
    static func forward(_ query: [UInt8], to server: String, port: UInt16 = 53) async -> [UInt8]? {
        await Task.detached {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_port = in_port_t(port.bigEndian)
            guard inet_pton(AF_INET, server, &target.sin_addr) == 1 else { return nil }
            let sent = query.withUnsafeBytes { bytes in
                withUnsafePointer(to: &target) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            guard sent == query.count else { return nil }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return nil }
            return Array(buffer[0..<count])
        }.value
    }
}
