package org.adaptiveedge.core

import java.util.Random

/** A device's name and budgets, as its `devices.yaml` entry gives them. */
data class DeviceBudgets(val name: String, val macsBudget: Long, val latencyBudgetMs: Double)

/**
 * The benchmark mode's measurements, written in the report format of
 * `python -m runtime.profile --out`, so that a phone's report and a host's
 * read alike. Graphs are timed by calling the runner directly; the operating
 * points (paths, or URNet's S sweep) and the static full model through
 * [Session.run], each call on a new input, all interleaved, so that every
 * speedup compares calls timed side by side.
 * `images` is a normalized batch of real images (each prepared by
 * [Preprocess.prepare]) for the dynamic mix.
 */
object Benchmark {
    const val POOL = 16  // distinct inputs cycled through, so that no call replays the one before

    fun profile(
        session: Session, device: DeviceBudgets, bundle: String, runs: Int = 100, warmup: Int = 10, images: Tensor? = null,
        command: String? = null,
    ): Map<String, Any?> {
        val manifest = session.manifest
        val dispatch = manifest.dispatch
        val graphs = manifest.graphs
        val random = Random(0)
        val imageShape = graphs.getValue(dispatch.reference).inputs[0].shape
        val nextImage = cycle(List(POOL) { gaussian(random, listOf(1) + imageShape) })
        val calls = LinkedHashMap<List<String>, () -> Unit>()
        for ((name, graph) in graphs) {
            val inputs = cycle(List(POOL) { graph.inputs.map { spec -> randomInput(random, spec) } })
            calls[listOf("graph", name)] = { session.runner.run(graph, inputs()) }
        }
        // Each point as its OperatingPoint.options ask for it: a path, or a compute scale.
        val runPoint = dispatch.operatingPoints(graphs).associate { point ->
            point.name to { image: Tensor ->
                if (point.kind == "scale") session.run(image, scale = doubleArrayOf(point.value!!)) else session.run(image, path = point.name)
            }
        }
        // A point's MACs: the mean over the inputs it is timed on, as runtime/profile/table.py counts them (URNet's vary).
        val pointMacs = runPoint.mapValues { (_, run) -> List(POOL) { run(nextImage()).macs[0] }.average() }
        for ((name, run) in runPoint) calls[listOf("point", name)] = { run(nextImage()) }
        calls[listOf("static")] = { session.run(nextImage(), static = true) }
        val times = measure(calls, runs, warmup)

        val static = times.getValue(listOf("static"))
        val referenceMacs = manifest.referenceMacs
        val report = linkedMapOf<String, Any?>(
            "bundle" to bundle,
            "family" to manifest.family,
            "target" to manifest.target,
            "device" to device.name,
            "backend" to session.runner.describe(),
            "latency_key" to "${device.name}/${session.runner.backend}",
            "runs" to runs,
            "macs_convention" to manifest.macsConvention,
            "reference" to linkedMapOf("path" to dispatch.reference, "macs" to referenceMacs) + timing(static),
            "graphs" to graphs.mapValues { (name, graph) ->
                val t = times.getValue(listOf("graph", name))
                // Below 0.01 MMACs (identity shortcuts, gates) the ratio only measures call overhead.
                linkedMapOf<String, Any?>("macs" to graph.macs) + timing(t) +
                    ("us_per_mmac" to if (graph.macs >= 10_000) t.medianMs * 1e3 / (graph.macs / 1e6) else null)
            },
            "paths" to pointMacs.mapValues { (name, macs) ->
                val t = times.getValue(listOf("point", name))
                linkedMapOf<String, Any?>("macs" to macs) + timing(t) +
                    mapOf("speedup" to static.medianMs / t.medianMs, "macs_reduction" to referenceMacs.toDouble() / macs)
            },
        )
        if (images != null) report["dynamic"] = mix(session, images, maxOf(3, runs / 20))

        val slowest = runPoint.keys.maxBy { times.getValue(listOf("point", it)).medianMs }
        val (worstMacs, worst) = dispatch.worstCase(graphs)
        val checks = linkedMapOf(
            "macs" to linkedMapOf<String, Any?>("value" to worstMacs, "budget" to device.macsBudget, "path" to worst),
            "latency_ms" to linkedMapOf<String, Any?>(
                "value" to times.getValue(listOf("point", slowest)).medianMs, "budget" to device.latencyBudgetMs, "path" to slowest,
            ),
        )
        for (check in checks.values) check["pass"] = (check["value"] as Number).toDouble() <= (check["budget"] as Number).toDouble()
        report["budgets"] = checks
        report["pass"] = checks.values.all { it["pass"] == true }
        if (command != null) report["command"] = command
        return report
    }

    /** The dynamic model over real images against the static full model over the same images: one by one, and as a batch. */
    private fun mix(session: Session, batch: Tensor, runs: Int): Map<String, Any?> {
        val singles = List(batch.batch) { batch.slice(it, it + 1) }
        val result = session.run(batch)
        val times = measure(
            linkedMapOf<String, () -> Unit>(
                "dynamic" to { singles.forEach { session.run(it) } },
                "static" to { singles.forEach { session.run(it, static = true) } },
                "dynamic_batched" to { session.run(batch) },
                "static_batched" to { session.run(batch, static = true) },
            ),
            runs, warmup = 1,
        )
        val perImage = times.mapValues { it.value.medianMs / batch.batch }
        val meanMacs = result.macs.average()
        val histogram = result.paths.groupingBy { it }.eachCount().entries.sortedByDescending { it.value }
        return linkedMapOf(
            "images" to batch.batch,
            "rounds" to runs,
            "dynamic_ms_per_image" to perImage.getValue("dynamic"),
            "static_ms_per_image" to perImage.getValue("static"),
            "speedup" to perImage.getValue("static") / perImage.getValue("dynamic"),
            "batched_dynamic_ms_per_image" to perImage.getValue("dynamic_batched"),
            "batched_static_ms_per_image" to perImage.getValue("static_batched"),
            "batched_speedup" to perImage.getValue("static_batched") / perImage.getValue("dynamic_batched"),
            "mean_macs" to meanMacs,
            "macs_reduction" to session.manifest.referenceMacs / meanMacs,
            "histogram" to histogram.associate { it.key to it.value },
        )
    }

    /** A few lines for the screen: per path its cost and speedup, the dynamic mix, the budgets. */
    fun summary(report: Map<String, Any?>): String {
        val lines = mutableListOf("${report["family"]} on ${report["device"]}: ${report["backend"]}, median of ${report["runs"]} rounds")
        val reference = report["reference"] as Map<*, *>
        lines += "static %s: %.3f ms".format(reference["path"], reference["median_ms"])
        for ((name, p) in report["paths"] as Map<*, *>) {
            p as Map<*, *>
            lines += "%-14s %8.3f MMACs %8.3f ms  %5.2fx (MACs %5.2fx)".format(
                name, (p["macs"] as Double) / 1e6, p["median_ms"], p["speedup"], p["macs_reduction"],
            )
        }
        (report["dynamic"] as Map<*, *>?)?.let { d ->
            lines += "dynamic over %d images: %.3f vs %.3f ms/image, speedup %.2fx for %.2fx fewer MACs".format(
                d["images"], d["dynamic_ms_per_image"], d["static_ms_per_image"], d["speedup"], d["macs_reduction"],
            )
        }
        for ((name, check) in report["budgets"] as Map<*, *>) {
            check as Map<*, *>
            lines += "budget $name: ${check["value"]} <= ${check["budget"]} (${check["path"]}): ${if (check["pass"] == true) "pass" else "FAIL"}"
        }
        return lines.joinToString("\n")
    }

    private fun timing(t: Timing) = mapOf("median_ms" to t.medianMs, "p90_ms" to t.p90Ms)

    private fun <T> cycle(items: List<T>): () -> T {
        var next = 0
        return { items[next].also { next = (next + 1) % items.size } }
    }

    private fun gaussian(random: Random, shape: List<Int>): Tensor {
        val size = shape.fold(1) { n, d -> n * d }
        return Tensor(shape.toIntArray(), FloatArray(size) { random.nextGaussian().toFloat() })
    }

    /** A batch-1 input for [spec]; a compute scale is drawn in [0, 1]. */
    private fun randomInput(random: Random, spec: TensorSpec): Tensor {
        if (spec.name != "scale") return gaussian(random, listOf(1) + spec.shape)
        val size = spec.shape.fold(1) { n, d -> n * d }
        return Tensor((listOf(1) + spec.shape).toIntArray(), FloatArray(size) { random.nextFloat() })
    }
}
