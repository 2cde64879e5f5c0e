package org.adaptiveedge.core

/** Median and 90th percentile of one timed callable, in milliseconds. */
data class Timing(val medianMs: Double, val p90Ms: Double, val runs: Int)

/**
 * `runtime.profile.timing.measure`: after [warmup] untimed rounds, the callables run
 * interleaved, one call each per round, so that drift on a phone that heats
 * up or throttles hits all of them alike and their ratios stay meaningful.
 */
fun <K> measure(fns: Map<K, () -> Unit>, runs: Int = 50, warmup: Int = 10): Map<K, Timing> {
    require(runs >= 1) { "runs must be at least 1, got $runs" }
    repeat(warmup) { fns.values.forEach { it() } }
    val samples = fns.keys.associateWith { DoubleArray(runs) }
    for (i in 0 until runs) {
        for ((name, fn) in fns) {
            val start = System.nanoTime()
            fn()
            samples.getValue(name)[i] = (System.nanoTime() - start) / 1e6
        }
    }
    return samples.mapValues { (_, s) -> Timing(percentile(s, 50.0), percentile(s, 90.0), runs) }
}

/** numpy's default (linear) percentile. */
fun percentile(values: DoubleArray, q: Double): Double {
    val sorted = values.sorted()
    val position = (sorted.size - 1) * q / 100
    val low = kotlin.math.floor(position).toInt()
    val high = minOf(low + 1, sorted.size - 1)
    return sorted[low] + (sorted[high] - sorted[low]) * (position - low)
}
