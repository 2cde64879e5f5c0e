@file:Suppress("UNCHECKED_CAST")

package org.adaptiveedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized

/** Every damaged manifest the Python reader refuses is refused here with the same message, word for word. */
@RunWith(Parameterized::class)
class DamagedManifestTest(private val name: String, private val case: Map<String, Any?>) {
    companion object {
        private val damaged = Golden.json("damaged.json")

        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any?>> = (damaged["manifests"] as List<Map<String, Any?>>).map { arrayOf(it["name"], it) }
    }

    @Test
    fun refusedWithPythonsMessage() {
        val source = (damaged["placeholders"] as Map<*, *>)["manifest"] as String
        val error = assertThrows(BundleException::class.java) { Manifest.parse(Golden.manifestText(case), source) }
        assertEquals(case["message"], error.message)
    }
}
