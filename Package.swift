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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        // The domain: tasks, states, validation, Cube's task files. No I/O.
        .target(name: "OrchCore", swiftSettings: swiftSettings),
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
        .executableTarget(
            name: "orchctl",
            dependencies: [
                "OrchCore",
                "OrchRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "OrchWireTests",
            dependencies: [
                "OrchCore",
                "OrchWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "OrchCoreTests", dependencies: ["OrchCore"], swiftSettings: swiftSettings),
        // Runs the orchctl that the build puts beside the tests, as a process.
        .testTarget(name: "OrchctlTests", dependencies: ["orchctl"], swiftSettings: swiftSettings),
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
