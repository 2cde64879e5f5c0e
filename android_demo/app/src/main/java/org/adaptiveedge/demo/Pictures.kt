package org.adaptiveedge.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import android.net.Uri
import org.adaptiveedge.core.Images

/**
 * Pictures become the core's uint8 RGB images. A photo is centre-cropped to a
 * square first, because the manifest's preprocessing resizes to a square and
 * would otherwise stretch it; everything after that (resize, normalization,
 * layout) is the core's, exactly as the Python runtime does it.
 */
object Pictures {
    const val SAMPLES = "samples"  // asset folder of sample images

    fun toImages(bitmap: Bitmap): Images {
        val side = minOf(bitmap.width, bitmap.height)
        val square = Bitmap.createBitmap(bitmap, (bitmap.width - side) / 2, (bitmap.height - side) / 2, side, side)
        val argb = IntArray(side * side)
        square.getPixels(argb, 0, side, 0, 0, side, side)
        val rgb = ByteArray(argb.size * 3)
        argb.forEachIndexed { i, pixel ->
            rgb[3 * i] = (pixel shr 16 and 0xff).toByte()
            rgb[3 * i + 1] = (pixel shr 8 and 0xff).toByte()
            rgb[3 * i + 2] = (pixel and 0xff).toByte()
        }
        return Images(1, side, side, 3, rgb)
    }

    fun samples(context: Context): List<Pair<String, Bitmap>> =
        context.assets.list(SAMPLES).orEmpty().sorted().map { name ->
            name to context.assets.open("$SAMPLES/$name").use { BitmapFactory.decodeStream(it) }
        }

    /** A gallery picture, decoded at no more than about [maxSide] pixels a side: the model needs far fewer. */
    fun decode(context: Context, uri: Uri, maxSide: Int = 1024): Bitmap? {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        context.contentResolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, bounds) }
        var sample = 1
        while (maxOf(bounds.outWidth, bounds.outHeight) / (sample * 2) >= maxSide) sample *= 2
        val options = BitmapFactory.Options().apply { inSampleSize = sample }
        return context.contentResolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, options) }
    }

    fun rotated(bitmap: Bitmap, degrees: Int): Bitmap =
        if (degrees == 0) bitmap else Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, Matrix().apply { postRotate(degrees.toFloat()) }, true)
}
