// swift-tools-version:5.9
// The platform-free core of the iOS app (manifest, portable noise, sampler, pixels, benchmark stats) as a
// library with its golden-vector tests: `swift test` on macOS (or Linux with a Swift toolchain). The app itself
// is EdgekdDemo.xcodeproj, which compiles the same EdgekdDemo/Core files into the app.
import PackageDescription

let package = Package(
    name: "EdgekdCore",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "EdgekdCore", targets: ["EdgekdCore"]),
    ],
    targets: [
        .target(name: "EdgekdCore", path: "EdgekdDemo/Core"),
        .testTarget(name: "EdgekdCoreTests", dependencies: ["EdgekdCore"], path: "Tests/EdgekdCoreTests"),
    ]
)
