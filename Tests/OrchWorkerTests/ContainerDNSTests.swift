import Foundation
import OrchCore
@testable import OrchWorker
import Testing

/// The containers' name service, apart from its socket: which resolver other names go to,
/// and what a name in the zone answers.
@Suite struct ContainerDNSTests {
    static func resolvConf(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "resolv-\(UUID().uuidString.prefix(8)).conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func otherNamesGoToTheHostsFirstResolverThatIsNotTheGateway() throws {
        let path = try Self.resolvConf("# made by hand\nsearch example.org\nnameserver 172.17.0.1\nnameserver 10.0.0.53\nnameserver 8.8.8.8\n")
        #expect(ContainerDNS.hostResolver(besides: "172.17.0.1", path: path) == "10.0.0.53")
        #expect(ContainerDNS.hostResolver(besides: "10.0.0.53", path: path) == "172.17.0.1")
        let none = try Self.resolvConf("search example.org\n")
        #expect(ContainerDNS.hostResolver(besides: "172.17.0.1", path: none) == nil, "no resolver: names outside the zone get no answer")
        #expect(ContainerDNS.hostResolver(besides: "172.17.0.1", path: "/nonexistent/resolv.conf") == nil)
    }

    @Test func aPublishingServiceIsTheGatewayWithItsPublishedPorts() {
        let endpoint = ContainerDNS.endpoint("172.17.0.1", [8000, 9000])
        #expect(endpoint.ready && endpoint.address == "172.17.0.1")
        #expect(endpoint.ports.map(\.hostPort) == [8000, 9000] && endpoint.ports.allSatisfy { $0.hostIP == "172.17.0.1" && $0.protocol == .tcp })
    }

    @Test func aForwardToAResolverThatDoesNotAnswerGivesNothingWithinItsTimeout() async throws {
        // A resolver that takes the datagram and never answers.
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound)
        let started = ContinuousClock.now
        let answer = await ContainerDNS.forward([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0], to: "127.0.0.1", port: UInt16(bigEndian: address.sin_port))
        #expect(answer == nil)
        #expect(ContinuousClock.now - started < .seconds(4), "given up after its 2 s timeout")
        #expect(await ContainerDNS.forward([0x12, 0x34], to: "not an address") == nil)
    }
}
