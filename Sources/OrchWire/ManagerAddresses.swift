import Synchronization

/// The managers a worker may dial (`--manager A,B,C`), and which one it dials next: the
/// one it was last welcomed by, the leader a follower named, or else the next in the list.
/// Shared by the worker's connection and its joins and renewals.
public final class ManagerAddresses: Sendable {
    public struct Address: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

        /// `HOST:PORT` (`[V6]:PORT` too); nil when it is not one.
        public init?(_ text: String) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
            var host = String(text[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { return nil }
            self.init(host: host, port: port)
        }
    }

    private let state: Mutex<(list: [Address], current: Int)>

    public init(_ list: [Address]) {
        precondition(!list.isEmpty, "at least one manager")
        state = Mutex((list, 0))
    }

    public convenience init(host: String, port: Int) { self.init([Address(host: host, port: port)]) }

    /// Every address given (and every leader named since).
    public var all: [Address] { state.withLock { $0.list } }

    /// The one to dial next.
    public var current: Address { state.withLock { $0.list[$0.current] } }

    /// The current one did not answer or does not lead: the next in the list.
    public func advance() {
        state.withLock { $0.current = ($0.current + 1) % $0.list.count }
    }

    /// A follower named `leader` (`HOST:PORT`): it is dialed next (added to the list when it
    /// was not in it). False when the text is not an address.
    @discardableResult
    public func follow(leader text: String) -> Bool {
        guard let leader = Address(text) else { return false }
        state.withLock { state in
            if let index = state.list.firstIndex(of: leader) {
                state.current = index
            } else {
                state.list.append(leader)
                state.current = state.list.count - 1
            }
        }
        return true
    }
}
