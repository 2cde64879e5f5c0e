@file:Suppress("UNCHECKED_CAST")

package org.adaptiveedge.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Test
import kotlin.math.abs

class PreprocessTest {
    private val golden = Golden.json("preprocessing.json")

    private fun preprocessing(p: Map<String, Any?>) = Preprocessing(
        (p["resolution"] as Long).toInt(),
        (p["mean"] as List<*>).map { (it as Number).toDouble() },
        (p["std"] as List<*>).map { (it as Number).toDouble() },
        p["resize"] as String,
        (p["crop"] as Number?)?.toDouble(),
    )

    private val pre = preprocessing(golden["preprocessing"] as Map<String, Any?>)

    @Test
    fun cropResizeAndNormalizeMatchPythonWithin1e5() {
        val cases = golden["cases"] as List<Map<String, Any?>>
        for (resize in RESIZES.keys) {
            assert(cases.any { val p = it["preprocessing"] as Map<*, *>; p["resize"] == resize && p.containsKey("crop") }) { "no $resize case crops" }
        }
        for (case in cases) {
            val images = Golden.images(case["images"] as Map<String, Any?>)
            val expected = Golden.tensor(case["preprocessed"] as Map<String, Any?>)
            val settings = preprocessing(case["preprocessing"] as Map<String, Any?>)
            val actual = Preprocess.prepare(images, settings)
            assertArrayEquals(expected.shape, actual.shape)
            val worst = expected.data.indices.maxOf { abs(expected.data[it] - actual.data[it]) }
            assert(worst <= 1e-5f) { "${images.shape} ${settings.resize}: largest difference $worst" }
        }
    }

    /** A 1080p frame to ImageNet's 224 px input: torchvision's Resize(256) + CenterCrop(224) on PIL images, row for row. */
    @Test
    fun aLargeFrameMatchesTheTrainingEvaluationTransform() {
        for (frame in golden["frames"] as List<Map<String, Any?>>) {
            val shape = (frame["pattern"] as List<*>).map { (it as Long).toInt() }
            val (height, width) = shape[1] to shape[2]
            // make_golden.py's pattern_frame: (7x + 13y + 85c + (xy >> 6)) mod 256
            val pixels = ByteArray(height * width * 3)
            for (y in 0 until height) for (x in 0 until width) for (c in 0 until 3) {
                pixels[(y * width + x) * 3 + c] = ((7 * x + 13 * y + 85 * c + ((x * y) shr 6)) and 0xff).toByte()
            }
            val settings = preprocessing(frame["preprocessing"] as Map<String, Any?>)
            val out = Preprocess.prepare(Images(1, height, width, 3, pixels), settings)
            val expected = frame["preprocessed"] as Map<String, Any?>
            assertArrayEquals(Golden.shape(expected), out.shape)
            val side = out.shape.last()
            val mine = Golden.fingerprints(Tensor(intArrayOf(out.data.size / side, side), out.data))
            val prints = (expected["row_fingerprints"] as List<*>).map { (it as Number).toDouble() }
            assertEquals(prints.size, mine.size)
            prints.forEachIndexed { row, p -> assert(abs(mine[row] - p) <= 1e-6) { "row $row: fingerprint ${mine[row]} vs Python's $p" } }
        }
    }

    @Test
    fun theGeometryIsTorchvisionsResizeThenCenterCrop() {
        val imagenet = Preprocessing(224, listOf(0.485, 0.456, 0.406), listOf(0.229, 0.224, 0.225), "pil-bilinear", 224.0 / 256)
        val (resized, corner) = Preprocess.pilGeometry(1080, 1920, imagenet)
        assertArrayEquals(intArrayOf(256, 455), resized)
        assertArrayEquals(intArrayOf(16, 116), corner)  // 115.5 rounds to even
        val (tall, tallCorner) = Preprocess.pilGeometry(640, 427, imagenet)
        assertArrayEquals(intArrayOf(383, 256), tall)
        assertArrayEquals(intArrayOf(80, 16), tallCorner)
    }

    @Test
    fun badImagesAreRefusedNamingTheProblem() {
        val error = assertThrows(IllegalArgumentException::class.java) { Preprocess.prepare(Images(1, 4, 4, 1, ByteArray(16)), pre) }
        assertEquals("uint8 images must be NHWC with 3 channels, got shape (1, 4, 4, 1)", error.message)
        assertEquals(
            "preprocessing.resize 'nearest' is not one of ['bilinear', 'pil-bilinear']",
            assertThrows(IllegalArgumentException::class.java) { Preprocess.prepare(Images(1, 8, 8, 3, ByteArray(192)), pre.copy(resize = "nearest")) }.message,
        )
        assertEquals(
            "images is an empty batch",
            assertThrows(IllegalArgumentException::class.java) { Preprocess.prepare(Images(0, 4, 4, 3, ByteArray(0)), pre) }.message,
        )
        val nan = Tensor(intArrayOf(1, 3, pre.resolution, pre.resolution), FloatArray(3 * pre.resolution * pre.resolution) { Float.NaN })
        assertEquals("images contain NaN or infinite values", assertThrows(IllegalArgumentException::class.java) { Preprocess.prepare(nan, pre) }.message)
    }
}
