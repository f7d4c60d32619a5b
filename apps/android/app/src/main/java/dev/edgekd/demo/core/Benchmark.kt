package dev.edgekd.demo.core

import org.json.JSONArray
import org.json.JSONObject

/**
 * Latency statistics as docs/device-benchmark.md defines them for every app: the median (mean of the two middle
 * values for an even count) and the nearest-rank p90, sorted(samples)[ceil(0.9 n) - 1].
 */
object Stats {
    fun median(samples: DoubleArray): Double {
        require(samples.isNotEmpty()) { "no samples" }
        val s = samples.sortedArray()
        val mid = s.size / 2
        return if (s.size % 2 == 1) s[mid] else (s[mid - 1] + s[mid]) / 2.0
    }

    /** Nearest rank: the smallest sample with at least [q] percent of the samples at or below it. */
    fun percentile(samples: DoubleArray, q: Double): Double {
        require(samples.isNotEmpty()) { "no samples" }
        val s = samples.sortedArray()
        val rank = kotlin.math.ceil(q / 100.0 * s.size).toInt().coerceIn(1, s.size)
        return s[rank - 1]
    }
}

class DeviceInfo(val name: String, val platform: String, val os: String)
class RuntimeInfo(val name: String, val version: String, val backend: String, val threads: Int)

/**
 * The device benchmark JSON every app writes (schema edgekd.device-benchmark v1, docs/device-benchmark.md) and
 * `edgekd profile --import` reads. Built here, platform-free, so the JVM tests check its shape.
 */
object BenchmarkReport {
    const val SCHEMA = "edgekd.device-benchmark"
    const val VERSION = 1

    fun build(
        device: DeviceInfo, runtime: RuntimeInfo, manifest: Manifest, manifestFile: String, sha256: List<String>,
        warmup: Int, firstRunMs: Double, samplesMs: DoubleArray, peakMemoryMb: Double?, created: String,
    ): JSONObject {
        val json = JSONObject()
        json.put("schema", SCHEMA)
        json.put("version", VERSION)
        json.put("device", JSONObject().put("name", device.name).put("platform", device.platform).put("os", device.os))
        json.put("runtime", JSONObject().put("name", runtime.name).put("version", runtime.version)
            .put("backend", runtime.backend).put("threads", runtime.threads))
        json.put("model", JSONObject().put("manifest", manifestFile).put("name", manifest.name).put("target", manifest.target)
            .put("precision", manifest.precision).put("sha256", JSONArray(sha256)))
        json.put("warmup", warmup)
        json.put("runs", samplesMs.size)
        json.put("first_run_ms", firstRunMs)
        val samples = JSONArray()
        for (v in samplesMs) samples.put(v)
        json.put("latency_ms", JSONObject().put("median", Stats.median(samplesMs)).put("p90", Stats.percentile(samplesMs, 90.0))
            .put("samples", samples))
        json.put("peak_memory_mb", peakMemoryMb ?: JSONObject.NULL)
        json.put("created", created)
        return json
    }
}

class BenchmarkResult(val firstRunMs: Double, val samplesMs: DoubleArray, val peakMemoryMb: Double?)

/**
 * The benchmark protocol, the same in every app (docs/device-benchmark.md): time a fresh load plus the first
 * generation (what a user waits for), then [warmup] untimed runs, then [runs] timed ones; [generate] gets the run's
 * index i (the app feeds the noise of seed s + i, made beforehand so that it is not timed). Memory is sampled
 * between runs, outside the timings.
 */
object BenchmarkLoop {
    fun run(
        warmup: Int, runs: Int, load: () -> Unit, generate: (Int) -> Unit, memoryMb: () -> Double?,
        clockNs: () -> Long = System::nanoTime,
    ): BenchmarkResult {
        require(runs >= 1 && warmup >= 0) { "runs must be >= 1 and warmup >= 0" }
        var peak: Double? = null
        fun sample() {
            val m = memoryMb() ?: return
            peak = maxOf(peak ?: m, m)
        }
        val start = clockNs()
        load()
        generate(0)
        val firstRunMs = (clockNs() - start) / 1e6
        sample()
        repeat(warmup) { generate(it) }
        val samples = DoubleArray(runs)
        for (i in 0 until runs) {
            val t0 = clockNs()
            generate(i)
            samples[i] = (clockNs() - t0) / 1e6
            sample()
        }
        return BenchmarkResult(firstRunMs, samples, peak)
    }
}
