@file:Suppress("UNCHECKED_CAST")

package org.adaptiveedge.core

import org.junit.Assert.assertEquals
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.util.Base64

/** Altered, missing or unlisted files: refused before anything runs, with the Python reader's message. */
class DamagedBundleTest {
    @get:Rule
    val folder = TemporaryFolder()

    @Test
    fun filesAreCheckedAsPythonChecksThem() {
        val damaged = Golden.json("damaged.json")
        val placeholder = (damaged["placeholders"] as Map<*, *>)["bundle"] as String
        for (case in damaged["bundles"] as List<Map<String, Any?>>) {
            val bundle = folder.newFolder()
            for ((file, content) in case["files"] as Map<String, String>) File(bundle, file).writeBytes(Base64.getDecoder().decode(content))
            val message = try {
                Bundle.open(bundle)
                null
            } catch (error: BundleException) {
                error.message!!.replace(bundle.path, placeholder)
            }
            assertEquals("${case["name"]}", case["message"], message)
        }
    }

    @Test
    fun aDirectoryThatIsNotABundleIsNamed() {
        val file = folder.newFile("not-a-bundle")
        val error = runCatching { Bundle.open(file) }.exceptionOrNull()
        assertEquals("${file.path}: not a bundle directory", error?.message)
    }
}
