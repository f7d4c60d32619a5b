package dev.edgekd.demo.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class PixelsTest {
    @Test
    fun clipsAndRoundsHalfToEvenLikeTorch() {
        assertEquals(0, Pixels.toPixel(-3f))
        assertEquals(255, Pixels.toPixel(7f))
        assertEquals(0, Pixels.toPixel(-1f))
        assertEquals(255, Pixels.toPixel(1f))
        assertEquals(128, Pixels.toPixel(0f)) // 127.5 -> 128 (even)
        assertEquals(0, Pixels.toPixel(-1.0000001f))
        // float32 ties, (x + 1) * 127.5 = k + 0.5 exactly; torch.round gave 156, 222, 250, 196, 148 (half to even)
        val ties = floatArrayOf(0.219607874751091f, 0.737254798412323f, 0.9647058248519897f, 0.5333333015441895f, 0.16470590233802795f)
        assertArrayEquals(intArrayOf(156, 222, 250, 196, 148), IntArray(5) { Pixels.toPixel(ties[it]) })
    }

    @Test
    fun nanIsZeroAndInfinitiesClip() {
        // a diverged model must show a picture, not crash; the same values as the web app and iOS
        assertEquals(0, Pixels.toPixel(Float.NaN))
        assertEquals(255, Pixels.toPixel(Float.POSITIVE_INFINITY))
        assertEquals(0, Pixels.toPixel(Float.NEGATIVE_INFINITY))
    }

    @Test
    fun cropsNchwAndPacksArgb() {
        // [1, 1, 3, 4] canvas, values chosen so each pixel is distinct
        val x = FloatArray(12) { it / 6f - 1f }
        val all = Pixels.image(x, intArrayOf(1, 1, 3, 4), null)
        assertEquals(4, all.width)
        assertEquals(3, all.height)
        val crop = Pixels.image(x, intArrayOf(1, 1, 3, 4), intArrayOf(1, 1, 2, 2))
        assertArrayEquals(intArrayOf(all.values[5], all.values[6], all.values[9], all.values[10]), crop.values)
        val argb = crop.argb()
        val v = crop.values[0]
        assertEquals((0xFF shl 24) or (v shl 16) or (v shl 8) or v, argb[0])
    }

    @Test
    fun rgbChannelsComeFromTheirPlanes() {
        // [1, 3, 1, 2]: R plane all -1 (0), G plane all 1 (255), B plane all 0 (128)
        val x = floatArrayOf(-1f, -1f, 1f, 1f, 0f, 0f)
        val p = Pixels.image(x, intArrayOf(1, 3, 1, 2), null)
        assertArrayEquals(intArrayOf(0, 255, 128, 0, 255, 128), p.values)
        assertEquals((0xFF shl 24) or (0 shl 16) or (255 shl 8) or 128, p.argb()[1])
    }
}
