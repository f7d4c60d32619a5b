package dev.edgekd.demo

import android.content.res.AssetManager
import dev.edgekd.demo.core.Contract
import dev.edgekd.demo.core.GraphRunner
import dev.edgekd.demo.core.GraphSpec
import dev.edgekd.demo.core.Manifest
import dev.edgekd.demo.core.ManifestException
import dev.edgekd.demo.core.TensorSpec
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/**
 * Every graph of the manifest in a LiteRT Interpreter, called through the model's signature by the names the
 * manifest gives. At load each signature tensor is compared with the manifest (shape and dtype), so a model and a
 * manifest that disagree fail here with a message, not with garbage pixels.
 */
class LiteRtGraphs(assets: AssetManager, private val manifest: Manifest, val threads: Int) : GraphRunner, AutoCloseable {
    private val interpreters = LinkedHashMap<String, Interpreter>()

    init {
        try {
            for (g in manifest.models) {
                val interpreter = Interpreter(mapAsset(assets, "${Contract.ASSET_DIR}/${g.file}"), Interpreter.Options().setNumThreads(threads))
                interpreters[g.name] = interpreter
                checkSignature(g, interpreter)
            }
        } catch (e: Exception) {
            close()
            throw e
        }
    }

    private fun mapAsset(assets: AssetManager, path: String): MappedByteBuffer {
        // the .tflite is stored uncompressed (noCompress in app/build.gradle.kts), so it can be memory-mapped
        val fd = assets.openFd(path)
        try {
            FileInputStream(fd.fileDescriptor).use { stream ->
                return stream.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        } finally {
            fd.close()
        }
    }

    private fun checkSignature(g: GraphSpec, interpreter: Interpreter) {
        if (Contract.SIGNATURE_KEY !in interpreter.signatureKeys) {
            throw ManifestException("${g.file} has no '${Contract.SIGNATURE_KEY}' signature (has ${interpreter.signatureKeys.joinToString()})")
        }
        for (spec in g.inputs) {
            val t = interpreter.getInputTensorFromSignature(spec.name, Contract.SIGNATURE_KEY)
            expect(g, spec, t.shape(), t.dataType())
        }
        val out = interpreter.getOutputTensorFromSignature(g.output.name, Contract.SIGNATURE_KEY)
        expect(g, g.output, out.shape(), out.dataType())
    }

    private fun expect(g: GraphSpec, spec: TensorSpec, shape: IntArray, dtype: DataType) {
        if (!shape.contentEquals(spec.shape) || dtypeName(dtype) != spec.dtype) {
            throw ManifestException("${g.file}: tensor '${spec.name}' is ${shape.contentToString()} ${dtypeName(dtype)}, " +
                "the manifest says ${spec.shape.contentToString()} ${spec.dtype}")
        }
    }

    private fun dtypeName(dtype: DataType): String = when (dtype) {
        DataType.FLOAT32 -> "float32"
        DataType.INT32 -> "int32"
        DataType.INT64 -> "int64"
        else -> dtype.name.lowercase()
    }

    override fun run(graph: String, input: FloatArray, timestep: Int?): FloatArray {
        val spec = manifest.graph(graph)
        val interpreter = interpreters.getValue(graph)
        val inputs = HashMap<String, Any>()
        if (timestep == null) {
            inputs[Contract.NOISE_INPUT] = floats(input)
        } else {
            inputs[Contract.SAMPLE_INPUT] = floats(input)
            inputs[Contract.TIMESTEP_INPUT] = timesteps(spec.input(Contract.TIMESTEP_INPUT), timestep)
        }
        val out = ByteBuffer.allocateDirect(spec.output.size * 4).order(ByteOrder.nativeOrder())
        val outputs = HashMap<String, Any>()
        outputs[spec.output.name] = out
        interpreter.runSignature(inputs, outputs, Contract.SIGNATURE_KEY)
        out.rewind()
        val result = FloatArray(spec.output.size)
        out.asFloatBuffer().get(result)
        return result
    }

    private fun floats(values: FloatArray): ByteBuffer {
        val buffer = ByteBuffer.allocateDirect(values.size * 4).order(ByteOrder.nativeOrder())
        buffer.asFloatBuffer().put(values)
        return buffer
    }

    /** The timestep tensor filled with [t] for every image of the batch, in the dtype the manifest names. */
    private fun timesteps(spec: TensorSpec, t: Int): ByteBuffer {
        val width = if (spec.dtype == "int64") 8 else 4
        val buffer = ByteBuffer.allocateDirect(spec.size * width).order(ByteOrder.nativeOrder())
        repeat(spec.size) {
            when (spec.dtype) {
                "int64" -> buffer.putLong(t.toLong())
                "int32" -> buffer.putInt(t)
                else -> buffer.putFloat(t.toFloat())
            }
        }
        buffer.rewind()
        return buffer
    }

    override fun close() {
        for (interpreter in interpreters.values) interpreter.close()
        interpreters.clear()
    }
}
