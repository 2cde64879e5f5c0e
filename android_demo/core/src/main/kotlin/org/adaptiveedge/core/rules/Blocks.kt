package org.adaptiveedge.core.rules

import org.adaptiveedge.core.FieldReader
import org.adaptiveedge.core.Graph

/**
 * What the block rules (policy, gated) share: a backbone run block by block.
 * A skipped block still takes its shortcut; a path is one character per
 * block, `1` if it ran and `0` if it was skipped.
 */
data class BlockStep(
    val run: String?,  // null: the block never ran on the calibration set and was left out
    val skip: String?,  // null: the shortcut is the identity, which needs no call
)

internal fun parseSteps(r: FieldReader, data: Any?, graphs: Map<String, Graph>): List<BlockStep> {
    val steps = r.list(data, "dispatch.blocks").mapIndexed { i, item ->
        val entry = r.fields(item, "dispatch.blocks[$i]", setOf("run", "skip"))
        BlockStep(
            entry["run"]?.let { r.graph(it, "dispatch.blocks[$i].run") },
            entry["skip"]?.let { r.graph(it, "dispatch.blocks[$i].skip") },
        )
    }
    if (steps.isEmpty()) throw r.fail("dispatch.blocks", "must list at least one block")
    return steps
}
