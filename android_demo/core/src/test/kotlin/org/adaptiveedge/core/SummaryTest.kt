package org.adaptiveedge.core

import org.junit.Assert.assertEquals
import org.junit.Test

class SummaryTest {
    private fun manifest(family: String) = Manifest.parse(Golden.text("$family.manifest.json"), "m")

    private fun result(manifest: Manifest, path: String, logits: FloatArray) = RunResult(
        Tensor(intArrayOf(1, logits.size), logits), listOf(path), longArrayOf(manifest.referenceMacs / 4),
        mapOf("preprocess" to 0.5, (manifest.dispatch.selector ?: "none") to 0.25, "some-graph" to 2.0),
    )

    @Test
    fun topFiveAreTheLargestLogitsAsProbabilities() {
        val m = manifest("drnet")
        val logits = FloatArray(10) { it.toFloat() }
        val summary = Summary.of(m, result(m, "res16", logits))
        assertEquals(m.classes.reversed().take(5), summary.top.map { it.name })
        assertEquals(1.0 / (1 until 11).sumOf { kotlin.math.exp(it - 10.0) }, summary.top[0].probability, 1e-9)
        assertEquals("16 px", summary.view.detail)
        assertEquals(0.25, summary.macsShare, 1e-3)
        assertEquals(0.25, summary.selectorMs, 0.0)
        assertEquals(2.75, summary.totalMs, 1e-12)
    }

    @Test
    fun blockPathsShowWhichBlocksRan() {
        for (family in listOf("blockdrop", "urnet")) {
            val m = manifest(family)
            assertEquals(listOf(true, false, false, false, true, false), Summary.of(m, result(m, "100010", FloatArray(10))).view.blocks)
        }
        val urnet = manifest("urnet")
        assertEquals(0.0, Summary.of(urnet, result(urnet, "111111", FloatArray(10))).selectorMs, 0.0)  // gates sit in the blocks
    }

    @Test
    fun configurationsShowTheirStageScales() {
        val m = manifest("resizable")
        assertEquals("stage scales 0.5 / 0.5 / 0.5", Summary.of(m, result(m, "rs050-050-050", FloatArray(10))).view.detail)
        assertEquals("the static full model", Summary.of(m, result(m, "rs100-100-100", FloatArray(10)), static = true).view.detail)
    }
}
