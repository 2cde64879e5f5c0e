@file:Suppress("UNCHECKED_CAST")

package org.adaptiveedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File
import java.util.Random

/**
 * The benchmark report has every field of `python -m runtime.profile --out`,
 * with the same JSON types (golden/report_schema.json, from a real host run),
 * so that one reader puts phone and host side by side.
 */
class BenchmarkReportTest {
    /** Outputs of the shapes the manifest declares; what they hold does not matter to a timing. */
    private class ShapedRunner : GraphRunner {
        private val random = Random(1)
        override val backend = "executorch"
        override fun describe() = "shaped random outputs (test)"
        override fun run(graph: Graph, inputs: List<Tensor>): List<Tensor> = graph.outputs.map { spec ->
            val shape = intArrayOf(inputs[0].batch) + spec.shape.toIntArray()
            Tensor(shape, FloatArray(shape.fold(1) { n, d -> n * d }) { random.nextFloat() })
        }
    }

    private val device = DeviceBudgets("pixel-8", 300_000_000, 8.0)

    private fun report(family: String): Map<String, Any?> {
        val manifest = Manifest.parse(Golden.text("$family.manifest.json"), "$family.manifest.json")
        val images = Preprocess.prepare(Golden.images(Golden.json("images.json")["native"] as Map<String, Any?>), manifest.preprocessing)
        val session = Session(manifest, ShapedRunner(), device = device.name)
        return Benchmark.profile(session, device, "golden/$family", runs = 3, warmup = 1, images = images, command = "adb shell am start ...")
    }

    @Test
    fun everyFieldOfTheHostReportWithItsTypes() {
        val report = report("drnet")
        val expected = Golden.json("report_schema.json").mapValues { (_, kinds) -> (kinds as List<*>).toSet() }
        val actual = schema(report)
        assertEquals(expected.keys, actual.keys)
        for ((path, kinds) in actual) assertTrue("$path: $kinds, the host report has ${expected[path]}", expected.getValue(path).containsAll(kinds))
        System.getProperty("report.out")?.let { File(it).writeText(Json.write(report) + "\n") }
    }

    @Test
    fun everyFamilyProfilesItsOperatingPointsAgainstTheStaticModel() {
        for (family in GoldenReplayTest.FAMILIES) {
            val report = report(family)
            val manifest = Manifest.parse(Golden.text("$family.manifest.json"), "m")
            val points = manifest.dispatch.operatingPoints(manifest.graphs).map { it.name }
            assertEquals(family, points, (report["paths"] as Map<*, *>).keys.toList())
            assertEquals(family, manifest.referenceMacs, (report["reference"] as Map<*, *>)["macs"])
            assertEquals(family, "pixel-8/executorch", report["latency_key"])
            val summary = Benchmark.summary(report)
            for (point in points) assertTrue(summary, point in summary)
        }
    }

    /** make_golden.py's `report_schema`: field paths, map fields keyed by "*", with their JSON types. */
    private fun schema(report: Map<String, Any?>): Map<String, Set<String>> {
        val fields = sortedMapOf<String, MutableSet<String>>()
        fun walk(value: Any?, path: String) {
            if (value is Map<*, *>) {
                for ((key, item) in value) {
                    val name = if (path.substringAfterLast('.') in listOf("graphs", "paths", "histogram")) "*" else key as String
                    walk(item, if (path.isEmpty()) name else "$path.$name")
                }
                return
            }
            val kind = when (value) {
                null -> "null"
                is Boolean -> "bool"
                is Number -> "number"
                is String -> "string"
                else -> error("$path: ${value::class}")
            }
            fields.getOrPut(path) { mutableSetOf() } += kind
        }
        walk(report, "")
        return fields
    }
}
