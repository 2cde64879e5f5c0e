package org.adaptiveedge.core

/**
 * A float32 tensor with the batch first, in row-major order: what graphs take
 * and return. The dispatch rules select and merge rows of it.
 */
class Tensor(val shape: IntArray, val data: FloatArray) {
    init {
        require(shape.isNotEmpty()) { "a tensor has a batch dimension first" }
        require(shape.fold(1L) { n, d -> n * d } == data.size.toLong()) {
            "shape ${shape.toList()} holds ${shape.fold(1L) { n, d -> n * d }} values, not ${data.size}"
        }
    }

    val batch: Int get() = shape[0]
    val rowSize: Int get() = if (batch == 0) 0 else data.size / batch

    /** Samples [indices], in that order. */
    fun rows(indices: IntArray): Tensor {
        val size = rowSize
        val out = FloatArray(indices.size * size)
        indices.forEachIndexed { i, row -> System.arraycopy(data, row * size, out, i * size, size) }
        return Tensor(shape.copyOf().also { it[0] = indices.size }, out)
    }

    /** Samples start until end. */
    fun slice(start: Int, end: Int): Tensor {
        val size = rowSize
        return Tensor(shape.copyOf().also { it[0] = end - start }, data.copyOfRange(start * size, end * size))
    }

    fun row(index: Int): FloatArray = data.copyOfRange(index * rowSize, (index + 1) * rowSize)

    override fun toString() = "Tensor(${shape.toList()})"

    companion object {
        fun concat(parts: List<Tensor>): Tensor {
            if (parts.size == 1) return parts[0]
            val out = FloatArray(parts.sumOf { it.data.size })
            var at = 0
            for (part in parts) {
                System.arraycopy(part.data, 0, out, at, part.data.size)
                at += part.data.size
            }
            return Tensor(parts[0].shape.copyOf().also { it[0] = parts.sumOf { p -> p.batch } }, out)
        }

        /** An empty batch of [rows] samples shaped like [like]'s, to be filled by [scatterRows]. */
        fun empty(rows: Int, like: Tensor) = Tensor(like.shape.copyOf().also { it[0] = rows }, FloatArray(rows * like.rowSize))
    }

    /** Write [source]'s samples into this tensor's rows [indices]. */
    fun scatterRows(indices: IntArray, source: Tensor) {
        val size = rowSize
        indices.forEachIndexed { i, row -> System.arraycopy(source.data, i * size, data, row * size, size) }
    }
}
