package org.adaptiveedge.core.rules

/** Grouping a batch by decision, and putting the groups back in input order (`runtime/rules/batching.py`). */

/** (key, rows) per distinct key, keys ascending; rows is null when every sample agrees (nothing to index or copy). */
fun groups(keys: IntArray): List<Pair<Int, IntArray?>> {
    val first = keys[0]
    if (keys.all { it == first }) return listOf(first to null)
    return keys.distinct().sorted().map { key -> key to keys.indices.filter { keys[it] == key }.toIntArray() }
}

/** Each row of an (N, K) boolean matrix as a string of K '0'/'1' characters. */
fun pathStrings(matrix: Array<BooleanArray>): List<String> =
    matrix.map { row -> String(CharArray(row.size) { if (row[it]) '1' else '0' }) }

/** The boolean row of a '0'/'1' path string; IllegalArgumentException naming the problem otherwise. */
fun parsePath(path: String, blocks: Int): BooleanArray {
    require(path.length == blocks && path.all { it == '0' || it == '1' }) {
        "path ${org.adaptiveedge.core.Python.repr(path)} is not a string of $blocks '0'/'1' characters, one per block"
    }
    return BooleanArray(blocks) { path[it] == '1' }
}

/** Index of the highest score among [count] from [from]; numpy's argmax: the first on ties, the first NaN if any. */
fun argmax(scores: FloatArray, from: Int, count: Int, admitted: BooleanArray? = null): Int {
    var best = -1
    for (j in 0 until count) {
        if (admitted != null && !admitted[j]) continue
        val score = scores[from + j]
        if (best < 0) {
            best = j
        } else {
            val current = scores[from + best]
            if (!current.isNaN() && (score.isNaN() || score > current)) best = j
        }
    }
    return best
}
