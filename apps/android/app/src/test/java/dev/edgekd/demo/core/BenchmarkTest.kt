package dev.edgekd.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class BenchmarkTest {
    private val golden = Golden.load("sampler.json")

    @Test
    fun statsMatchNumpy() {
        val stats = golden.getJSONObject("stats")
        val samples = DoubleArray(stats.getJSONArray("samples").length()) { stats.getJSONArray("samples").getDouble(it) }
        assertEquals(stats.getDouble("median"), Stats.median(samples), 1e-12)
        assertEquals(stats.getDouble("p90"), Stats.percentile(samples, 90.0), 1e-12)
        assertEquals(7.0, Stats.median(doubleArrayOf(7.0)), 0.0)
        assertEquals(3.0, Stats.median(doubleArrayOf(4.0, 2.0)), 0.0)
        // nearest rank: of 10 sorted samples the 9th, of 11 the 10th
        assertEquals(9.0, Stats.percentile(DoubleArray(10) { 10.0 - it }, 90.0), 0.0)
        assertEquals(10.0, Stats.percentile(DoubleArray(11) { it + 1.0 }, 90.0), 0.0)
    }

    @Test
    fun loopTimesLoadPlusFirstRunThenWarmupThenRuns() {
        var now = 0L
        val events = ArrayList<String>()
        var memory = 10.0
        val result = BenchmarkLoop.run(
            warmup = 2, runs = 3,
            load = { events.add("load"); now += 5_000_000 },
            generate = { i -> events.add("gen$i"); now += 1_000_000 },
            memoryMb = { memory += 1.0; memory },
            clockNs = { now },
        )
        assertEquals(listOf("load", "gen0", "gen0", "gen1", "gen0", "gen1", "gen2"), events)
        assertEquals(6.0, result.firstRunMs, 1e-9)
        assertEquals(listOf(1.0, 1.0, 1.0), result.samplesMs.toList())
        assertEquals(14.0, result.peakMemoryMb!!, 1e-9)
    }

    @Test
    fun reportHasTheDocumentedSchema() {
        val m = Manifest.parse(golden.getJSONObject("ddim").getJSONObject("manifest").toString())
        val json = BenchmarkReport.build(
            DeviceInfo("Pixel 8", "android", "Android 15 (API 35)"), RuntimeInfo("litert", "2.1.0", "cpu", 4), m,
            "student.manifest.json", m.models.map { it.sha256 ?: "" }, 3, 120.5, doubleArrayOf(2.0, 4.0, 3.0), null,
            "2026-11-29T01:00:00Z",
        )
        assertEquals(setOf("schema", "version", "device", "runtime", "model", "warmup", "runs", "first_run_ms", "latency_ms",
            "peak_memory_mb", "created"), json.keySet())
        assertEquals("edgekd.device-benchmark", json.getString("schema"))
        assertEquals(1, json.getInt("version"))
        assertEquals(setOf("name", "platform", "os"), json.getJSONObject("device").keySet())
        assertEquals(setOf("name", "version", "backend", "threads"), json.getJSONObject("runtime").keySet())
        assertEquals(setOf("manifest", "name", "target", "precision", "sha256"), json.getJSONObject("model").keySet())
        assertEquals(2, json.getJSONObject("model").getJSONArray("sha256").length())
        assertEquals(3, json.getInt("runs"))
        val latency = json.getJSONObject("latency_ms")
        assertEquals(3.0, latency.getDouble("median"), 0.0)
        assertEquals(4.0, latency.getDouble("p90"), 0.0)
        assertEquals(3, latency.getJSONArray("samples").length())
        assertTrue(json.isNull("peak_memory_mb"))
    }
}
