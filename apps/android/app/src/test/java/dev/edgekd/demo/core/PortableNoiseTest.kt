package dev.edgekd.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class PortableNoiseTest {
    private val golden = Golden.load("portable-noise.json")

    @Test
    fun uint32StreamMatchesPythonExactly() {
        val expected = golden.getJSONArray("uint32_seed42_first8")
        val rng = Mulberry32(42)
        for (i in 0 until expected.length()) assertEquals("value $i", expected.getLong(i), rng.nextUInt32())
    }

    @Test
    fun normalsMatchPythonWithinOneFloat32Ulp() {
        val normals = golden.getJSONObject("normals")
        var checked = 0
        for (key in normals.keys()) {
            val expected = Golden.floats(normals.getJSONArray(key))
            val got = PortableNoise.normals(key.toLong(), expected.size)
            for (i in expected.indices) {
                assertTrue("seed $key value $i: ${got[i]} vs ${expected[i]}", Math.abs(got[i] - expected[i]) <= Math.ulp(expected[i]))
                checked++
            }
        }
        assertTrue("golden file has normals for several seeds", checked >= 32)
    }

    @Test
    fun oddCountDropsTheLastZ1AndBatchUsesSeedPlusIndex() {
        val five = PortableNoise.normals(3, 5)
        val six = PortableNoise.normals(3, 6)
        assertEquals(five.toList(), six.toList().subList(0, 5))
        val batch = PortableNoise.batch(10, 2, 4)
        assertEquals(PortableNoise.normals(10, 4).toList() + PortableNoise.normals(11, 4).toList(), batch.toList())
    }

    @Test
    fun seedWrapsModulo2To32() {
        assertEquals(PortableNoise.normals(4294967295L, 4).toList(), PortableNoise.normals(-1L, 4).toList())
        assertEquals(PortableNoise.normals(0L, 4).toList(), PortableNoise.normals(4294967296L, 4).toList())
    }
}
