@file:Suppress("UNCHECKED_CAST")

package org.adaptiveedge.core

import org.junit.Assert.assertEquals
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized

/** Every edited manifest the Python reader accepts is accepted here, with the same version 6 fields read from it. */
@RunWith(Parameterized::class)
class AcceptedManifestTest(private val name: String, private val case: Map<String, Any?>) {
    companion object {
        private val damaged = Golden.json("damaged.json")

        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any?>> = (damaged["accepted"] as List<Map<String, Any?>>).map { arrayOf(it["name"], it) }

        /** Python's `dataclasses.asdict`, as make_golden.py records it: counts as Long, shares as Double. */
        fun asdict(accuracy: Accuracy?): Any? = accuracy?.let { a ->
            mapOf(
                "source" to a.source,
                "images" to a.images.toLong(),
                "points" to a.points.map { mapOf("name" to it.name, "kind" to it.kind, "value" to it.value, "top1" to it.top1) },
            )
        }

        fun asdict(quantization: Quantization?): Any? = quantization?.let { q ->
            mapOf(
                "precision" to q.precision,
                "calibration" to q.calibration?.let { c ->
                    mapOf(
                        "source" to c.source, "images" to c.images.toLong(), "sha256" to c.sha256,
                        "routed" to c.routed.mapValues { it.value.toLong() }, "forced" to c.forced.mapValues { it.value.toLong() },
                    )
                },
                "selector" to q.selector?.let { mapOf("precision" to it.precision, "agreement" to it.agreement, "threshold" to it.threshold) },
                "check" to q.check?.let { c ->
                    mapOf(
                        "images" to c.images.toLong(), "path_agreement" to c.pathAgreement, "top1_agreement" to c.top1Agreement,
                        "top1_fp32" to c.top1Fp32, "top1" to c.top1, "max_abs_diff" to c.maxAbsDiff, "tolerance" to c.tolerance,
                    )
                },
            )
        }
    }

    @Test
    fun acceptedWithPythonsValues() {
        val manifest = Manifest.parse(Golden.manifestText(case), "$name.json")
        val parsed = case["parsed"] as Map<String, Any?>
        assertEquals((parsed["format_version"] as Long).toInt(), manifest.formatVersion)
        assertEquals(parsed["precision"], manifest.graphs.mapValues { it.value.precision })
        assertEquals(parsed["accuracy"], asdict(manifest.accuracy))
        assertEquals(parsed["quantization"], asdict(manifest.quantization))
    }
}
