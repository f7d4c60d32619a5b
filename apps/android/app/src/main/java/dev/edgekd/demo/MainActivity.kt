package dev.edgekd.demo

import android.app.Activity
import android.graphics.Bitmap
import android.os.Build
import android.os.Bundle
import android.os.Debug
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.TextView
import dev.edgekd.demo.core.BenchmarkLoop
import dev.edgekd.demo.core.BenchmarkReport
import dev.edgekd.demo.core.Contract
import dev.edgekd.demo.core.DeviceInfo
import dev.edgekd.demo.core.Manifest
import dev.edgekd.demo.core.ManifestException
import dev.edgekd.demo.core.Pixels
import dev.edgekd.demo.core.PortableNoise
import dev.edgekd.demo.core.RuntimeInfo
import dev.edgekd.demo.core.Sampler
import dev.edgekd.demo.core.Sampling
import dev.edgekd.demo.core.SerialWorker
import org.tensorflow.lite.TensorFlowLite
import java.io.File
import java.time.Instant
import java.util.concurrent.CancellationException

/**
 * One screen: a seed, Generate (fresh portable noise -> the manifest's one step or DDIM loop -> bitmap + latency)
 * and Benchmark (the shared protocol, JSON written to the app's external files folder). Work runs on one
 * background thread ([SerialWorker]), which is also where the interpreters are closed; the views are touched only
 * on the UI thread.
 */
class MainActivity : Activity() {
    private lateinit var seedInput: EditText
    private lateinit var runsInput: EditText
    private lateinit var generateButton: Button
    private lateinit var benchmarkButton: Button
    private lateinit var imageView: ImageView
    private lateinit var statusText: TextView

    private val worker = SerialWorker()
    private var manifest: Manifest? = null
    private var manifestFile = Contract.MANIFEST_FILE
    private var graphs: LiteRtGraphs? = null
    private val threads = minOf(4, Runtime.getRuntime().availableProcessors())

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        seedInput = findViewById(R.id.seed_input)
        runsInput = findViewById(R.id.runs_input)
        generateButton = findViewById(R.id.generate_button)
        benchmarkButton = findViewById(R.id.benchmark_button)
        imageView = findViewById(R.id.image_view)
        statusText = findViewById(R.id.status_text)
        generateButton.setOnClickListener { generate() }
        benchmarkButton.setOnClickListener { benchmark() }
        setBusy(true)
        worker.submit {
            val message = try {
                manifestFile = findManifest()
                val m = Manifest.parse(assets.open("${Contract.ASSET_DIR}/$manifestFile").bufferedReader().use { it.readText() })
                if (m.target != Contract.TARGET) {
                    throw ManifestException("this app runs ${Contract.TARGET} models (LiteRT), the manifest is ${m.target}: " +
                        "export with --target ${Contract.TARGET}")
                }
                manifest = m
                graphs = LiteRtGraphs(assets, m, threads)
                "${m.name}: ${describe(m)}, ${m.target} ${m.precision}. Press Generate."
            } catch (e: Exception) {
                getString(R.string.no_model, e.message ?: e.toString())
            }
            runOnUiThread {
                statusText.text = message
                setBusy(false)
            }
        }
    }

    override fun onDestroy() {
        // not graphs?.close() here: an inference may be running on the worker, and LiteRT frees the interpreter's
        // native memory under it. The close is queued behind it on the same thread; queued work is dropped.
        worker.close {
            graphs?.close()
            graphs = null
        }
        super.onDestroy()
    }

    /** The one manifest `edgekd export --into-app android` put in assets/edgekd (its name carries the precision). */
    private fun findManifest(): String {
        val found = (assets.list(Contract.ASSET_DIR) ?: emptyArray()).filter { it.endsWith(Contract.MANIFEST_SUFFIX) }
        if (found.size != 1) {
            throw ManifestException("expected one *${Contract.MANIFEST_SUFFIX} in assets/${Contract.ASSET_DIR}, found ${found.size}")
        }
        return found[0]
    }

    private fun describe(m: Manifest): String = when (val s = m.sampling) {
        is Sampling.OneStep -> "one step"
        is Sampling.Ddim -> "DDIM ${s.steps} steps over ${s.graphPerStep.toSet().size} graph(s)"
    }

    private fun setBusy(busy: Boolean) {
        generateButton.isEnabled = !busy
        benchmarkButton.isEnabled = !busy
    }

    private fun seed(): Long = seedInput.text.toString().trim().toLongOrNull() ?: 0L

    private fun noise(m: Manifest, seed: Long): FloatArray {
        val shape = m.imageShape
        return PortableNoise.batch(seed, shape[0], shape[1] * shape[2] * shape[3])
    }

    private fun generate() {
        val m = manifest ?: return
        val noise = noise(m, seed())
        setBusy(true)
        worker.submit {
            val message = try {
                val runner = graphs ?: LiteRtGraphs(assets, m, threads).also { graphs = it }
                val t0 = System.nanoTime()
                val x = Sampler.sample(m.sampling, noise, runner)
                val ms = (System.nanoTime() - t0) / 1e6
                val pixmap = Pixels.image(x, m.imageShape, m.image.crop)
                val bitmap = Bitmap.createBitmap(pixmap.argb(), pixmap.width, pixmap.height, Bitmap.Config.ARGB_8888)
                val scaled = Bitmap.createScaledBitmap(bitmap, pixmap.width * 8, pixmap.height * 8, false)
                runOnUiThread { imageView.setImageBitmap(scaled) }
                getString(R.string.latency, ms, describe(m))
            } catch (e: Exception) {
                "error: ${e.message ?: e}"
            }
            runOnUiThread {
                statusText.text = message
                setBusy(false)
            }
        }
    }

    /** Peak proportional set size of this process (Debug.MemoryInfo.getTotalPss, KiB) in MiB. */
    private fun pssMb(): Double {
        val info = Debug.MemoryInfo()
        Debug.getMemoryInfo(info)
        return info.totalPss / 1024.0
    }

    private fun benchmark() {
        val m = manifest ?: return
        val runs = runsInput.text.toString().trim().toIntOrNull()?.coerceIn(1, 1000) ?: 20
        val seed = seed()
        setBusy(true)
        statusText.text = getString(R.string.benchmarking, runs)
        worker.submit {
            val message = try {
                // run i uses the noise of seed s + i, made here so that it is not timed
                val noises = List(maxOf(WARMUP, runs)) { noise(m, seed + it) }
                graphs?.close()
                graphs = null
                val result = BenchmarkLoop.run(
                    warmup = WARMUP, runs = runs,
                    load = { graphs = LiteRtGraphs(assets, m, threads) },
                    // stop between runs when the activity goes away (a run itself cannot be interrupted)
                    generate = { i -> worker.ensureOpen(); Sampler.sample(m.sampling, noises[i], graphs!!) },
                    memoryMb = ::pssMb,
                )
                val report = BenchmarkReport.build(
                    DeviceInfo("${Build.MANUFACTURER} ${Build.MODEL}", "android", "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})"),
                    // LiteRT's Interpreter runs float models through its default XNNPACK CPU delegate
                    RuntimeInfo("litert", TensorFlowLite.runtimeVersion(), "xnnpack", threads),
                    m, manifestFile, m.models.map { it.sha256 ?: "" },
                    WARMUP, result.firstRunMs, result.samplesMs, result.peakMemoryMb, Instant.now().toString(),
                )
                val file = writeAtomically(report.toString(2))
                getString(R.string.benchmark_done, report.getJSONObject("latency_ms").getDouble("median"),
                    report.getJSONObject("latency_ms").getDouble("p90"), result.firstRunMs, result.peakMemoryMb ?: 0.0,
                    file.absolutePath)
            } catch (e: CancellationException) {
                return@submit // onDestroy: nothing left to show it on
            } catch (e: Exception) {
                "error: ${e.message ?: e}"
            }
            runOnUiThread {
                statusText.text = message
                setBusy(false)
            }
        }
    }

    /** The JSON beside the app's other files (`adb pull` reaches it without any permission). */
    private fun writeAtomically(text: String): File {
        val dir = getExternalFilesDir(null) ?: filesDir
        val file = File(dir, "edgekd-benchmark-${System.currentTimeMillis()}.json")
        val partial = File(dir, file.name + ".partial")
        partial.writeText(text)
        if (!partial.renameTo(file)) throw IllegalStateException("could not write ${file.absolutePath}")
        return file
    }

    private companion object {
        const val WARMUP = 3
    }
}
