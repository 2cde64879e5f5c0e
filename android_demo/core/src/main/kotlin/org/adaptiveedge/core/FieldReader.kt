package org.adaptiveedge.core

/** A bundle that cannot be trusted; the message names the offending file, as the Python reader's does. */
class BundleException(message: String) : IllegalArgumentException(message)

/**
 * Typed field access that names the file and the field in every error: the
 * counterpart of `runtime.format.manifest.FieldReader`, word for word, so that a
 * damaged manifest is refused with the same message on a phone and a host.
 */
class FieldReader(val source: String) {
    val graphs = LinkedHashMap<String, Graph>()

    fun fail(where: String, problem: String) = BundleException("$source: $where: $problem")

    fun fields(data: Any?, where: String, required: Set<String>, optional: Set<String> = emptySet()): Map<String, Any?> {
        if (data !is Map<*, *>) throw fail(where, "expected an object, got ${Python.typeName(data)}")
        @Suppress("UNCHECKED_CAST")
        data as Map<String, Any?>
        val missing = required - data.keys
        if (missing.isNotEmpty()) throw fail(where, "missing field(s) ${Python.repr(missing.sorted())}")
        val unknown = data.keys - required - optional
        if (unknown.isNotEmpty()) throw fail(where, "unknown field(s) ${Python.repr(unknown.sorted())}")
        return data
    }

    fun map(value: Any?, where: String): Map<String, Any?> {
        if (value !is Map<*, *>) throw fail(where, "expected dict, got ${Python.repr(value)}")
        @Suppress("UNCHECKED_CAST")
        return value as Map<String, Any?>
    }

    fun list(value: Any?, where: String): List<Any?> =
        value as? List<Any?> ?: throw fail(where, "expected list, got ${Python.repr(value)}")

    fun text(value: Any?, where: String): String {
        if (value !is String) throw fail(where, "expected str, got ${Python.repr(value)}")
        if (value.isEmpty()) throw fail(where, "must not be empty")
        return value
    }

    fun integer(value: Any?, where: String): Long =
        value as? Long ?: throw fail(where, "expected int, got ${Python.repr(value)}")

    fun count(value: Any?, where: String, minimum: Int = 0): Int {
        val n = integer(value, where)
        if (n < minimum) throw fail(where, "must be at least $minimum, got $n")
        if (n > Int.MAX_VALUE) throw fail(where, "$n is too large for this reader")
        return n.toInt()
    }

    /** A count that may exceed an Int, such as MACs. */
    fun longCount(value: Any?, where: String): Long {
        val n = integer(value, where)
        if (n < 0) throw fail(where, "must be at least 0, got $n")
        return n
    }

    fun number(value: Any?, where: String): Double = when (value) {
        is Long -> value.toDouble()
        is Double -> value
        else -> throw fail(where, "expected int or float, got ${Python.repr(value)}")
    }

    @Suppress("UNCHECKED_CAST")
    fun <T> choice(value: Any?, options: Collection<T>, where: String): T {
        if (value !in options) throw fail(where, "${Python.repr(value)} is not one of ${Python.repr(options.toList())}")
        return value as T
    }

    fun floats(value: Any?, where: String, length: Int): List<Double> {
        val items = list(value, where)
        if (items.size != length) throw fail(where, "expected $length numbers, got ${items.size}")
        return items.mapIndexed { i, v -> number(v, "$where[$i]") }
    }

    /** A reference to one of the manifest's graphs. */
    fun graph(value: Any?, where: String): String = choice(value, graphs.keys, where)

    /** Check that [graph]'s first output is one logit per class. */
    fun logits(graph: String, classes: Int) {
        val shape = graphs.getValue(graph).outputs[0].shape
        if (shape != listOf(classes)) {
            throw fail("graphs[${Python.repr(graph)}].outputs[0]", "shape ${Python.repr(shape)} is not [$classes], one logit per class")
        }
    }

    fun tensor(data: Any?, where: String): TensorSpec {
        val d = fields(data, where, setOf("name", "shape", "dtype"))
        val shape = list(d["shape"], "$where.shape")
        return TensorSpec(
            name = text(d["name"], "$where.name"),
            shape = shape.mapIndexed { i, dim -> count(dim, "$where.shape[$i]", 1) },
            dtype = choice(d["dtype"], DTYPES, "$where.dtype"),
        )
    }

    fun tensors(data: Any?, where: String): List<TensorSpec> {
        val items = list(data, where)
        if (items.isEmpty()) throw fail(where, "must list at least one tensor")
        val specs = items.mapIndexed { i, item -> tensor(item, "$where[$i]") }
        val names = specs.map { it.name }
        if (names.toSet().size != names.size) throw fail(where, "tensor names repeat: ${Python.repr(names)}")
        return specs
    }

    companion object {
        val DTYPES = listOf("float32")
    }
}
