import Foundation
import OrchCore
@testable import OrchStore
import OrchTestSupport
import Testing

/// The PostgreSQL store's own: its migrations (once, even with managers opening a new
/// database at the same moment), its URL, and the errors a person gets for a server that is
/// not there or a database that does not exist.
@Suite("PostgreSQL store (a real server of the test's own)", .serialized, .timeLimit(.minutes(3)))
struct PostgresStoreTests {
    @Test func aNewDatabaseIsMigratedOnceEvenByManagersOpeningItAtOnce() async throws {
        try await PostgresServer.with { server in
            let url = server.url()
            let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
                for _ in 0..<4 { group.addTask { try await PostgresStore(url: url) } }
                var opened: [PostgresStore] = []
                for try await store in group { opened.append(store) }
                return opened
            }
            #expect(stores.count == 4)
            for store in stores {
                #expect(try await store.appliedMigrations() == PostgresStore.migrations.map(\.name))
            }
            #expect(try await stores[0].load() == StoreSnapshot(tasks: [], nodes: []))
        }
    }

    @Test func aStoreURLIsReadAndABadOneSaysWhatIsWrong() throws {
        let address = try PostgresStore.Address(url: "postgres://orch:s%40cret@db.example:6432/cluster?sslmode=require")
        #expect(address.user == "orch" && address.password == "s@cret" && address.host == "db.example" && address.port == 6432)
        #expect(address.database == "cluster" && address.requireTLS)
        #expect(address.description == "postgres://orch@db.example:6432/cluster", "no password in messages")
        #expect(try PostgresStore.Address(url: "postgresql://u@h/d").port == 5432)
        for (text, reason) in [("mysql://u@h/d", "not a postgres:// URL"), ("postgres://h/d", "no user"), ("postgres://u@h", "no database"),
                               ("postgres://u@h/d?sslmode=verify-full", "sslmode must be disable or require")] {
            #expect(throws: StoreURLError.self) { try PostgresStore.Address(url: text) }
            do { _ = try PostgresStore.Address(url: text) } catch { #expect(error.description.contains(reason), "\(text): \(error)") }
        }
    }

    @Test func aServerThatIsNotThereAndADatabaseThatIsNotAreClearErrors() async throws {
        let port = try freePort()
        let started = ContinuousClock.now
        do {
            _ = try await PostgresStore(url: "postgres://orch@127.0.0.1:\(port)/orch", timeout: .seconds(3))
            Issue.record("opened a store on a port nothing listens on")
        } catch {
            #expect("\(error)".contains("cannot open the store at postgres://orch@127.0.0.1:\(port)/orch"), "\(error)")
        }
        #expect(ContinuousClock.now - started < .seconds(8), "refused at once, or within the timeout")
        try await PostgresServer.with { server in
            do {
                _ = try await PostgresStore(url: server.url("nope"))
                Issue.record("opened a database that does not exist")
            } catch {
                #expect("\(error)".contains("\"nope\" does not exist"), "the server's own words: \(error)")
            }
        }
    }
}
