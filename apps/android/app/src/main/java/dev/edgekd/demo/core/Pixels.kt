package dev.edgekd.demo.core

/**
 * The manifest's image.to_pixels: pixel = round((clip(x, -1, 1) + 1) * 127.5) as uint8, in float32 with
 * round-half-to-even exactly as torch/numpy do, then the crop; so every runtime shows the same pixels.
 */
object Pixels {
    /** NaN (a diverged model) is 0, as in the web app (Uint8ClampedArray) and iOS; infinities clip to 0 / 255. */
    fun toPixel(x: Float): Int {
        if (x.isNaN()) return 0
        val c = x.coerceIn(-1f, 1f)
        return Math.rint(((c + 1f) * 127.5f).toDouble()).toInt()
    }

    /**
     * Grey (channels 1) or RGB (channels 3) pixels of image [index] in an NCHW batch [x] of shape [shape],
     * cropped to (top, left, height, width) when [crop] is given. Returns row-major values, C per pixel.
     */
    fun image(x: FloatArray, shape: IntArray, crop: IntArray?, index: Int = 0): Pixmap {
        val (c, h, w) = Triple(shape[1], shape[2], shape[3])
        val (top, left, ch, cw) = crop?.let { listOf(it[0], it[1], it[2], it[3]) } ?: listOf(0, 0, h, w)
        val base = index * c * h * w
        val out = IntArray(ch * cw * c)
        for (y in 0 until ch) for (xx in 0 until cw) for (k in 0 until c) {
            out[(y * cw + xx) * c + k] = toPixel(x[base + k * h * w + (top + y) * w + (left + xx)])
        }
        return Pixmap(cw, ch, c, out)
    }
}

/** Pixels as ints 0..255, row-major, [channels] per pixel; [argb] packs them for an Android Bitmap. */
class Pixmap(val width: Int, val height: Int, val channels: Int, val values: IntArray) {
    fun argb(): IntArray = IntArray(width * height) { i ->
        val r = values[i * channels]
        val g = if (channels >= 3) values[i * channels + 1] else r
        val b = if (channels >= 3) values[i * channels + 2] else r
        (0xFF shl 24) or (r shl 16) or (g shl 8) or b
    }
}
