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
        val error = assertThrows(BundleException::class.java) { Manifest.parse(text(), source) }
        assertEquals(case["message"], error.message)
    }

    private fun text(): String {
        (case["text"] as String?)?.let { return it }
        var manifest: Any? = Json.parse(Golden.text("${case["family"]}.manifest.json"))
        for (edit in case["edits"] as List<Map<String, Any?>>) manifest = apply(manifest, edit)
        return Json.write(manifest)
    }

    /** make_golden.py's `_apply`: set or delete the value at a path of keys and indices; [] replaces the whole. */
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
        if (path.isEmpty()) return edit["value"]
        var target: Any? = manifest
        for (key in path.dropLast(1)) target = step(target, key)
        val last = path.last()
        when (target) {
            is MutableMap<*, *> -> (target as MutableMap<String, Any?>).let { if (edit["delete"] == true) it.remove(last as String) else it[last as String] = edit["value"] }
            is MutableList<*> -> (target as MutableList<Any?>).let { if (edit["delete"] == true) it.removeAt((last as Long).toInt()) else it[(last as Long).toInt()] = edit["value"] }
            else -> error("cannot edit inside $target")
        }
        return manifest
    }

    private fun step(value: Any?, key: Any?): Any? = when (value) {
        is Map<*, *> -> value[key]
        is List<*> -> value[(key as Long).toInt()]
        else -> error("cannot step into $value")
    }
}
