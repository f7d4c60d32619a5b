import Foundation

/// Latency statistics as numpy computes them (median; p90 by linear interpolation between order statistics).
enum Stats {
    static func percentile(_ samples: [Double], _ q: Double) -> Double {
        precondition(!samples.isEmpty, "no samples")
        let s = samples.sorted()
        let pos = Double(s.count - 1) * q / 100
        let lo = Int(pos.rounded(.down))
        let hi = Int(pos.rounded(.up))
        return s[lo] + (s[hi] - s[lo]) * (pos - Double(lo))
    }

    static func median(_ samples: [Double]) -> Double { percentile(samples, 50) }
}

struct BenchmarkResult {
    let firstRunMs: Double
    let samplesMs: [Double]
    let peakMemoryMb: Double?
}

/// The benchmark protocol, the same in every app: time a fresh load plus the first generation, then `warmup`
/// untimed runs, then `runs` timed ones; memory is sampled between runs, outside the timings.
enum BenchmarkLoop {
    static func run(warmup: Int, runs: Int, load: () throws -> Void, generate: () throws -> Void,
                    memoryMb: () -> Double?,
                    clockNs: () -> UInt64 = { DispatchTime.now().uptimeNanoseconds }) throws -> BenchmarkResult {
        precondition(runs >= 1 && warmup >= 0, "runs must be >= 1 and warmup >= 0")
        var peak: Double?
        func sample() {
            if let m = memoryMb() { peak = max(peak ?? m, m) }
        }
        let start = clockNs()
        try load()
        try generate()
        let firstRunMs = Double(clockNs() - start) / 1e6
        sample()
        for _ in 0..<warmup { try generate() }
        var samples: [Double] = []
        for _ in 0..<runs {
            let t0 = clockNs()
            try generate()
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
