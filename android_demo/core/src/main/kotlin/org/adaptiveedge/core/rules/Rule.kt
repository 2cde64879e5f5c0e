package org.adaptiveedge.core.rules

import org.adaptiveedge.core.FieldReader
import org.adaptiveedge.core.Graph
import org.adaptiveedge.core.Manifest
import org.adaptiveedge.core.Tensor

/**
 * What every dispatch rule provides, as `runtime/rules/rule.py` does: the
 * manifest reader, the session and the benchmark need no `if rule ==`.
 * Each rule is one file of this package, the port of its Python module.
 */

/** Runs graph `name` on a batch of any size (the session chunks it to the bundle's max_batch). */
fun interface GraphCall {
    operator fun invoke(name: String, vararg inputs: Tensor): List<Tensor>
}

/** What a dispatcher hands back for a batch, in input order. */
class Decision(
    val logits: Tensor,  // (N, classes)
    val paths: List<String>,  // per sample, the name of the path it took
    val macs: LongArray,  // per sample, selector and gates included
)

/** What the caller asked of one run, beyond the images. */
data class Request(
    val scale: FloatArray? = null,  // compute scale S per sample, for rules that take it
    val path: String? = null,  // a path every sample takes whatever the selector says (the selector still runs)
    val budgetMacs: Double? = null,  // per-image ceiling, selector included, for rules that take a budget
    val budgetMs: Double? = null,  // per-image ceiling on latency measured at latencyKey
    val latencyKey: String? = null,  // "device/backend" where the session runs
    val admitted: Set<String>? = null,  // the paths a budget admits (the session's `allowance`); null: all
)

/** What a user can ask [org.adaptiveedge.core.Session.run] for: a path every image takes, or URNet's compute scale S. */
data class OperatingPoint(
    val name: String,
    val kind: String,  // "path" | "scale"
    val value: Double? = null,  // S, for a scale point
    val macs: Long? = null,  // per image, selector included; null where it depends on the image (a scale)
)

/** A rule's part of the manifest (`dispatch`). */
interface Section {
    val rule: String
    val reference: String  // graph of the static full model, image to logits: the baseline of every speedup
    val selector: String?  // the graph that chooses each sample's path; null where gates inside the blocks choose

    /** What [org.adaptiveedge.core.Session.run] can be asked for: the points a budget chooses among, and the benchmark times. */
    fun operatingPoints(graphs: Map<String, Graph>): List<OperatingPoint>

    /** The most MACs any input can cost, and the path that costs it. */
    fun worstCase(graphs: Map<String, Graph>): Pair<Long, String>

    /** What a person should see of [path]: for the app's screen. */
    fun view(path: String): PathView
}

/** A path as the app draws it: a resolution or configuration in words, or which blocks ran. */
data class PathView(val detail: String? = null, val blocks: List<Boolean>? = null)

/** The block rules name a path by one '0'/'1' per block. */
internal fun blockView(path: String) = PathView(blocks = path.map { it == '1' })

fun interface Dispatcher {
    /** Run [batch] (normalized NCHW) through its paths, one graph call per group of samples that share one. */
    fun dispatch(call: GraphCall, batch: Tensor, request: Request): Decision
}

class Rule(
    val name: String,
    val parse: (r: FieldReader, data: Map<String, Any?>, graphs: Map<String, Graph>, classes: Int) -> Section,
    val dispatcher: (Manifest) -> Dispatcher,
    val takesScale: Boolean = false,
    val takesBudget: Boolean = false,
    val since: Int = 1,  // the first format_version that has this rule
    /** Rewrites a version 1 or 2 section, in place, into version 3's terms; null where nothing changed. */
    val upgrade: ((FieldReader, MutableMap<String, Any?>) -> Unit)? = null,
)

/** The registry, in `runtime.rules.RULES`' order (error messages list it). */
val RULES: Map<String, Rule> = listOf(ARGMAX, POLICY, GATED, BUDGET).associateBy { it.name }
