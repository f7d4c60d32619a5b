import Foundation

/// Latency statistics as docs/device-benchmark.md defines them for every app: the median (mean of the two middle
/// values for an even count) and the nearest-rank p90, sorted(samples)[ceil(0.9 n) - 1].
enum Stats {
    static func median(_ samples: [Double]) -> Double {
        precondition(!samples.isEmpty, "no samples")
        let s = samples.sorted()
        let mid = s.count / 2
        return s.count % 2 == 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
    }

    /// Nearest rank: the smallest sample with at least `q` percent of the samples at or below it.
    static func percentile(_ samples: [Double], _ q: Double) -> Double {
        precondition(!samples.isEmpty, "no samples")
        let s = samples.sorted()
        let rank = min(max(Int((q / 100 * Double(s.count)).rounded(.up)), 1), s.count)
        return s[rank - 1]
    }
}

struct BenchmarkResult {
    let firstRunMs: Double
    let samplesMs: [Double]
    let peakMemoryMb: Double?
}

/// The benchmark protocol, the same in every app (docs/device-benchmark.md): time a fresh load plus the first
/// generation, then `warmup` untimed runs, then `runs` timed ones; `generate` gets the run's index i (the app feeds
/// the noise of seed s + i, made beforehand so that it is not timed). Memory is sampled between runs.
enum BenchmarkLoop {
    static func run(warmup: Int, runs: Int, load: () throws -> Void, generate: (Int) throws -> Void,
                    memoryMb: () -> Double?,
                    clockNs: () -> UInt64 = { DispatchTime.now().uptimeNanoseconds }) throws -> BenchmarkResult {
        precondition(runs >= 1 && warmup >= 0, "runs must be >= 1 and warmup >= 0")
        var peak: Double?
        func sample() {
            if let m = memoryMb() { peak = max(peak ?? m, m) }
        }
        let start = clockNs()
        try load()
        try generate(0)
        let firstRunMs = Double(clockNs() - start) / 1e6
        sample()
        for i in 0..<warmup { try generate(i) }
        var samples: [Double] = []
        for i in 0..<runs {
            let t0 = clockNs()
            try generate(i)
            samples.append(Double(clockNs() - t0) / 1e6)
            sample()
        }
        return BenchmarkResult(firstRunMs: firstRunMs, samplesMs: samples, peakMemoryMb: peak)
    }
}

/// The device benchmark JSON every app writes (schema edgekd.device-benchmark v1, docs/device-benchmark.md),
/// which `edgekd profile --import` reads.
enum BenchmarkReport {
    static let schema = "edgekd.device-benchmark"
    static let version = 1

    static func build(device: [String: String], runtime: [String: Any], manifest: Manifest, manifestFile: String,
                      warmup: Int, result: BenchmarkResult, created: Date = Date()) -> [String: Any] {
        let iso = ISO8601DateFormatter()
        return [
            "schema": schema,
            "version": version,
            "device": device,
            "runtime": runtime,
            "model": [
                "manifest": manifestFile, "name": manifest.name, "target": manifest.target,
                "precision": manifest.precision, "sha256": manifest.models.map { $0.sha256 ?? "" },
            ] as [String: Any],
            "warmup": warmup,
            "runs": result.samplesMs.count,
            "first_run_ms": result.firstRunMs,
            "latency_ms": [
                "median": Stats.median(result.samplesMs), "p90": Stats.percentile(result.samplesMs, 90),
                "samples": result.samplesMs,
            ] as [String: Any],
            "peak_memory_mb": result.peakMemoryMb.map { $0 as Any } ?? NSNull(),
            "created": iso.string(from: created),
        ]
    }

    static func json(_ report: [String: Any]) throws -> Data {
        try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
    }
}
