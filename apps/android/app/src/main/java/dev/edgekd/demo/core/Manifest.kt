package dev.edgekd.demo.core

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject

/** A manifest the app cannot use: the message names the field and what was expected. */
class ManifestException(message: String) : Exception(message)

class TensorSpec(val name: String, val shape: IntArray, val dtype: String, val layout: String) {
    val size: Int get() = shape.fold(1) { a, b -> a * b }
    override fun toString(): String = "$name${shape.contentToString()} $dtype $layout"
}

class GraphSpec(val name: String, val file: String, val sha256: String?, val inputs: List<TensorSpec>, val output: TensorSpec) {
    fun input(name: String): TensorSpec =
        inputs.firstOrNull { it.name == name } ?: throw ManifestException("graph '${this.name}' has no input '$name'")
}

sealed class Sampling {
    /** Call the one graph on the noise; its output is the image. */
    class OneStep(val graph: String) : Sampling()

    /** Deterministic DDIM (eta 0) over epsilon-predicting step graphs, one entry per step. */
    class Ddim(
        val timesteps: IntArray,
        val graphPerStep: List<String>,
        val alphasCumprod: DoubleArray,
        val alphasCumprodPrev: DoubleArray,
        val clipSample: Boolean,
        val clipSampleRange: Double,
    ) : Sampling() {
        val steps: Int get() = timesteps.size
    }
}

class NoiseSpec(val shape: IntArray, val portable: String?)

class ImageSpec(val rangeLow: Double, val rangeHigh: Double, val crop: IntArray?, val channels: Int)

/**
 * Manifest v3 (docs/manifest-v3.md), parsed with org.json (part of Android, and Debian's libandroid-json-java on the
 * JVM), validated so that a bad file fails at load with one clear message instead of deep inside a run.
 */
class Manifest(
    val formatVersion: Int,
    val name: String,
    val target: String,
    val precision: String,
    val models: List<GraphSpec>,
    val sampling: Sampling,
    val noise: NoiseSpec,
    val image: ImageSpec,
) {
    fun graph(name: String): GraphSpec =
        models.firstOrNull { it.name == name } ?: throw ManifestException("sampling names graph '$name' but models has no such entry")

    /** The graph whose input is the noise (one step) or the first step graph (DDIM). */
    val firstGraph: GraphSpec
        get() = when (val s = sampling) {
            is Sampling.OneStep -> graph(s.graph)
            is Sampling.Ddim -> graph(s.graphPerStep[0])
        }

    /** The image tensor shape [N, C, H, W] the sampler works on. */
    val imageShape: IntArray
        get() = when (val s = sampling) {
            is Sampling.OneStep -> graph(s.graph).input(Contract.NOISE_INPUT).shape
            is Sampling.Ddim -> graph(s.graphPerStep[0]).input(Contract.SAMPLE_INPUT).shape
        }

    companion object {
        fun parse(text: String): Manifest = try {
            parse(JSONObject(text))
        } catch (e: JSONException) {
            throw ManifestException("manifest is not valid JSON or misses a field: ${e.message}")
        }

        fun parse(json: JSONObject): Manifest {
            val version = json.optInt("format_version", -1)
            if (version != Contract.MANIFEST_VERSION) {
                throw ManifestException("manifest format_version is $version; this app reads ${Contract.MANIFEST_VERSION} " +
                    "(re-export with `edgekd export RUN --target tflite --into-app android`)")
            }
            val models = json.getJSONArray("models").objects().map(::parseGraph)
            if (models.isEmpty()) throw ManifestException("manifest lists no models")
            val sampling = parseSampling(json.getJSONObject("sampling"))
            val noiseJson = json.getJSONObject("noise")
            val noise = NoiseSpec(noiseJson.getJSONArray("shape").ints(), noiseJson.optString("portable", "").ifEmpty { null })
            val imageJson = json.getJSONObject("image")
            val range = imageJson.getJSONArray("range")
            val crop = if (imageJson.isNull("crop") || !imageJson.has("crop")) null else imageJson.getJSONArray("crop").ints()
            val image = ImageSpec(range.getDouble(0), range.getDouble(1), crop, imageJson.optInt("channels", 1))
            val manifest = Manifest(version, json.getString("name"), json.getString("target"),
                json.optString("precision", "fp32"), models, sampling, noise, image)
            manifest.validate()
            return manifest
        }

        private fun parseTensor(json: JSONObject): TensorSpec =
            TensorSpec(json.getString("name"), json.getJSONArray("shape").ints(), json.optString("dtype", "float32"),
                json.optString("layout", Contract.LAYOUT))

        private fun parseGraph(json: JSONObject): GraphSpec =
            GraphSpec(json.getString("name"), json.getString("file"), json.optString("sha256", "").ifEmpty { null },
                json.getJSONArray("inputs").objects().map(::parseTensor), parseTensor(json.getJSONObject("output")))

        private fun parseSampling(json: JSONObject): Sampling = when (val kind = json.getString("kind")) {
            "one_step" -> Sampling.OneStep(json.getString("graph"))
            "ddim" -> {
                val prediction = json.optString("prediction", Contract.PREDICTION)
                if (prediction != Contract.PREDICTION) throw ManifestException("sampling.prediction '$prediction' is not supported (epsilon only)")
                Sampling.Ddim(
                    json.getJSONArray("timesteps").ints(),
                    json.getJSONArray("graph_per_step").strings(),
                    json.getJSONArray("alphas_cumprod").doubles(),
                    json.getJSONArray("alphas_cumprod_prev").doubles(),
                    json.optBoolean("clip_sample", false),
                    json.optDouble("clip_sample_range", 1.0),
                )
            }
            else -> throw ManifestException("sampling.kind '$kind' is not supported (one_step or ddim)")
        }
    }

    private fun validate() {
        when (val s = sampling) {
            is Sampling.OneStep -> {
                val g = graph(s.graph)
                g.input(Contract.NOISE_INPUT)
                expectOutput(g, Contract.IMAGE_OUTPUT)
            }
            is Sampling.Ddim -> {
                val n = s.timesteps.size
                if (n == 0) throw ManifestException("sampling.timesteps is empty")
                for ((key, size) in listOf("graph_per_step" to s.graphPerStep.size, "alphas_cumprod" to s.alphasCumprod.size,
                        "alphas_cumprod_prev" to s.alphasCumprodPrev.size)) {
                    if (size != n) throw ManifestException("sampling.$key has $size entries, timesteps has $n")
                }
                for (name in s.graphPerStep.toSet()) {
                    val g = graph(name)
                    g.input(Contract.SAMPLE_INPUT)
                    val t = g.input(Contract.TIMESTEP_INPUT)
                    if (t.dtype !in Contract.TIMESTEP_DTYPES) throw ManifestException("graph '$name': timestep dtype ${t.dtype} is not supported")
                    expectOutput(g, Contract.EPSILON_OUTPUT)
                }
            }
        }
        for (g in models) {
            for (t in g.inputs.filter { it.name != Contract.TIMESTEP_INPUT } + g.output) {
                if (t.dtype !in Contract.IMAGE_DTYPES) throw ManifestException("graph '${g.name}': ${t.name} dtype ${t.dtype} is not supported (float32)")
                if (t.layout != Contract.LAYOUT || t.shape.size != 4) throw ManifestException("graph '${g.name}': ${t.name} must be ${Contract.LAYOUT} rank 4, is $t")
            }
        }
        val shape = imageShape
        val perImage = shape.drop(1).toIntArray()
        if (!perImage.contentEquals(noise.shape)) {
            throw ManifestException("noise.shape ${noise.shape.contentToString()} differs from the model input ${shape.contentToString()}")
        }
        if (noise.portable != Contract.NOISE_GENERATOR) {
            throw ManifestException("noise.portable is '${noise.portable}'; this app reproduces '${Contract.NOISE_GENERATOR}' only")
        }
        image.crop?.let { c ->
            if (c.size != 4 || c[0] < 0 || c[1] < 0 || c[0] + c[2] > shape[2] || c[1] + c[3] > shape[3]) {
                throw ManifestException("image.crop ${c.contentToString()} does not fit the ${shape[2]}x${shape[3]} canvas")
            }
        }
    }

    private fun expectOutput(g: GraphSpec, name: String) {
        if (g.output.name != name) throw ManifestException("graph '${g.name}' outputs '${g.output.name}', expected '$name'")
    }
}

private fun JSONArray.objects(): List<JSONObject> = (0 until length()).map { getJSONObject(it) }
private fun JSONArray.ints(): IntArray = IntArray(length()) { getInt(it) }
private fun JSONArray.doubles(): DoubleArray = DoubleArray(length()) { getDouble(it) }
private fun JSONArray.strings(): List<String> = (0 until length()).map { getString(it) }
