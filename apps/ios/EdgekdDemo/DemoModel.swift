import CoreGraphics
import CoreML
import Foundation
import SwiftUI

/// The app's state and its two actions. Model work runs off the main actor; the published state changes on it.
@MainActor
final class DemoModel: ObservableObject {
    @Published var seedText = "0"
    @Published var runs = 20
    @Published var image: CGImage?
    @Published var status = "Loading the model from Resources/edgekd/…"
    @Published var busy = false
    @Published private(set) var ready = false

    static let warmup = 3
    private var manifest: Manifest?
    private var graphs: CoreMLGraphs?

    private var manifestFile = Contract.manifestFile

    /// Where `edgekd export RUN --target coreml --into-app ios` put the files: the edgekd folder in the bundle,
    /// or the bundle's root when Xcode flattened the resources (a synchronized folder copies files to the root).
    private var assetDirectory: URL {
        let folder = Bundle.main.bundleURL.appendingPathComponent(Contract.assetDir)
        return FileManager.default.fileExists(atPath: folder.path) ? folder : Bundle.main.bundleURL
    }

    /// The one manifest --into-app put there (its name carries the precision, e.g. student_int8.manifest.json).
    private func findManifest(in directory: URL) throws -> String {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(Contract.manifestSuffix) }
        guard names.count == 1 else {
            throw ManifestError("expected one *\(Contract.manifestSuffix) in the app's \(Contract.assetDir) resources, found \(names.count)")
        }
        return names[0]
    }

    func load() async {
        do {
            manifestFile = try findManifest(in: assetDirectory)
            let data = try Data(contentsOf: assetDirectory.appendingPathComponent(manifestFile))
            let m = try Manifest.parse(data)
            guard m.target == Contract.target else {
                throw ManifestError("this app runs \(Contract.target) models, the manifest is \(m.target): export with --target \(Contract.target)")
            }
            manifest = m
            graphs = try await CoreMLGraphs(manifest: m, directory: assetDirectory)
            ready = true
            status = "\(m.name): \(describe(m)), \(m.target) \(m.precision). Press Generate."
        } catch {
            status = "No usable model: \(error)\nExport one with: edgekd export RUN --target coreml --into-app ios"
        }
    }

    private func describe(_ m: Manifest) -> String {
        switch m.sampling {
        case .oneStep: return "one step"
        case .ddim(let s): return "DDIM \(s.steps) steps over \(Set(s.graphPerStep).count) graph(s)"
        }
    }

    private var seed: Int64 { Int64(seedText.trimmingCharacters(in: .whitespaces)) ?? 0 }

    private func noise(_ m: Manifest, seed: Int64) throws -> [Float] {
        let shape = try m.imageShape()
        return PortableNoise.batch(seed: seed, batch: shape[0], perImage: shape[1] * shape[2] * shape[3])
    }

    /// The loaded graphs; loaded again when a failed benchmark left none (it drops them to time a fresh load).
    private func loadedGraphs(_ m: Manifest) async throws -> CoreMLGraphs {
        if let loaded = graphs { return loaded }
        status = "Loading the model…"
        let loaded = try await CoreMLGraphs(manifest: m, directory: assetDirectory)
        graphs = loaded
        return loaded
    }

    func generate() async {
        guard let m = manifest else {
            status = "No model loaded: export one with: edgekd export RUN --target coreml --into-app ios"
            return
        }
        busy = true
        defer { busy = false }
        do {
            let runner = try await loadedGraphs(m)
            let input = try noise(m, seed: seed)
            let (x, ms) = try await Task.detached(priority: .userInitiated) { () -> ([Float], Double) in
                let t0 = DispatchTime.now().uptimeNanoseconds
                let x = try Sampler.sample(m.sampling, noise: input, runner: runner)
                return (x, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            }.value
            let pixmap = Pixels.image(x, shape: try m.imageShape(), crop: m.image.crop)
            image = Self.cgImage(pixmap)
            status = String(format: "%.1f ms (%@)", ms, describe(m))
        } catch {
            status = "error: \(error)"
        }
    }

    func benchmark() async {
        guard let m = manifest else {
            status = "No model loaded: export one with: edgekd export RUN --target coreml --into-app ios"
            return
        }
        busy = true
        defer { busy = false }
        status = "Benchmarking: load + first run, \(Self.warmup) warm-up runs, \(runs) timed runs…"
        let runs = self.runs
        let warmup = Self.warmup
        let directory = assetDirectory
        do {
            // run i uses the noise of seed s + i, made here so that it is not timed
            let base = seed
            let noises = try (0..<max(warmup, runs)).map { try noise(m, seed: base + Int64($0)) }
            graphs = nil
            let (result, loaded) = try await Task.detached(priority: .userInitiated) { () -> (BenchmarkResult, CoreMLGraphs) in
                let start = DispatchTime.now().uptimeNanoseconds
                let loaded = try await CoreMLGraphs(manifest: m, directory: directory)
                let loadNs = DispatchTime.now().uptimeNanoseconds - start
                // the load is async (CoreML may compile), so it is timed here and added to the first run
                let timed = try BenchmarkLoop.run(
                    warmup: warmup, runs: runs, load: {},
                    generate: { i in _ = try Sampler.sample(m.sampling, noise: noises[i], runner: loaded) },
                    memoryMb: DeviceInfo.footprintMb)
                let result = BenchmarkResult(firstRunMs: timed.firstRunMs + Double(loadNs) / 1e6,
                                             samplesMs: timed.samplesMs, peakMemoryMb: timed.peakMemoryMb)
                return (result, loaded)
            }.value
            graphs = loaded
            // CoreML picks its own threads: "threads" 0 means the runtime decides
            let report = BenchmarkReport.build(
                device: ["name": DeviceInfo.machine, "platform": "ios", "os": DeviceInfo.os],
                runtime: ["name": "coreml", "version": DeviceInfo.os, "backend": "all", "threads": 0],
                manifest: m, manifestFile: manifestFile, warmup: warmup,
                result: result)
            let url = try write(BenchmarkReport.json(report))
            status = String(format: "median %.2f ms, p90 %.2f ms, first run %.1f ms (incl. load), peak %.0f MB\n",
                            Stats.median(result.samplesMs), Stats.percentile(result.samplesMs, 90), result.firstRunMs,
                            result.peakMemoryMb ?? 0)
                + "JSON written to \(url.path)\n(Files app > On My iPhone > edgekd demo; then: edgekd profile RUN --import FILE.json)"
        } catch {
            // graphs is nil when the fresh load failed: say so; Generate loads the model again
            status = "Benchmark failed: \(error)" + (graphs == nil ? "\nThe model is unloaded; Generate loads it again." : "")
        }
    }

    /// Atomically into Documents (shared with the Files app through UIFileSharingEnabled).
    private func write(_ data: Data) throws -> URL {
        let documents = try FileManager.default.url(for: .documentDirectory, in: .userDomainMask,
                                                    appropriateFor: nil, create: true)
        let stamp = Int(Date().timeIntervalSince1970 * 1000)
        let url = documents.appendingPathComponent("edgekd-benchmark-\(stamp).json")
        try data.write(to: url, options: .atomic)
        return url
    }

    private static func cgImage(_ pixmap: Pixmap) -> CGImage? {
        let bytes = pixmap.rgba()
        guard let provider = CGDataProvider(data: Data(bytes) as CFData) else { return nil }
        return CGImage(width: pixmap.width, height: pixmap.height, bitsPerComponent: 8, bitsPerPixel: 32,
                       bytesPerRow: pixmap.width * 4, space: CGColorSpaceCreateDeviceRGB(),
                       bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }
}
