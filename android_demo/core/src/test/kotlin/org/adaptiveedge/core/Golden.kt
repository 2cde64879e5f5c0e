@file:Suppress("UNCHECKED_CAST")

package org.adaptiveedge.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.Base64

/**
 * The golden vectors `android_demo/golden/make_golden.py` recorded from the
 * Python runtime. Tensors are stored whole (base64 float32) when their rows
 * are small, else as one fingerprint per row: a fixed weighted sum, computed
 * here as there.
 */
object Golden {
    val dir: File = File(System.getProperty("golden.dir") ?: "../golden")

    fun json(name: String): Map<String, Any?> = Json.parse(File(dir, name).readText()) as Map<String, Any?>

    fun text(name: String): String = File(dir, name).readText()

    fun bytes(encoded: Map<String, Any?>): ByteArray = Base64.getDecoder().decode(encoded["base64"] as String)

    fun shape(encoded: Map<String, Any?>): IntArray = (encoded["shape"] as List<*>).map { (it as Long).toInt() }.toIntArray()

    fun images(encoded: Map<String, Any?>): Images {
        val s = shape(encoded)
        return Images(s[0], s[1], s[2], s[3], bytes(encoded))
    }

    fun isWhole(encoded: Map<String, Any?>) = "base64" in encoded

    fun tensor(encoded: Map<String, Any?>): Tensor {
        val buffer = ByteBuffer.wrap(bytes(encoded)).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return Tensor(shape(encoded), FloatArray(buffer.remaining()).also { buffer.get(it) })
    }

    fun fingerprints(encoded: Map<String, Any?>): DoubleArray = (encoded["fingerprints"] as List<*>).map { (it as Number).toDouble() }.toDoubleArray()

    /** One fingerprint per row, as make_golden.py's `encode` computes it. */
    fun fingerprints(tensor: Tensor): DoubleArray {
        val size = tensor.rowSize
        return DoubleArray(tensor.batch) { row ->
            var sum = 0.0
            for (i in 0 until size) sum += tensor.data[row * size + i].toDouble() * (((i.toLong() * 37 + 11) % 101) / 101.0 - 0.5)
            sum
        }
    }
}
