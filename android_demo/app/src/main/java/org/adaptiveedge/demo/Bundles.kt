package org.adaptiveedge.demo

import android.content.Context
import org.adaptiveedge.core.Bundle
import org.adaptiveedge.core.BundleException
import org.adaptiveedge.core.MANIFEST_FILE
import org.adaptiveedge.core.Manifest
import java.io.File

/** A bundle on this phone: its directory and its validated manifest. */
class OpenedBundle(val directory: File, val manifest: Manifest, val origin: String)

/**
 * Where the app finds a bundle: one pushed with adb into the app's external
 * files (`.../files/bundle`), else the sample bundle in the APK's assets,
 * copied to internal storage first because ExecuTorch reads programs from
 * files. Either way the whole bundle is validated (format version, every
 * field, every artifact's sha256) before anything runs.
 */
object Bundles {
    const val PUSHED = "bundle"  // under getExternalFilesDir(null)
    private const val ASSET = "bundle"

    fun pushedDirectory(context: Context) = File(context.getExternalFilesDir(null), PUSHED)

    /** The bundle to run; a [BundleException] names the file at fault. */
    fun open(context: Context): OpenedBundle {
        val pushed = pushedDirectory(context)
        if (File(pushed, MANIFEST_FILE).isFile) return OpenedBundle(pushed, Bundle.open(pushed), "pushed with adb")
        val sample = copyAssets(context)
            ?: throw BundleException("no bundle: push one to ${pushed.path} (android_demo/README.md), or build the app with a sample bundle in assets/$ASSET")
        return OpenedBundle(sample, Bundle.open(sample), "the sample in the APK")
    }

    /** The asset bundle in internal storage, copied again when the APK's manifest differs from the copy's. */
    private fun copyAssets(context: Context): File? {
        val files = context.assets.list(ASSET)?.toList().orEmpty()
        if (MANIFEST_FILE !in files) return null
        val target = File(context.filesDir, "sample-bundle")
        val manifest = context.assets.open("$ASSET/$MANIFEST_FILE").use { it.readBytes() }
        if (File(target, MANIFEST_FILE).takeIf { it.isFile }?.readBytes()?.contentEquals(manifest) == true) return target
        val staging = File(context.filesDir, "sample-bundle.partial").apply { deleteRecursively(); mkdirs() }
        for (file in files) context.assets.open("$ASSET/$file").use { input -> File(staging, file).outputStream().use { input.copyTo(it) } }
        target.deleteRecursively()
        check(staging.renameTo(target)) { "cannot move ${staging.path} to ${target.path}" }
        return target
    }
}
