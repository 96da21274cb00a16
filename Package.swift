// swift-tools-version: 6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "orch",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "orchctl", targets: ["orchctl"]),
        .executable(name: "orch-bench", targets: ["orch-bench"]),
        .executable(name: "orch-sim", targets: ["orch-sim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // The domain: tasks, states, validation, Cube's task files. No I/O.
        .target(name: "OrchCore", swiftSettings: swiftSettings),
        // The control core: the manager's and the worker's decisions as pure state machines
        // (input and time in, effects out). The shells in OrchManager and OrchWorker carry the
        // effects out; the simulator drives the same machines.
        .target(name: "OrchControl", dependencies: ["OrchCore"], swiftSettings: swiftSettings),
        // The deterministic cluster simulator: the real machines against a simulated network,
        // containers, store and clock, all from one seed (docs/RELIABILITY.md).
        .target(name: "OrchSim", dependencies: ["OrchCore", "OrchControl"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "orch-sim",
            dependencies: ["OrchSim", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),
        // The container runtime: the Docker Engine API over its socket.
        .target(
            name: "OrchRuntime",
            dependencies: [
                "OrchCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The cluster protocol between manager and workers (Protocol/WIRE.md).
        .target(
            name: "OrchWire",
            dependencies: [
                "OrchCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // What the manager's and the worker's HTTP APIs share: the error shape, JSON bodies.
        .target(
            name: "OrchHTTP",
            dependencies: ["OrchCore", .product(name: "Hummingbird", package: "hummingbird")],
            swiftSettings: swiftSettings
        ),
        // The cluster's PKI: its certificate authority, join tokens, a worker's key and
        // certificate, a chain checked against the CA a join token pins. Files only, no network.
        .target(
            name: "OrchSecurity",
            dependencies: [
                "OrchCore",
                "OrchWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        // The manager's durable state: SQLite through GRDB (WAL), behind the ManagerStore protocol.
        .target(
            name: "OrchStore",
            dependencies: [
                "OrchCore", .product(name: "GRDB", package: "GRDB.swift"), .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The manager: nodes, placement, the control loop, the REST gateway.
        .target(
            name: "OrchManager",
            dependencies: [
                "OrchCore",
                "OrchControl",
                "OrchWire",
                "OrchStore",
                "OrchHTTP",
                "OrchSecurity",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            resources: [.copy("Console/Templates")],
            swiftSettings: swiftSettings
        ),
        // The worker: runs assigned tasks on Docker, pushes heartbeats and status, serves its HTTP API.
        .target(
            name: "OrchWorker",
            dependencies: [
                "OrchCore",
                "OrchControl",
                "OrchWire",
                "OrchRuntime",
                "OrchHTTP",
                "OrchSecurity",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Peers for tests: a manager side that speaks the real protocol over TCP.
        .target(
            name: "OrchTestSupport",
            dependencies: [
                "OrchCore",
                "OrchWire",
                "OrchSecurity",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Tests/Support",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "orchctl",
            dependencies: [
                "OrchCore",
                "OrchRuntime",
                "OrchWire",
                "OrchWorker",
                "OrchManager",
                "OrchSecurity",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmarks side by side (tools/bench/, docs/BENCHMARKS.md).
        .executableTarget(
            name: "orch-bench",
            dependencies: [
                "OrchCore", "OrchWire", "OrchRuntime", "OrchStore", "OrchSecurity", "OrchTestSupport", "OrchControl", "OrchWorker",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "OrchWireTests",
            dependencies: [
                "OrchCore",
                "OrchWire",
                "OrchTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "OrchWorkerTests", dependencies: ["OrchWorker", "OrchCore", "OrchRuntime"], exclude: ["Samples"], swiftSettings: swiftSettings),
        // The worker against a test peer speaking the real protocol and the real Docker engine.
        .testTarget(
            name: "OrchWorkerIntegrationTests",
            dependencies: [
                "OrchCore", "OrchWire", "OrchRuntime", "OrchWorker", "OrchTestSupport", "orchctl",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Real processes: a manager and workers on loopback with the real Docker engine.
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "OrchCore", "OrchSecurity", "OrchWire", "OrchTestSupport", "orchctl", "orch-bench",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "OrchStoreTests", dependencies: ["OrchCore", "OrchStore", "OrchTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "OrchManagerTests",
            dependencies: [
                "OrchCore", "OrchWire", "OrchStore", "OrchManager", "OrchSecurity", "OrchHTTP", "OrchTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "OrchCoreTests", dependencies: ["OrchCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "OrchSecurityTests",
            dependencies: [
                "OrchCore", "OrchSecurity", "OrchWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: swiftSettings
        ),
        // The machines' handlers, each input with an injected clock (no sleeps, no sockets).
        .testTarget(name: "OrchControlTests", dependencies: ["OrchCore", "OrchControl"], swiftSettings: swiftSettings),
        // The simulator's fixed seed set (CI) and its own checks.
        .testTarget(name: "OrchSimTests", dependencies: ["OrchCore", "OrchControl", "OrchSim"], swiftSettings: swiftSettings),
        // Runs the orchctl that the build puts beside the tests, as a process.
        .testTarget(name: "OrchctlTests", dependencies: ["orchctl", "OrchTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "OrchRuntimeTests", dependencies: ["OrchCore", "OrchRuntime"], swiftSettings: swiftSettings),
        // Against the real Docker engine that tools/test.sh starts.
        .testTarget(
            name: "OrchRuntimeIntegrationTests",
            dependencies: [
                "OrchCore",
                "OrchRuntime",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
