package dev.edgekd.demo.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

/** Seed -> portable noise -> the manifest's sampling -> pixels, against apps/golden/sampler.json (Python). */
class SamplerTest {
    private val golden = Golden.load("sampler.json")

    private fun runCase(case: String): Triple<Manifest, FloatArray, Pixmap> {
        val g = golden.getJSONObject(case)
        val m = Manifest.parse(g.getJSONObject("manifest").toString())
        val shape = m.imageShape
        val noise = PortableNoise.batch(g.getLong("seed"), shape[0], shape[1] * shape[2] * shape[3])
        val first8 = Golden.floats(g.getJSONArray("noise_first8"))
        for (i in first8.indices) assertTrue("noise $i", Math.abs(noise[i] - first8[i]) <= Math.ulp(first8[i]))
        val steps = ArrayList<Int>()
        val x = Sampler.sample(m.sampling, noise, Golden.runner(m)) { done, _ -> steps.add(done) }
        val expected = Golden.floats(g.getJSONArray("output"))
        assertEquals(expected.size, x.size)
        var worst = 0f
        for (i in x.indices) worst = maxOf(worst, Math.abs(x[i] - expected[i]))
        assertTrue("max abs diff $worst vs Python", worst <= 1e-5f)
        assertEquals((1..((m.sampling as? Sampling.Ddim)?.steps ?: 1)).toList(), steps)
        return Triple(m, x, Pixels.image(x, shape, m.image.crop))
    }

    @Test
    fun oneStepBatchMatchesPythonOutputAndPixels() {
        val (m, x, first) = runCase("one_step")
        val shape = m.imageShape
        val expected = Golden.ints(golden.getJSONObject("one_step").getJSONArray("pixels"))
        val perImage = shape[1] * shape[2] * shape[3]
        val both = first.values + Pixels.image(x, shape, null, index = 1).values
        assertEquals(2 * perImage, expected.size)
        assertArrayEquals(expected, both)
        assertEquals(8, first.width)
        assertEquals(3, first.channels)
    }

    @Test
    fun ddimLoopOverTwoGraphsMatchesDiffusers() {
        val (_, _, pixmap) = runCase("ddim")
        assertEquals(28, pixmap.width)
        assertEquals(28, pixmap.height)
        assertArrayEquals(Golden.ints(golden.getJSONObject("ddim").getJSONArray("pixels")), pixmap.values)
    }

    @Test
    fun ddimCallsTheGraphNamedForEachStepWithItsTimestep() {
        val m = Manifest.parse(golden.getJSONObject("ddim").getJSONObject("manifest").toString())
        val calls = ArrayList<String>()
        Sampler.sample(m.sampling, FloatArray(1024), GraphRunner { graph, input, t -> calls.add("$graph@$t"); FloatArray(input.size) })
        assertEquals(listOf("student_1@999", "student_1@832", "student_1@666", "student_0@499", "student_0@332", "student_0@166"), calls)
    }
}
