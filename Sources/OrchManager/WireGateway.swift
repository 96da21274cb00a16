import Logging
import NIOCore
import OrchCore
import OrchWire

/// The manager's end of the cluster protocol: one connection per worker. Every frame goes
/// to the cluster in order; the handshake, its deadline and every answer are the machine's.
struct WireGateway: Sendable {
    let cluster: Cluster
    let logger: Logger

    func serve(_ connection: WireChannel) async {
        let id = await cluster.connected(connection.channel)
        do {
            try await connection.executeThenClose { inbound, _ in
                for try await message in inbound {
                    let read = ContinuousClock.now
                    await cluster.received(message, on: id)
                    if case .heartbeat = message { cluster.metrics.heartbeatApplied(after: ContinuousClock.now - read) }
                }
            }
        } catch {
            logger.debug("connection ended: \(error)")
        }
        await cluster.disconnected(id)
    }
}
