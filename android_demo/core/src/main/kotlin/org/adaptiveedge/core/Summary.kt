package org.adaptiveedge.core

import org.adaptiveedge.core.rules.PathView
import kotlin.math.exp

/** One class and its softmax probability. */
data class Label(val name: String, val probability: Double)

/**
 * What the app shows for one image of a run: the top-5 labels, the path taken
 * (a resolution, a configuration, or which blocks ran), the MACs spent against
 * the full model's, and where the time went.
 */
data class Summary(
    val top: List<Label>,
    val path: String,
    val view: PathView,  // a resolution or configuration in words, or which blocks ran
    val macs: Long,
    val referenceMacs: Long,
    val preprocessMs: Double,
    val selectorMs: Double,  // the graph that chose the path; 0 where gates inside the blocks choose
    val pathMs: Double,  // every other graph call
) {
    val totalMs: Double get() = preprocessMs + selectorMs + pathMs
    val macsShare: Double get() = macs.toDouble() / referenceMacs

    companion object {
        /** [result] of one run; [static] when it ran the static full model alone. Timings are the run's, whole. */
        fun of(manifest: Manifest, result: RunResult, static: Boolean = false, index: Int = 0, top: Int = 5): Summary {
            val logits = result.logits.row(index)
            val peak = logits.max()
            val weights = logits.map { exp((it - peak).toDouble()) }
            val total = weights.sum()
            val labels = weights.indices.sortedByDescending { weights[it] }.take(top).map { Label(manifest.classes[it], weights[it] / total) }
            val path = result.paths[index]
            val selector = manifest.dispatch.selector
            val timings = result.timings
            return Summary(
                top = labels,
                path = path,
                view = if (static) PathView("the static full model") else manifest.dispatch.view(path),
                macs = result.macs[index],
                referenceMacs = manifest.referenceMacs,
                preprocessMs = timings["preprocess"] ?: 0.0,
                selectorMs = selector?.let { timings[it] } ?: 0.0,
                pathMs = timings.filterKeys { it != "preprocess" && it != selector }.values.sum(),
            )
        }
    }
}
