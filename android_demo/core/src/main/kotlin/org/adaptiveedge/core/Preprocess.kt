package org.adaptiveedge.core

import kotlin.math.floor

/** A batch of uint8 RGB images, NHWC, as a camera frame or a decoded bitmap provides them. */
class Images(val count: Int, val height: Int, val width: Int, val channels: Int, val pixels: ByteArray) {
    init {
        require(pixels.size.toLong() == count.toLong() * height * width * channels) {
            "uint8 images of shape (${count}, ${height}, ${width}, ${channels}) hold ${count.toLong() * height * width * channels} bytes, not ${pixels.size}"
        }
    }

    val shape: String get() = "($count, $height, $width, $channels)"
}

/**
 * Turns images into the float32 NCHW batch the graphs expect, with the same
 * float32 arithmetic as `runtime.preprocess.prepare` (so a phone's tensors
 * equal the host's): the manifest's central crop if any, scale to [0, 1],
 * bilinear resize with half-pixel centres and no antialias, then
 * (x - mean) / std per channel.
 */
object Preprocess {
    fun prepare(uncropped: Images, pre: Preprocessing): Tensor {
        val channels = pre.mean.size
        val images = pre.crop?.let { centerCrop(uncropped, it) } ?: uncropped
        if (images.count == 0) throw IllegalArgumentException("images is an empty batch")
        if (images.channels != channels) {
            throw IllegalArgumentException("uint8 images must be NHWC with $channels channels, got shape ${images.shape}")
        }
        if (minOf(images.height, images.width) < 1) throw IllegalArgumentException("uint8 images have an empty side: ${images.shape}")
        val side = pre.resolution
        val scaled = FloatArray(images.pixels.size) { (images.pixels[it].toInt() and 0xff).toFloat() / 255f }
        val resized = if (images.height == side && images.width == side) {
            scaled
        } else {
            resizeBilinear(scaled, images.count, images.height, images.width, channels, side)
        }
        val mean = FloatArray(channels) { pre.mean[it].toFloat() }
        val std = FloatArray(channels) { pre.std[it].toFloat() }
        val plane = side * side
        val out = FloatArray(images.count * channels * plane)
        for (n in 0 until images.count) {
            for (p in 0 until plane) {
                for (c in 0 until channels) {
                    out[(n * channels + c) * plane + p] = (resized[(n * plane + p) * channels + c] - mean[c]) / std[c]
                }
            }
        }
        return Tensor(intArrayOf(images.count, channels, side, side), out)
    }

    /** The central square of side round(fraction x the short side): `runtime.preprocess.center_crop`. */
    fun centerCrop(images: Images, fraction: Double): Images {
        val side = maxOf(1, floor(fraction * minOf(images.height, images.width) + 0.5).toInt())
        val top = (images.height - side) / 2
        val left = (images.width - side) / 2
        val row = side * images.channels
        val pixels = ByteArray(images.count * side * row)
        for (n in 0 until images.count) for (y in 0 until side) {
            val from = ((n * images.height + top + y) * images.width + left) * images.channels
            System.arraycopy(images.pixels, from, pixels, (n * side + y) * row, row)
        }
        return Images(images.count, side, side, images.channels, pixels)
    }

    /** Images of different sizes, each prepared alone, as one batch. */
    fun prepareAll(images: List<Images>, pre: Preprocessing): Tensor = Tensor.concat(images.map { prepare(it, pre) })

    /** Check an already normalized float32 NCHW batch, as the Python runtime accepts one. */
    fun prepare(batch: Tensor, pre: Preprocessing): Tensor {
        val expected = listOf(pre.mean.size, pre.resolution, pre.resolution)
        if (batch.shape.size != 4 || batch.shape.drop(1) != expected) {
            throw IllegalArgumentException(
                "float32 images must be normalized NCHW of shape (N, ${expected.joinToString(", ")}), got ${Python.repr(Python.Tuple(batch.shape.toList()))}; " +
                    "pass uint8 NHWC to have the runtime resize and normalize",
            )
        }
        if (batch.batch == 0) throw IllegalArgumentException("images is an empty batch")
        if (batch.data.any { !it.isFinite() }) throw IllegalArgumentException("images contain NaN or infinite values")
        return batch
    }

    /** Resize float NHWC images to size x size: `runtime.preprocess.resize_bilinear`, operation for operation. */
    fun resizeBilinear(images: FloatArray, count: Int, height: Int, width: Int, channels: Int, size: Int): FloatArray {
        val (top, bottom, dy) = axis(height, size)
        val (left, right, dx) = axis(width, size)
        val rows = FloatArray(count * size * width * channels)  // resized along the height first, as numpy does
        for (n in 0 until count) for (y in 0 until size) for (x in 0 until width) for (c in 0 until channels) {
            val a = images[((n * height + top[y]) * width + x) * channels + c]
            val b = images[((n * height + bottom[y]) * width + x) * channels + c]
            rows[((n * size + y) * width + x) * channels + c] = a * (1f - dy[y]) + b * dy[y]
        }
        val out = FloatArray(count * size * size * channels)
        for (n in 0 until count) for (y in 0 until size) for (x in 0 until size) for (c in 0 until channels) {
            val a = rows[((n * size + y) * width + left[x]) * channels + c]
            val b = rows[((n * size + y) * width + right[x]) * channels + c]
            out[((n * size + y) * size + x) * channels + c] = a * (1f - dx[x]) + b * dx[x]
        }
        return out
    }

    private fun axis(inSize: Int, size: Int): Triple<IntArray, IntArray, FloatArray> {
        val ratio = inSize.toDouble() / size
        val low = IntArray(size)
        val high = IntArray(size)
        val weight = FloatArray(size)
        for (i in 0 until size) {
            val source = maxOf((i + 0.5) * ratio - 0.5, 0.0)
            low[i] = kotlin.math.floor(source).toInt()
            high[i] = minOf(low[i] + 1, inSize - 1)
            weight[i] = (source - low[i]).toFloat()
        }
        return Triple(low, high, weight)
    }
}
