package dev.edgekd.demo.core

import kotlin.math.PI
import kotlin.math.cos
import kotlin.math.ln
import kotlin.math.sin
import kotlin.math.sqrt

/**
 * mulberry32-boxmuller-v1 (docs/manifest-v3.md): the seeded noise every app reproduces bit for bit, because
 * torch's generator cannot be re-implemented here. Kotlin's Int arithmetic wraps at 32 bits like the reference.
 */
class Mulberry32(seed: Int) {
    private var state: Int = seed

    fun nextUInt32(): Long {
        state += 0x6D2B79F5
        var t = state
        t = (t xor (t ushr 15)) * (t or 1)
        t = t xor (t + (t xor (t ushr 7)) * (t or 61))
        return (t xor (t ushr 14)).toLong() and 0xFFFFFFFFL
    }

    fun nextUnit(): Double = nextUInt32().toDouble() / 4294967296.0
}

object PortableNoise {
    /** [count] standard normals from [seed] (taken mod 2^32), z0 then z1 per Box-Muller pair, rounded to float32. */
    fun normals(seed: Long, count: Int): FloatArray {
        val rng = Mulberry32(seed.toInt())
        val out = FloatArray(count)
        var i = 0
        while (i < count) {
            val u1 = 1.0 - rng.nextUnit()
            val u2 = rng.nextUnit()
            val r = sqrt(-2.0 * ln(u1))
            out[i] = (r * cos(2.0 * PI * u2)).toFloat()
            if (i + 1 < count) out[i + 1] = (r * sin(2.0 * PI * u2)).toFloat()
            i += 2
        }
        return out
    }

    /** A batch of [batch] images of [perImage] values each: image i of seed s uses seed s + i. */
    fun batch(seed: Long, batch: Int, perImage: Int): FloatArray {
        val out = FloatArray(batch * perImage)
        for (i in 0 until batch) normals(seed + i, perImage).copyInto(out, i * perImage)
        return out
    }
}
