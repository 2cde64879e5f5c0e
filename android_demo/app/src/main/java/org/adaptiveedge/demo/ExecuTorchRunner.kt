package org.adaptiveedge.demo

import org.adaptiveedge.core.BundleException
import org.adaptiveedge.core.Graph
import org.adaptiveedge.core.GraphRunner
import org.adaptiveedge.core.Manifest
import org.adaptiveedge.core.Tensor
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import java.io.File
import org.pytorch.executorch.Tensor as ExecuTorchTensor

/**
 * Runs each graph as a method of its `.pte` program, called by the name the
 * manifest gives it (`Graph.entry`). Every program is loaded once, and every
 * method before the first image, so that no timing pays for loading.
 * Not thread-safe: the app calls it from one inference thread.
 *
 * Memory: a program is memory-mapped (`LOAD_MODE_MMAP`), so its stored weights
 * stay in the page cache instead of a heap copy of the whole file. The AAR is
 * built with ExecuTorch's android preset, which compiles XNNPACK's weight cache
 * in and on by default: methods that use the same stored weight (a block graph
 * and the cached paths through it) share one packed copy. The app has no switch
 * to add: `Module.load`'s backend options take integers, the cache's key
 * (`weight_cache_enabled`) a boolean.
 * See docs/bundle.md, "Weights in memory".
 */
class ExecuTorchRunner(bundle: File, manifest: Manifest) : GraphRunner, AutoCloseable {
    override val backend = "executorch"
    private val programs: Map<String, Module> = manifest.graphs.values.map { it.artifact }.distinct().associateWith { artifact ->
        val file = File(bundle, artifact)
        try {
            Module.load(file.path, Module.LOAD_MODE_MMAP)
        } catch (error: RuntimeException) {
            throw BundleException("${file.path}: ExecuTorch cannot load the program: ${error.message}")
        }
    }

    init {
        for (graph in manifest.graphs.values) {
            try {
                programs.getValue(graph.artifact).loadMethod(method(graph))
            } catch (error: RuntimeException) {
                throw BundleException("${File(bundle, graph.artifact).path} (graph '${graph.name}', method '${method(graph)}'): ${error.message}")
            }
        }
    }

    override fun describe() = "executorch-android ${BuildConfig.EXECUTORCH_VERSION} (XNNPACK), threads=default, programs mmapped"

    override fun run(graph: Graph, inputs: List<Tensor>): List<Tensor> {
        val values = inputs.map { EValue.from(ExecuTorchTensor.fromBlob(it.data, LongArray(it.shape.size) { d -> it.shape[d].toLong() })) }
        return programs.getValue(graph.artifact).execute(method(graph), *values.toTypedArray()).map { output ->
            val tensor = output.toTensor()
            Tensor(tensor.shape().map { it.toInt() }.toIntArray(), tensor.dataAsFloatArray)
        }
    }

    override fun close() = programs.values.forEach { it.destroy() }

    private fun method(graph: Graph) = graph.entry ?: "forward"
}
