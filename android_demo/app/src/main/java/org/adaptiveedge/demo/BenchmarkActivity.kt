package org.adaptiveedge.demo

import android.app.Activity
import android.content.Intent
import android.os.Bundle
import android.util.Log
import android.widget.TextView
import org.adaptiveedge.core.Benchmark
import org.adaptiveedge.core.DeviceBudgets
import org.adaptiveedge.core.Json
import org.adaptiveedge.core.Preprocess
import org.adaptiveedge.core.Session
import java.io.File
import kotlin.concurrent.thread

/**
 * Benchmark mode: times every graph, every probe path and the static full
 * model at batch 1, then the dynamic pipeline over the sample images, and
 * writes the report in `python -m runtime.profile --out`'s format to the
 * app's external files (README: the adb command and its extras).
 */
class BenchmarkActivity : Activity() {
    /** The intent's extras, defaulting to devices.yaml's pixel-8 entry and the profiler's run counts. */
    private data class Options(val runs: Int, val warmup: Int, val device: DeviceBudgets, val out: String) {
        val command: String
            get() = "adb shell am start -n org.adaptiveedge.demo/.BenchmarkActivity --ei runs $runs --ei warmup $warmup " +
                "--es device ${device.name} --el macs_budget ${device.macsBudget} --ef latency_budget_ms ${device.latencyBudgetMs} --es out $out"

        companion object {
            fun from(intent: Intent) = Options(
                runs = intent.getIntExtra("runs", 100).also { require(it >= 1) { "runs must be at least 1, got $it" } },
                warmup = intent.getIntExtra("warmup", 10).also { require(it >= 0) { "warmup must be at least 0, got $it" } },
                device = DeviceBudgets(
                    intent.getStringExtra("device") ?: "pixel-8",
                    intent.getLongExtra("macs_budget", 300_000_000L),
                    intent.getFloatExtra("latency_budget_ms", 8.0f).toDouble(),
                ),
                out = (intent.getStringExtra("out") ?: "benchmark.json").also {
                    require(File(it).name == it) { "out must be a file name, got $it" }
                },
            )
        }
    }

    private lateinit var text: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_benchmark)
        text = findViewById(R.id.report)
        text.text = "benchmarking..."
        thread(name = "benchmark") { report(text) }
    }

    private fun report(text: TextView) {
        val message = try {
            val options = Options.from(intent)
            val opened = Bundles.open(this)
            ExecuTorchRunner(opened.directory, opened.manifest).use { runner ->
                val session = Session(opened.manifest, runner, device = options.device.name)
                val images = Pictures.samples(this).map { Pictures.toImages(it.second) }
                val batch = images.takeIf { it.isNotEmpty() }?.let { Preprocess.prepareAll(it, opened.manifest.preprocessing) }
                val report = Benchmark.profile(
                    session, options.device, opened.directory.path, options.runs, options.warmup, batch, options.command,
                )
                val out = File(getExternalFilesDir(null), options.out)
                val partial = File(out.path + ".partial")
                partial.writeText(Json.write(report) + "\n")
                check(partial.renameTo(out)) { "cannot move ${partial.path} to ${out.path}" }
                Log.i(TAG, "BENCHMARK DONE ${out.path}")
                Benchmark.summary(report) + "\n\nwritten to ${out.path}"
            }
        } catch (error: Exception) {  // a refused bundle, bad extras, unreadable storage: reported, never a crash
            Log.e(TAG, "BENCHMARK FAILED", error)
            "Benchmark failed: ${error.message}"
        }
        runOnUiThread { text.text = message }
    }

    companion object {
        const val TAG = "AdaptiveEdge"
    }
}
