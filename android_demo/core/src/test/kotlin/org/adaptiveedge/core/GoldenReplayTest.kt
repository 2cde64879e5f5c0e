@file:Suppress("UNCHECKED_CAST")

package org.adaptiveedge.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized
import kotlin.math.abs

/** Every recorded case of every family, replayed through the Kotlin core: the same calls, decisions, MACs and errors. */
@RunWith(Parameterized::class)
class GoldenReplayTest(private val family: String, private val name: String, private val case: Map<String, Any?>) {
    companion object {
        val FAMILIES = listOf("drnet", "blockdrop", "urnet", "resizable", "resizable-table")

        @JvmStatic
        @Parameterized.Parameters(name = "{0}: {1}")
        fun cases(): List<Array<Any?>> = FAMILIES.flatMap { family ->
            (Golden.json("$family.json")["cases"] as List<Map<String, Any?>>).map { arrayOf(family, it["name"], it) }
        }
    }

    private val golden = Golden.json("$family.json")
    private val manifest = Manifest.parse(Golden.text(golden["manifest"] as String), golden["manifest"] as String)

    private val images = Golden.images((Golden.json("images.json")[case["images"]] as Map<String, Any?>))

    @Test
    fun preprocessingMatches() {
        val expected = case["preprocessed"] as Map<String, Any?>
        val batch = Preprocess.prepare(images, manifest.preprocessing)
        assertArrayEquals(Golden.shape(expected), batch.shape)
        val mine = Golden.fingerprints(batch)
        Golden.fingerprints(expected).forEachIndexed { i, p ->
            assertTrue("image $i: fingerprint ${mine[i]} vs Python's $p", abs(mine[i] - p) <= 1e-5 * (1 + abs(p)))
        }
    }

    @Test
    fun decisionsMatch() {
        val runner = ReplayRunner(case["calls"] as List<Map<String, Any?>>)
        val session = Session(manifest, runner, device = golden["device"] as String)
        val request = case["request"] as Map<String, Any?>
        val outcome = runCatching {
            session.run(
                images,
                scale = when (val s = request["scale"]) {
                    null -> null
                    is List<*> -> DoubleArray(s.size) { (s[it] as Number).toDouble() }
                    else -> doubleArrayOf((s as Number).toDouble())
                },
                path = request["path"] as String?,
                static = request["static"] == true,
                budgetMacs = (request["budget_macs"] as Number?)?.toDouble(),
                budgetMs = (request["budget_ms"] as Number?)?.toDouble(),
            )
        }
        runner.assertAllCalled()
        val error = case["error"] as String?
        if (error != null) {
            val thrown = outcome.exceptionOrNull() ?: fail("Python refused the request ($error); the core ran it") as Nothing
            assertTrue("an IllegalArgumentException, got $thrown", thrown is IllegalArgumentException)
            assertEquals(error, thrown.message)
            return
        }
        val result = outcome.getOrThrow()
        val expected = case["result"] as Map<String, Any?>
        assertEquals(expected["paths"], result.paths)
        assertEquals(expected["macs"], result.macs.toList())
        val logits = Golden.tensor(expected["logits"] as Map<String, Any?>)
        assertArrayEquals(logits.shape, result.logits.shape)
        assertArrayEquals(logits.data, result.logits.data, 0f)
    }
}
