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
        assert(cases.any { (it["preprocessing"] as Map<*, *>).containsKey("crop") }) { "no case crops" }
        for (case in cases) {
            val images = Golden.images(case["images"] as Map<String, Any?>)
            val expected = Golden.tensor(case["preprocessed"] as Map<String, Any?>)
            val actual = Preprocess.prepare(images, preprocessing(case["preprocessing"] as Map<String, Any?>))
            assertArrayEquals(expected.shape, actual.shape)
            val worst = expected.data.indices.maxOf { abs(expected.data[it] - actual.data[it]) }
            assert(worst <= 1e-5f) { "${images.shape}: largest difference $worst" }
        }
    }

    @Test
    fun badImagesAreRefusedNamingTheProblem() {
        val error = assertThrows(IllegalArgumentException::class.java) { Preprocess.prepare(Images(1, 4, 4, 1, ByteArray(16)), pre) }
        assertEquals("uint8 images must be NHWC with 3 channels, got shape (1, 4, 4, 1)", error.message)
        assertEquals(
            "images is an empty batch",
            assertThrows(IllegalArgumentException::class.java) { Preprocess.prepare(Images(0, 4, 4, 3, ByteArray(0)), pre) }.message,
        )
        val nan = Tensor(intArrayOf(1, 3, pre.resolution, pre.resolution), FloatArray(3 * pre.resolution * pre.resolution) { Float.NaN })
        assertEquals("images contain NaN or infinite values", assertThrows(IllegalArgumentException::class.java) { Preprocess.prepare(nan, pre) }.message)
    }
}
