package dev.edgekd.demo.core

import org.json.JSONArray
import org.json.JSONObject
import java.io.File

/** The golden files in apps/golden, shared with Python and the other apps (path from -Dedgekd.golden). */
object Golden {
    private val dir: File
        get() = File(System.getProperty("edgekd.golden") ?: error("run with -Dedgekd.golden=<repo>/apps/golden"))

    fun load(name: String): JSONObject = JSONObject(File(dir, name).readText())

    fun floats(a: JSONArray): FloatArray = FloatArray(a.length()) { a.getDouble(it).toFloat() }
    fun ints(a: JSONArray): IntArray = IntArray(a.length()) { a.getInt(it) }

    /** The stand-in graphs of apps/golden/make_sampler_golden.py, computed as Python does (float64, then float32). */
    fun runner(manifest: Manifest) = GraphRunner { graph, input, timestep ->
        if (timestep == null) {
            FloatArray(input.size) { (1.2 * Math.tanh(input[it].toDouble())).toFloat() }
        } else {
            val k = 0.5 + 0.25 * manifest.models.indexOfFirst { it.name == graph }
            FloatArray(input.size) { (k * Math.tanh(input[it].toDouble()) + 1e-4 * timestep).toFloat() }
        }
    }
}
