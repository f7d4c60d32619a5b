package dev.edgekd.demo.core

import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class ManifestTest {
    private val golden = Golden.load("sampler.json")
    private fun manifestJson(case: String): JSONObject = JSONObject(golden.getJSONObject(case).getJSONObject("manifest").toString())

    private fun rejects(json: JSONObject, vararg words: String) {
        try {
            Manifest.parse(json.toString())
            fail("accepted a bad manifest")
        } catch (e: ManifestException) {
            for (w in words) assertTrue("'${e.message}' should mention '$w'", e.message!!.contains(w))
        }
    }

    @Test
    fun parsesOneStep() {
        val m = Manifest.parse(manifestJson("one_step").toString())
        assertEquals(3, m.formatVersion)
        assertTrue(m.sampling is Sampling.OneStep)
        assertEquals("student", m.firstGraph.name)
        assertArrayEquals(intArrayOf(2, 3, 8, 8), m.imageShape)
        assertNull(m.image.crop)
        assertEquals(3, m.image.channels)
    }

    @Test
    fun parsesDdim() {
        val m = Manifest.parse(manifestJson("ddim").toString())
        val s = m.sampling as Sampling.Ddim
        assertEquals(6, s.steps)
        assertArrayEquals(intArrayOf(999, 832, 666, 499, 332, 166), s.timesteps)
        assertEquals(listOf("student_1", "student_1", "student_1", "student_0", "student_0", "student_0"), s.graphPerStep)
        assertTrue(s.clipSample)
        assertEquals("int32", m.graph("student_1").input(Contract.TIMESTEP_INPUT).dtype)
        assertArrayEquals(intArrayOf(2, 2, 28, 28), m.image.crop)
    }

    @Test
    fun rejectsOtherVersions() {
        rejects(manifestJson("one_step").put("format_version", 2), "format_version", "re-export")
    }

    @Test
    fun rejectsInconsistentDdimLists() {
        val json = manifestJson("ddim")
        json.getJSONObject("sampling").put("alphas_cumprod", JSONArray(listOf(0.1, 0.2)))
        rejects(json, "alphas_cumprod", "2")
    }

    @Test
    fun rejectsUnknownGraphAndWrongNames() {
        val unknown = manifestJson("ddim")
        unknown.getJSONObject("sampling").getJSONArray("graph_per_step").put(0, "student_9")
        rejects(unknown, "student_9")
        val renamed = manifestJson("one_step")
        renamed.getJSONArray("models").getJSONObject(0).getJSONArray("inputs").getJSONObject(0).put("name", "x")
        rejects(renamed, "noise")
    }

    @Test
    fun rejectsOtherNoiseGeneratorsAndBadCrops() {
        val noise = manifestJson("one_step")
        noise.getJSONObject("noise").put("portable", "torch")
        rejects(noise, "mulberry32-boxmuller-v1")
        val crop = manifestJson("ddim")
        crop.getJSONObject("image").put("crop", JSONArray(listOf(2, 2, 40, 28)))
        rejects(crop, "crop")
    }

    @Test
    fun rejectsBrokenJson() {
        try {
            Manifest.parse("{\"format_version\": 3,")
            fail("accepted broken JSON")
        } catch (e: ManifestException) {
            assertTrue(e.message!!.contains("JSON"))
        }
    }
}
