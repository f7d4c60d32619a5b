import Foundation
import XCTest
@testable import EdgekdCore

/// The same golden vectors the Kotlin JVM tests and the browser check (apps/golden, made by Python).
final class GoldenTests: XCTestCase {
    private static let golden = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("golden")

    private func load(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: Self.golden.appendingPathComponent(name))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    private func floats(_ value: Any?) throws -> [Float] {
        try XCTUnwrap(value as? [Double]).map { Float($0) }
    }

    /// The stand-in graphs of apps/golden/make_sampler_golden.py, computed as Python does (Double, then Float).
    private struct StandIn: GraphRunner {
        let manifest: Manifest
        func run(graph: String, input: [Float], timestep: Int?) throws -> [Float] {
            guard let t = timestep else { return input.map { Float(1.2 * tanh(Double($0))) } }
            let k = 0.5 + 0.25 * Double(manifest.models.firstIndex { $0.name == graph } ?? -1)
            return input.map { Float(k * tanh(Double($0)) + 1e-4 * Double(t)) }
        }
    }

    func testUInt32StreamMatchesPython() throws {
        let expected = try XCTUnwrap(try load("portable-noise.json")["uint32_seed42_first8"] as? [Int])
        var rng = Mulberry32(seed: 42)
        XCTAssertEqual(expected.map { UInt32($0) }, (0..<expected.count).map { _ in rng.nextUInt32() })
    }

    func testNormalsMatchPythonWithinOneUlp() throws {
        let normals = try XCTUnwrap(try load("portable-noise.json")["normals"] as? [String: Any])
        for (seed, values) in normals {
            let expected = try floats(values)
            let got = PortableNoise.normals(seed: try XCTUnwrap(Int64(seed)), count: expected.count)
            for (g, e) in zip(got, expected) { XCTAssertLessThanOrEqual(abs(g - e), e.ulp, "seed \(seed)") }
        }
    }

    private func runCase(_ name: String) throws -> (Manifest, [Float], [String: Any]) {
        let golden = try XCTUnwrap(try load("sampler.json")[name] as? [String: Any])
        let manifestData = try JSONSerialization.data(withJSONObject: try XCTUnwrap(golden["manifest"]))
        let m = try Manifest.parse(manifestData)
        let shape = try m.imageShape()
        let seed = Int64(try XCTUnwrap(golden["seed"] as? Int))
        let noise = PortableNoise.batch(seed: seed, batch: shape[0], perImage: shape[1] * shape[2] * shape[3])
        let x = try Sampler.sample(m.sampling, noise: noise, runner: StandIn(manifest: m))
        let expected = try floats(golden["output"])
        XCTAssertEqual(x.count, expected.count)
        let worst = zip(x, expected).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, 1e-5)
        return (m, x, golden)
    }

    func testOneStepBatchMatchesPythonPixels() throws {
        let (m, x, golden) = try runCase("one_step")
        let shape = try m.imageShape()
        let pixels = (0..<shape[0]).flatMap { Pixels.image(x, shape: shape, crop: m.image.crop, index: $0).values }
        XCTAssertEqual(pixels.map { Int($0) }, try XCTUnwrap(golden["pixels"] as? [Int]))
    }

    func testNaNIsZeroAndInfinitiesClip() {
        // a diverged model shows a picture instead of trapping; the values Android and the web app give
        XCTAssertEqual(Pixels.toPixel(.nan), 0)
        XCTAssertEqual(Pixels.toPixel(.infinity), 255)
        XCTAssertEqual(Pixels.toPixel(-.infinity), 0)
        XCTAssertEqual(Pixels.image([.nan, 1, -1, .infinity], shape: [1, 1, 2, 2], crop: nil).values, [0, 255, 0, 255])
    }

    func testDdimLoopMatchesDiffusersPixels() throws {
        let (m, x, golden) = try runCase("ddim")
        let pixmap = Pixels.image(x, shape: try m.imageShape(), crop: m.image.crop)
        XCTAssertEqual(pixmap.width, 28)
        XCTAssertEqual(pixmap.values.map { Int($0) }, try XCTUnwrap(golden["pixels"] as? [Int]))
    }

    func testStatsMatchNumpy() throws {
        let stats = try XCTUnwrap(try load("sampler.json")["stats"] as? [String: Any])
        let samples = try XCTUnwrap(stats["samples"] as? [Double])
        XCTAssertEqual(Stats.median(samples), try XCTUnwrap(stats["median"] as? Double), accuracy: 1e-12)
        XCTAssertEqual(Stats.percentile(samples, 90), try XCTUnwrap(stats["p90"] as? Double), accuracy: 1e-12)
    }

    func testRejectsOtherManifestVersions() throws {
        let data = Data(#"{"format_version": 2, "name": "x"}"#.utf8)
        XCTAssertThrowsError(try Manifest.parse(data)) { error in
            XCTAssertTrue("\(error)".contains("format_version"))
        }
    }

    func testReportHasTheDocumentedKeys() throws {
        let golden = try XCTUnwrap(try load("sampler.json")["ddim"] as? [String: Any])
        let m = try Manifest.parse(try JSONSerialization.data(withJSONObject: try XCTUnwrap(golden["manifest"])))
        let result = BenchmarkResult(firstRunMs: 120, samplesMs: [2, 4, 3], peakMemoryMb: nil)
        let report = BenchmarkReport.build(device: ["name": "iPhone16,1", "platform": "ios", "os": "iOS 18"],
                                           runtime: ["name": "coreml", "version": "iOS 18", "backend": "all", "threads": 0],
                                           manifest: m, manifestFile: "student.manifest.json", warmup: 3,
                                           result: result)
        XCTAssertEqual(Set(report.keys), ["schema", "version", "device", "runtime", "model", "warmup", "runs",
                                          "first_run_ms", "latency_ms", "peak_memory_mb", "created"])
        XCTAssertTrue(report["peak_memory_mb"] is NSNull)
        let latency = try XCTUnwrap(report["latency_ms"] as? [String: Any])
        XCTAssertEqual(latency["median"] as? Double, 3)
        XCTAssertEqual(latency["p90"] as? Double, 4)  // nearest rank
        XCTAssertNoThrow(try BenchmarkReport.json(report))
    }
}
