package dev.edgekd.demo.core

/**
 * The names and conventions this app relies on, in one place, so the contract test (tests/apps/test_contract.py)
 * can compare them with what `edgekd export` writes (manifest v3, the .tflite signature). Shapes and dtypes are
 * never hard-coded: they are read from the manifest and checked against the interpreter's tensors at load time.
 */
object Contract {
    const val MANIFEST_VERSION = 3
    const val ASSET_DIR = "edgekd"
    const val MANIFEST_FILE = "student.manifest.json"
    /** `edgekd export --into-app android` leaves exactly one manifest in ASSET_DIR (student_int8.manifest.json...) */
    const val MANIFEST_SUFFIX = ".manifest.json"
    /** the runtime this app embeds: LiteRT runs .tflite models only */
    const val TARGET = "tflite"
    const val SIGNATURE_KEY = "serving_default"

    /** one-step graph: noise -> image */
    const val NOISE_INPUT = "noise"
    const val IMAGE_OUTPUT = "image"

    /** DDIM step graph: (sample, timestep) -> epsilon */
    const val SAMPLE_INPUT = "sample"
    const val TIMESTEP_INPUT = "timestep"
    const val EPSILON_OUTPUT = "epsilon"

    const val LAYOUT = "NCHW"
    const val NOISE_GENERATOR = "mulberry32-boxmuller-v1"
    const val PREDICTION = "epsilon"

    /** dtypes the app can feed (the timestep may be int32, int64 or float32; images are float32) */
    val IMAGE_DTYPES = setOf("float32")
    val TIMESTEP_DTYPES = setOf("int32", "int64", "float32")
}
