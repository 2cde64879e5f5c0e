package org.adaptiveedge.core.rules

import org.adaptiveedge.core.FieldReader
import org.adaptiveedge.core.Graph
import org.adaptiveedge.core.Python

/** What the rules whose paths a selector scores (argmax, budget) check alike when they parse. */
internal interface ScoredPath {
    val name: String
    val graph: String
}

internal fun checkScoredPaths(
    r: FieldReader, paths: List<ScoredPath>, selector: String?, reference: String, graphs: Map<String, Graph>, classes: Int,
) {
    if (paths.isEmpty()) throw r.fail("dispatch.paths", "must list at least one path")
    val names = paths.map { it.name }
    if (names.toSet().size != names.size) throw r.fail("dispatch.paths", "path names repeat: ${Python.repr(names)}")
    if (selector != null) {
        val scores = graphs.getValue(selector).outputs[0].shape
        if (scores != listOf(paths.size)) {
            throw r.fail(
                "dispatch.selector",
                "${Python.repr(selector)} emits scores of shape ${Python.repr(scores)}, not [${paths.size}] for the listed paths",
            )
        }
    }
    for (path in paths) r.logits(path.graph, classes)
    if (reference !in paths.map { it.graph }) throw r.fail("dispatch.reference", "${Python.repr(reference)} is not the graph of any path")
}

/** The most MACs any path costs, and that path (the first of equals, as Python's max): a scored rule's worst case. */
internal fun costliestPath(pathMacs: Map<String, Long>): Pair<Long, String> =
    pathMacs.entries.fold(null as Map.Entry<String, Long>?) { best, e -> if (best == null || e.value > best.value) e else best }!!
        .let { it.value to it.key }
