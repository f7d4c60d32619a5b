package dev.edgekd.demo.core

import java.io.File
import java.time.Instant

/**
 * Writes the benchmark JSON the app would write for a real exported manifest, with the app's own protocol and
 * report code, the sampler driven by a stand-in graph (no LiteRT on the JVM) and the JVM heap as the memory
 * figure: tests/apps/test_contract.py feeds it to `edgekd profile --import`. Args: MANIFEST OUT.json
 */
fun main(args: Array<String>) {
    val manifestFile = File(args[0])
    val m = Manifest.parse(manifestFile.readText())
    val shape = m.imageShape
    val noises = List(5) { PortableNoise.batch(it.toLong(), shape[0], shape[1] * shape[2] * shape[3]) }
    val standIn = GraphRunner { _, input, _ -> FloatArray(input.size) { Math.tanh(input[it].toDouble()).toFloat() } }
    val result = BenchmarkLoop.run(
        warmup = 2, runs = 5, load = {}, generate = { i -> Sampler.sample(m.sampling, noises[i], standIn) },
        memoryMb = { (Runtime.getRuntime().totalMemory() - Runtime.getRuntime().freeMemory()) / 1048576.0 },
    )
    val report = BenchmarkReport.build(
        DeviceInfo("JVM stand-in", "android", System.getProperty("os.name") + " " + System.getProperty("os.version")),
        RuntimeInfo("litert", "stand-in", "xnnpack", 1), m, manifestFile.name, m.models.map { it.sha256 ?: "" },
        2, result.firstRunMs, result.samplesMs, result.peakMemoryMb, Instant.now().toString(),
    )
    File(args[1]).writeText(report.toString(2))
}
