import Logging
import NIOCore
import NIOPosix
import OrchCore

/// Answers DNS over UDP for the zone `service.orch.` from the catalog (``DNSAnswer`` makes
/// each response; this only carries datagrams). One query at a time, in the order they come.
struct DNSResponder: Sendable {
    let cluster: Cluster
    let logger: Logger
    private let channel: NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>

    /// The address it answers on (port 0 becomes the chosen port).
    let localAddress: String

    static func bind(host: String, port: Int, cluster: Cluster, logger: Logger) async throws -> DNSResponder {
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        let address = channel.channel.localAddress
        return DNSResponder(
            cluster: cluster, logger: logger, channel: channel,
            localAddress: "\(address?.ipAddress ?? host):\(address?.port ?? port)")
    }

    func run() async throws {
        try await channel.executeThenClose { inbound, outbound in
            for try await envelope in inbound {
                let query = Array(envelope.data.readableBytesView)
                var endpoints: [ServiceEndpoint]?
                if let name = DNSAnswer.queriedService(query) {
                    endpoints = try? await cluster.endpoints(of: name, index: nil, wait: .zero).endpoints
                }
                let found = endpoints
                guard let response = DNSAnswer.respond(to: query, lookup: { _ in found }) else { continue }
                do {
                    try await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: response)))
                } catch {
                    logger.debug("a DNS answer could not be sent: \(error)")
                }
            }
        }
    }
}
