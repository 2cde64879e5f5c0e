@file:Suppress("UNCHECKED_CAST")

package org.adaptiveedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

/** Version 6's fields read back: per-point top-1, graph precision and the quantization record. */
class ManifestVersion6Test {
    private fun golden(family: String): MutableMap<String, Any?> = Json.parse(Golden.text("$family.manifest.json")) as MutableMap<String, Any?>

    private fun parse(manifest: Any?) = Manifest.parse(Json.write(manifest), "manifest.json")

    @Test
    fun goldenBundlesAreVersion6AndCarryEachPointsTop1() {
        for (family in GoldenReplayTest.FAMILIES) {
            val manifest = Manifest.parse(Golden.text("$family.manifest.json"), family)
            assertTrue(family, manifest.formatVersion >= 6)  // golden bundles written since version 6
            assertNotNull(family, manifest.accuracy)
            val points = manifest.accuracy!!.points
            assertEquals(family, points.size, points.map { it.name }.toSet().size)
            points.forEach { assertTrue(family, it.top1 in 0.0..1.0) }
            assertNull(family, manifest.quantization)
            manifest.graphs.values.forEach { assertEquals("fp32", it.precision) }
        }
        val drnet = Manifest.parse(Golden.text("drnet.manifest.json"), "drnet")
        val drnetPoints = drnet.accuracy!!.points
        assertEquals(drnetPoints.map { it.name }, drnetPoints.filter { it.kind == "path" && it.value == null }.map { it.name })
        val urnet = Manifest.parse(Golden.text("urnet.manifest.json"), "urnet")
        assertEquals(listOf("S=0.2", "S=0.4", "S=0.6", "S=0.8", "S=1"), urnet.accuracy!!.points.map { it.name })
        assertEquals(listOf(0.2, 0.4, 0.6, 0.8, 1.0), urnet.accuracy!!.points.map { it.value })
    }

    @Test
    fun quantizationAndPrecisionReadBack() {
        val data = golden("drnet")
        val graphs = data["graphs"] as Map<String, MutableMap<String, Any?>>
        graphs.getValue("predictor")["precision"] = "int8"
        graphs.getValue("res16")["precision"] = "fp16"
        data["accuracy"] = mapOf(
            "source" to "digits test, first 100 images, run by the bundle on executorch",
            "images" to 100L,
            "points" to listOf(
                mapOf("name" to "res32", "kind" to "path", "value" to null, "top1" to 0.93),
                mapOf("name" to "res16", "kind" to "path", "value" to null, "top1" to 1L),
            ),
        )
        data["quantization"] = mapOf(
            "precision" to "int8",
            "calibration" to mapOf(
                "source" to "digits train, first 64 images", "images" to 64L, "sha256" to "0123456789abcdef".repeat(4),
                "routed" to mapOf("predictor" to 64L, "res32" to 40L, "res16" to 24L), "forced" to mapOf("res24" to 8L),
            ),
            "selector" to mapOf("precision" to "fp32", "agreement" to 0.9, "threshold" to 0.95),
            "check" to mapOf(
                "images" to 50L, "path_agreement" to 1L, "top1_agreement" to 0.98, "top1_fp32" to null, "top1" to null,
                "max_abs_diff" to 0.25, "tolerance" to 0.05,
            ),
        )
        val manifest = parse(data)
        assertEquals(
            mapOf("predictor" to "int8", "res32" to "fp32", "res24" to "fp32", "res16" to "fp16"),
            manifest.graphs.mapValues { it.value.precision },
        )
        assertEquals(
            Accuracy(
                "digits test, first 100 images, run by the bundle on executorch", 100,
                listOf(PointAccuracy("res32", "path", null, 0.93), PointAccuracy("res16", "path", null, 1.0)),
            ),
            manifest.accuracy,
        )
        assertEquals(
            Quantization(
                "int8",
                Calibration(
                    "digits train, first 64 images", 64, "0123456789abcdef".repeat(4),
                    mapOf("predictor" to 64, "res32" to 40, "res16" to 24), mapOf("res24" to 8),
                ),
                SelectorPrecision("fp32", 0.9, 0.95),
                QuantizedCheck(50, 1.0, 0.98, null, null, 0.25, 0.05),
            ),
            manifest.quantization,
        )
    }

    @Test
    fun aVersion5ManifestReadsAsBeforeAndRefusesVersion6Fields() {
        val data = golden("drnet")
        data["format_version"] = 5L
        data.remove("accuracy")
        val manifest = parse(data)
        assertNull(manifest.accuracy)
        assertNull(manifest.quantization)
        manifest.graphs.values.forEach { assertEquals("fp32", it.precision) }
        data["quantization"] = mapOf("precision" to "fp16", "calibration" to null, "selector" to null, "check" to null)
        val error = assertThrows(BundleException::class.java) { parse(data) }
        assertEquals("manifest.json: manifest: unknown field(s) ['quantization']", error.message)
        data["format_version"] = 6L
        assertEquals("fp16", parse(data).quantization!!.precision)
    }

    @Test
    fun scalePointsTakeAShareAndPathPointsNone() {
        val data = golden("urnet")
        val points = (data["accuracy"] as Map<String, Any?>)["points"] as MutableList<MutableMap<String, Any?>>
        points[1]["value"] = -0.25
        assertEquals(
            "manifest.json: accuracy.points[1].value: must be in [0, 1], got -0.25",
            assertThrows(BundleException::class.java) { parse(data) }.message,
        )
        points[1]["value"] = 0.4
        points[1]["kind"] = "path"
        assertEquals(
            "manifest.json: accuracy.points[1].value: a path point has no value, got 0.4",
            assertThrows(BundleException::class.java) { parse(data) }.message,
        )
    }
}
