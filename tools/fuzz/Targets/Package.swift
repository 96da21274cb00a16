// swift-tools-version: 6.2
import PackageDescription

// The libFuzzer targets (tools/fuzz/README.md): the cluster protocol's decoder and the DNS
// responder's codec. Sources/OrchCore and Sources/OrchWire are symlinks to the project's own
// targets, so the fuzzers run the real code; built on their own so that only this build is
// instrumented.

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "OrchFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .target(name: "OrchCore", swiftSettings: swiftSettings),
        // The codec without the sockets: the files left out need NIOPosix and swift-log,
        // which the decoder does not use.
        .target(
            name: "OrchWire",
            dependencies: ["OrchCore", .product(name: "NIOCore", package: "swift-nio")],
            exclude: ["WireClient.swift", "WireTransport.swift"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "WireDecoderFuzz",
            dependencies: ["OrchWire", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "DNSAnswerFuzz", dependencies: ["OrchCore"], swiftSettings: swiftSettings),
    ]
)
