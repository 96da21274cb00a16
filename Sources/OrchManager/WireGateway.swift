import Logging
import NIOCore
import OrchCore
import OrchWire

/// The manager's end of the cluster protocol: one connection per worker. The first message
/// must be hello (within `handshakeTimeout`); then the worker's messages go to the cluster
/// in order. The cluster writes to the worker through its `NodeLink`.
struct WireGateway: Sendable {
    let cluster: Cluster
    let logger: Logger
    var handshakeTimeout: Duration = .seconds(10)

    func serve(_ connection: WireChannel) async {
        let sender = WireSender(connection)
        let channel = connection.channel
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(handshakeTimeout.nanoseconds)) { channel.close(promise: nil) }
        var joined: NodeLink?
        do {
            try await connection.executeThenClose { inbound, _ in
                var messages = inbound.makeAsyncIterator()
                guard case .hello(let hello)? = try await messages.next() else {
                    try? await sender.write(.error(ErrorMessage(code: .unexpectedMessage, message: "the first message must be hello")))
                    return
                }
                timer.cancel()
                switch await cluster.join(hello, on: channel) {
                case .refused(let refused):
                    logger.warning("refused node \(hello.name) (\(hello.nodeID)): \(refused.reason)")
                    try await sender.write(.refused(refused))
                    return
                case .welcome(_, let link):
                    joined = link
                    while let message = try await messages.next() {
                        let read = ContinuousClock.now
                        await cluster.received(message, from: link.node, link: link)
                        if case .heartbeat = message { cluster.metrics.heartbeatApplied(after: ContinuousClock.now - read) }
                    }
                }
            }
        } catch {
            logger.debug("connection ended: \(error)")
        }
        timer.cancel()
        if let joined { await cluster.disconnected(joined.node, link: joined) }
    }
}
