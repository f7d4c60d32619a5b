package dev.edgekd.demo.core

import kotlin.math.sqrt

/** Runs one graph: [input] is the noise (one step) or the sample (DDIM); [timestep] is null for one step. */
fun interface GraphRunner {
    fun run(graph: String, input: FloatArray, timestep: Int?): FloatArray
}

/**
 * The manifest's sampling section as code: one call for a one-step student, or the deterministic DDIM loop
 * (diffusers DDIMScheduler.step with eta 0) over the graph named for each step. Platform-free so the JVM tests
 * check it against Python with a known step function.
 */
object Sampler {
    fun sample(sampling: Sampling, noise: FloatArray, runner: GraphRunner, onStep: ((Int, Int) -> Unit)? = null): FloatArray =
        when (sampling) {
            is Sampling.OneStep -> runner.run(sampling.graph, noise, null).also { onStep?.invoke(1, 1) }
            is Sampling.Ddim -> ddim(sampling, noise, runner, onStep)
        }

    private fun ddim(s: Sampling.Ddim, noise: FloatArray, runner: GraphRunner, onStep: ((Int, Int) -> Unit)?): FloatArray {
        var x = noise.copyOf()
        val lo = (-s.clipSampleRange).toFloat()
        val hi = s.clipSampleRange.toFloat()
        for (i in 0 until s.steps) {
            val eps = runner.run(s.graphPerStep[i], x, s.timesteps[i])
            require(eps.size == x.size) { "graph ${s.graphPerStep[i]} returned ${eps.size} values for ${x.size}" }
            val a = s.alphasCumprod[i].toFloat()
            val aPrev = s.alphasCumprodPrev[i].toFloat()
            val sqrtA = sqrt(a)
            val sqrtOneMinusA = sqrt(1f - a)
            val sqrtAPrev = sqrt(aPrev)
            val sqrtOneMinusAPrev = sqrt(1f - aPrev)
            val next = FloatArray(x.size)
            for (j in x.indices) {
                var x0 = (x[j] - sqrtOneMinusA * eps[j]) / sqrtA
                if (s.clipSample) x0 = x0.coerceIn(lo, hi)
                next[j] = sqrtAPrev * x0 + sqrtOneMinusAPrev * eps[j]
            }
            x = next
            onStep?.invoke(i + 1, s.steps)
        }
        return x
    }
}
