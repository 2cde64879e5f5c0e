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

    /** A case of damaged.json as manifest text: its own text, or its family's golden manifest after its edits. */
    fun manifestText(case: Map<String, Any?>): String {
        (case["text"] as String?)?.let { return it }
        var manifest: Any? = Json.parse(text("${case["family"]}.manifest.json"))
        for (edit in case["edits"] as List<Map<String, Any?>>) manifest = apply(manifest, edit)
        return Json.write(manifest)
    }

    /** make_golden.py's `apply_edit`: set or delete the value at a path of keys and indices; [] replaces the whole. */
    private fun apply(manifest: Any?, edit: Map<String, Any?>): Any? {
        if (edit["batch1"] == true) {
            for (graph in ((manifest as Map<String, Any?>)["graphs"] as Map<String, Map<String, Any?>>).values) {
                for (side in listOf("inputs", "outputs")) {
                    for (tensor in graph[side] as List<MutableMap<String, Any?>>) tensor["shape"] = listOf(1L) + (tensor["shape"] as List<Any?>)
                }
            }
            return manifest
        }
        val path = edit["path"] as List<Any?>
        if (path.isEmpty()) return copy(edit["value"])
        var target: Any? = manifest
        for (key in path.dropLast(1)) target = step(target, key)
        val last = path.last()
        when (target) {
            is MutableMap<*, *> -> (target as MutableMap<String, Any?>).let { if (edit["delete"] == true) it.remove(last as String) else it[last as String] = copy(edit["value"]) }
            is MutableList<*> -> (target as MutableList<Any?>).let { if (edit["delete"] == true) it.removeAt((last as Long).toInt()) else it[(last as Long).toInt()] = copy(edit["value"]) }
            else -> error("cannot edit inside $target")
        }
        return manifest
    }

    /** A deep copy, as make_golden.py's `copy.deepcopy`: later edits must not reach into the case's own values. */
    private fun copy(value: Any?): Any? = when (value) {
        is Map<*, *> -> LinkedHashMap<String, Any?>().also { out -> value.forEach { (k, v) -> out[k as String] = copy(v) } }
        is List<*> -> value.mapTo(ArrayList()) { copy(it) }
        else -> value
    }

    private fun step(value: Any?, key: Any?): Any? = when (value) {
        is Map<*, *> -> value[key]
        is List<*> -> value[(key as Long).toInt()]
        else -> error("cannot step into $value")
    }

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
