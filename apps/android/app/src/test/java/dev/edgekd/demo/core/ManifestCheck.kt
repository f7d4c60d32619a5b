package dev.edgekd.demo.core

import org.json.JSONArray
import org.json.JSONObject
import java.io.File

/**
 * Parses real exported manifests with the app's own parser and prints what the app will do with each, as one JSON
 * line per file: tests/apps/test_contract.py runs it on the manifests `edgekd export` writes. A manifest the app
 * rejects prints {"path", "error"}.
 */
fun main(args: Array<String>) {
    for (path in args) {
        val out = JSONObject().put("path", path)
        try {
            val m = Manifest.parse(File(path).readText())
            out.put("name", m.name).put("target", m.target).put("image_shape", JSONArray(m.imageShape.toList()))
            when (val s = m.sampling) {
                is Sampling.OneStep -> out.put("kind", "one_step").put("graphs", JSONArray(listOf(s.graph)))
                is Sampling.Ddim -> out.put("kind", "ddim").put("graphs", JSONArray(s.graphPerStep))
                    .put("timesteps", JSONArray(s.timesteps.toList()))
            }
            val inputs = JSONObject()
            for (g in m.models) {
                val specs = JSONObject()
                for (t in g.inputs + g.output) {
                    specs.put(t.name, JSONObject().put("shape", JSONArray(t.shape.toList())).put("dtype", t.dtype).put("layout", t.layout))
                }
                inputs.put(g.name, JSONObject().put("file", g.file).put("tensors", specs))
            }
            out.put("models", inputs)
            out.put("crop", m.image.crop?.let { JSONArray(it.toList()) } ?: JSONObject.NULL)
        } catch (e: ManifestException) {
            out.put("error", e.message)
        }
        println(out.toString())
    }
}
