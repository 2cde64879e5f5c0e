package org.adaptiveedge.core

import kotlin.math.abs
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
 * Turns images into the float32 NCHW batch the graphs expect, as
 * `runtime.preprocess.prepare` does, by the manifest's `preprocessing.resize`:
 *
 * - "pil-bilinear" (version 7): torchvision's evaluation transform on PIL
 *   images, Resize(round(resolution / crop)) then CenterCrop(resolution), or
 *   Resize((resolution, resolution)) without a crop, with Pillow's bilinear
 *   arithmetic ([pilResize]), computed only over the kept square;
 * - "bilinear": the central crop, then a float bilinear resize with
 *   half-pixel centres and no antialias ([resizeBilinear]).
 *
 * Then (x / 255 - mean) / std per channel in float32, torchvision's ToTensor
 * and Normalize, so a phone's tensors equal the host's.
 */
object Preprocess {
    fun prepare(images: Images, pre: Preprocessing): Tensor {
        val channels = pre.mean.size
        if (images.count == 0) throw IllegalArgumentException("images is an empty batch")
        if (images.channels != channels) {
            throw IllegalArgumentException("uint8 images must be NHWC with $channels channels, got shape ${images.shape}")
        }
        if (minOf(images.height, images.width) < 1) throw IllegalArgumentException("uint8 images have an empty side: ${images.shape}")
        val side = pre.resolution
        if (pre.crop == null && images.height == side && images.width == side) return normalize(images, pre)
        return when (pre.resize) {
            "pil-bilinear" -> normalize(pilResize(images, pre), pre)
            "bilinear" -> prepareBilinear(images, pre)
            else -> throw IllegalArgumentException("preprocessing.resize ${Python.repr(pre.resize)} is not one of ${Python.repr(RESIZES.keys.toList())}")
        }
    }

    /** uint8 NHWC at the resolution to float32 NCHW: (v / 255 - mean[c]) / std[c], a table of 256 values per channel. */
    private fun normalize(images: Images, pre: Preprocessing): Tensor {
        val channels = images.channels
        val table = Array(channels) { c ->
            val mean = pre.mean[c].toFloat()
            val std = pre.std[c].toFloat()
            FloatArray(256) { (it.toFloat() / 255f - mean) / std }
        }
        val plane = images.height * images.width
        val out = FloatArray(images.count * channels * plane)
        for (n in 0 until images.count) for (p in 0 until plane) for (c in 0 until channels) {
            out[(n * channels + c) * plane + p] = table[c][images.pixels[(n * plane + p) * channels + c].toInt() and 0xff]
        }
        return Tensor(intArrayOf(images.count, channels, images.height, images.width), out)
    }

    /** The definition before version 7: crop, scale to [0, 1], resize in float, normalize. */
    private fun prepareBilinear(uncropped: Images, pre: Preprocessing): Tensor {
        val images = pre.crop?.let { centerCrop(uncropped, it) } ?: uncropped
        val side = pre.resolution
        if (images.height == side && images.width == side) return normalize(images, pre)
        val channels = images.channels
        val scaled = FloatArray(images.pixels.size) { (images.pixels[it].toInt() and 0xff).toFloat() / 255f }
        val resized = resizeBilinear(scaled, images.count, images.height, images.width, channels, side)
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

    /**
     * Where "pil-bilinear" resizes an image to, (height, width), and the top-left of the square it keeps:
     * `runtime.preprocess.pil_geometry`. Halves round to even, as Python's round in torchvision.
     */
    fun pilGeometry(height: Int, width: Int, pre: Preprocessing): Pair<IntArray, IntArray> {
        val side = pre.resolution
        val crop = pre.crop ?: return Pair(intArrayOf(side, side), intArrayOf(0, 0))
        val short = Math.rint(side / crop).toInt()
        val resized = if (width <= height) {
            intArrayOf(((short.toLong() * height).toDouble() / width).toInt(), short)
        } else {
            intArrayOf(short, ((short.toLong() * width).toDouble() / height).toInt())
        }
        return Pair(resized, intArrayOf(Math.rint((resized[0] - side) / 2.0).toInt(), Math.rint((resized[1] - side) / 2.0).toInt()))
    }

    /**
     * The kept square of Pillow's `Image.resize(size, BILINEAR)` of each whole image, value for value, computed
     * only over that square: Pillow's Resample.c, a triangle filter widened by the scale when shrinking,
     * coefficients in 22-bit fixed point, the horizontal pass first and each pass rounded to uint8.
     */
    fun pilResize(images: Images, pre: Preprocessing): Images {
        val side = pre.resolution
        val (resized, corner) = pilGeometry(images.height, images.width, pre)
        val rows = PillowAxis(images.height, resized[0], corner[0], side)
        val columns = PillowAxis(images.width, resized[1], corner[1], side)
        val channels = images.channels
        val out = ByteArray(images.count * side * side * channels)
        for (n in 0 until images.count) {
            val image = images.pixels.copyOfRange(n * images.height * images.width * channels, (n + 1) * images.height * images.width * channels)
            // Pillow skips an axis whose size does not change; the horizontal pass covers the rows the vertical one reads.
            val first = if (rows.identity) corner[0] else rows.first
            val last = if (rows.identity) corner[0] + side else rows.last
            val across = if (columns.identity) {
                crop(image, images.width, channels, first, last, corner[1], side)
            } else {
                columns.resample(image, last - first, channels, first * images.width * channels, images.width * channels, channels, byColumn = false)
            }
            val down = if (rows.identity) {
                across
            } else {
                rows.resample(across, side, channels, -first * side * channels, channels, side * channels, byColumn = true)
            }
            System.arraycopy(down, 0, out, n * side * side * channels, down.size)
        }
        return Images(images.count, side, side, channels, out)
    }

    private fun crop(image: ByteArray, width: Int, channels: Int, top: Int, bottom: Int, left: Int, side: Int): ByteArray {
        val out = ByteArray((bottom - top) * side * channels)
        for (y in top until bottom) System.arraycopy(image, (y * width + left) * channels, out, (y - top) * side * channels, side * channels)
        return out
    }

    /**
     * One axis of Pillow's resample (`precompute_coeffs` and `normalize_coeffs_8bpc`) for outputs
     * [start, start + count) of a resize from [inSize] to [outSize]: each output's first source index,
     * and its fixed-point weights.
     */
    private class PillowAxis(inSize: Int, outSize: Int, start: Int, count: Int) {
        val identity = inSize == outSize
        val bounds = IntArray(count)
        val weights: Array<IntArray>

        init {
            val scale = inSize.toDouble() / outSize  // (in1 - in0) / outSize with the box (0, inSize), exact in float
            val filterScale = maxOf(scale, 1.0)
            val support = filterScale  // the bilinear filter's support, 1, widened
            weights = Array(count) { i ->
                val center = (start + i + 0.5) * scale
                val low = maxOf((center - support + 0.5).toInt(), 0)
                val high = minOf((center + support + 0.5).toInt(), inSize)
                val raw = DoubleArray(high - low) { x ->
                    val distance = abs((x + low - center + 0.5) * (1.0 / filterScale))
                    if (distance < 1.0) 1.0 - distance else 0.0
                }
                val total = raw.sum()
                bounds[i] = low
                IntArray(raw.size) { x ->
                    val k = if (total != 0.0) raw[x] / total else raw[x]
                    (if (k < 0) -0.5 + k * (1 shl PRECISION_BITS) else 0.5 + k * (1 shl PRECISION_BITS)).toInt()
                }
            }
        }

        val first: Int get() = bounds.first()
        val last: Int get() = bounds.last() + weights.last().size

        /**
         * Each of [lines] lines resampled to this axis' outputs, channel c of line l's source pixel x at
         * offset + l * lineStride + x * pixelStride + c. The result is laid out as an image: lines x outputs
         * x channels for rows, outputs x lines x channels when the lines are columns ([byColumn]).
         */
        fun resample(source: ByteArray, lines: Int, channels: Int, offset: Int, lineStride: Int, pixelStride: Int, byColumn: Boolean): ByteArray {
            val outputs = bounds.size
            val out = ByteArray(lines * outputs * channels)
            for (line in 0 until lines) for (o in 0 until outputs) {
                val k = weights[o]
                val base = offset + line * lineStride + bounds[o] * pixelStride
                val at = if (byColumn) (o * lines + line) * channels else (line * outputs + o) * channels
                for (c in 0 until channels) {
                    var sum = 1 shl (PRECISION_BITS - 1)
                    for (x in k.indices) sum += (source[base + x * pixelStride + c].toInt() and 0xff) * k[x]
                    out[at + c] = (sum shr PRECISION_BITS).coerceIn(0, 255).toByte()
                }
            }
            return out
        }
    }

    private const val PRECISION_BITS = 32 - 8 - 2  // Pillow's: 8 bits for the result, 2 for overflow

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
