package org.adaptiveedge.core

import org.adaptiveedge.core.rules.Dispatcher
import org.adaptiveedge.core.rules.Rule
import org.adaptiveedge.core.rules.RULES
import org.adaptiveedge.core.rules.Section

/**
 * The bundle manifest, parsed and validated as `runtime/format/manifest.py` does:
 * docs/bundle.md is the contract, and the golden vectors in
 * `android_demo/golden` hold both readers to the same messages.
 */
const val FORMAT_VERSION = 7
val READABLE_VERSIONS = listOf(1, 2, 3, 4, 5, 6, 7)  // 1 and 2 have batch-1 graphs and are read as version 3 with max_batch 1
const val MANIFEST_FILE = "manifest.json"
const val MACS_CONVENTION = "conv+linear multiply-accumulates per image"
val TARGETS = listOf("onnx", "executorch", "coreml", "tensorrt")  // runtime/format/targets.py, in its order
val CALIBRATES_INT8 = TARGETS.associateWith { it != "coreml" }  // Target.calibrates_int8: Core ML's int8 is weights only
val PRECISIONS = listOf("fp32", "fp16", "int8")
val COMPUTE_UNITS = listOf("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
val RESIZES = mapOf("bilinear" to 1, "pil-bilinear" to 7)  // preprocessing.resize: each definition (Preprocess) and the version it exists from
private val SHA256 = Regex("[0-9a-f]{64}")

data class TensorSpec(val name: String, val shape: List<Int>, val dtype: String = "float32")  // shape per sample

data class Graph(
    val name: String,
    val artifact: String,
    val entry: String?,  // the method inside a multi-method artifact (a .pte), or null
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val macs: Long,  // per sample
    val precision: String = "fp32",  // from version 6, written unless fp32: what its weights and activations run in
)

/**
 * uint8 RGB images become float32 NCHW: crop, resize to [resolution], scale to [0, 1], then (x - mean) / std.
 * [resize] says how ([Preprocess]): "pil-bilinear" (version 7) is torchvision's evaluation transform on PIL
 * images; "bilinear" crops, then resizes without antialiasing. [crop] (version 5): the central square kept,
 * as a fraction of the short side, as ImageNet models are evaluated.
 */
data class Preprocessing(
    val resolution: Int,
    val mean: List<Double>,
    val std: List<Double>,
    val resize: String = "pil-bilinear",
    val crop: Double? = null,
)

data class Artifact(val sha256: String, val bytes: Long)

data class EngineProfile(val input: String, val min: List<Int>, val opt: List<Int>, val max: List<Int>)

data class BuildPlan(
    val precision: String,
    val workspaceMb: Int?,
    val computeUnits: String?,
    val calibration: String?,
    val profiles: Map<String, List<EngineProfile>>?,
)

data class PointAccuracy(
    val name: String,  // a path every image is made to take, or "S=<scale>"
    val kind: String,  // "path" | "scale"
    val value: Double?,  // URNet's S for a scale point
    val top1: Double,  // in [0, 1]
)

/** Top-1 of each operating point, measured by the exporter on held-out labelled images (from version 6). */
data class Accuracy(val source: String, val images: Int, val points: List<PointAccuracy>)

/** Where int8 activation ranges came from: each graph calibrated on the inputs routed to it. */
data class Calibration(
    val source: String,
    val images: Int,
    val sha256: String,  // of the calibration images as float32 NCHW bytes
    val routed: Map<String, Int>,  // graph -> samples the dispatch sent it
    val forced: Map<String, Int>,  // graph -> samples added by forcing paths, where routing left it short
)

/** The selector runs int8 only if, quantized, it sends enough images down the same path. */
data class SelectorPrecision(val precision: String, val agreement: Double, val threshold: Double)

/** The quantized bundle against the fp32 one, on held-out images the calibration did not use. */
data class QuantizedCheck(
    val images: Int,
    val pathAgreement: Double,
    val top1Agreement: Double,
    val top1Fp32: Double?,  // null without labels
    val top1: Double?,
    val maxAbsDiff: Double,  // largest |logit difference| against eager, on images that took eager's path
    val tolerance: Double,  // the allowed difference, times max(1, the largest |logit|)
)

/** What the exporter changed below fp32 (from version 6), and how it checked the result. */
data class Quantization(
    val precision: String,  // fp16 | int8
    val calibration: Calibration?,  // int8 only
    val selector: SelectorPrecision?,  // bundles with a selector, int8 only
    val check: QuantizedCheck?,  // null where no backend ran the target on the exporting machine
)

data class Manifest(
    val formatVersion: Int,
    val family: String,
    val target: String,
    val classes: List<String>,
    val maxBatch: Int,
    val preprocessing: Preprocessing,
    val graphs: Map<String, Graph>,
    val dispatch: Section,
    val artifacts: Map<String, Artifact>,
    val producer: Map<String, String>,
    val macsConvention: String,
    val build: BuildPlan?,
    val accuracy: Accuracy? = null,  // from version 6
    val quantization: Quantization? = null,  // from version 6
) {
    val rule: Rule get() = RULES.getValue(dispatch.rule)

    /** The rule's batch dispatcher for this bundle's section and graphs. */
    fun dispatcher(): Dispatcher = rule.dispatcher(this)

    /** MACs of one image through the static full model, the baseline of every saving. */
    val referenceMacs: Long get() = graphs.getValue(dispatch.reference).macs

    companion object {
        /** Parse and validate manifest text; [source] names the file in every error. */
        fun parse(text: String, source: String): Manifest {
            val data = try {
                Json.parse(text)
            } catch (error: Json.DecodeException) {
                throw BundleException("$source: not valid JSON (${error.message})")
            }
            return parse(data, FieldReader(source))
        }

        private fun parse(json: Any?, r: FieldReader): Manifest {
            var data = json
            if (data !is Map<*, *>) throw r.fail("manifest", "expected dict, got ${Python.repr(data)}")
            val version = r.integer(data["format_version"], "format_version")
            if (version !in READABLE_VERSIONS.map(Int::toLong)) {
                throw r.fail("format_version", "unknown format_version $version; this runtime reads ${Python.repr(READABLE_VERSIONS)}")
            }
            if (version < 3) data = upgrade(r.map(data, "manifest"), r)
            val top = r.fields(
                data, "manifest",
                setOf("format_version", "family", "target", "classes", "max_batch", "preprocessing", "graphs", "dispatch",
                    "artifacts", "producer", "macs_convention"),
                if (version >= 6) setOf("build", "accuracy", "quantization") else setOf("build"),
            )

            val classList = r.list(top["classes"], "classes")
            if (classList.isEmpty()) throw r.fail("classes", "must list at least one class")
            val classes = classList.mapIndexed { i, c -> r.text(c, "classes[$i]") }

            val pre = r.fields(
                top["preprocessing"], "preprocessing", setOf("resolution", "mean", "std", "resize"),
                if (version >= 5) setOf("crop") else emptySet(),
            )
            val preprocessing = Preprocessing(
                resolution = r.count(pre["resolution"], "preprocessing.resolution", 1),
                mean = r.floats(pre["mean"], "preprocessing.mean", 3),
                std = r.floats(pre["std"], "preprocessing.std", 3),
                resize = r.choice(pre["resize"], RESIZES.filterValues { it <= version }.keys, "preprocessing.resize"),
                crop = if ("crop" in pre) r.number(pre["crop"], "preprocessing.crop") else null,
            )
            if (preprocessing.std.any { it <= 0 }) {
                throw r.fail("preprocessing.std", "must be positive, got ${Python.repr(preprocessing.std)}")
            }
            preprocessing.crop?.let { crop ->
                if (!(crop > 0 && crop <= 1)) throw r.fail("preprocessing.crop", "must be in (0, 1], got ${Python.repr(crop)}")
            }

            val artifacts = LinkedHashMap<String, Artifact>()
            for ((file, value) in r.map(top["artifacts"], "artifacts")) {
                val where = "artifacts[${Python.repr(file)}]"
                if (file.substringAfterLast('/') != file || file in listOf("", ".", "..", MANIFEST_FILE)) {
                    throw r.fail(where, "must be a plain file name inside the bundle")
                }
                val entry = r.fields(value, where, setOf("sha256", "bytes"))
                val digest = entry["sha256"] as? String ?: throw r.fail("$where.sha256", "expected str, got ${Python.repr(entry["sha256"])}")
                if (!SHA256.matches(digest)) throw r.fail("$where.sha256", "not a lowercase hex sha256: ${Python.repr(digest)}")
                artifacts[file] = Artifact(digest, r.longCount(entry["bytes"], "$where.bytes"))
            }

            val graphItems = r.map(top["graphs"], "graphs")
            if (graphItems.isEmpty()) throw r.fail("graphs", "must hold at least one graph")
            for ((name, value) in graphItems) {
                val where = "graphs[${Python.repr(name)}]"
                val entry = r.fields(
                    value, where, setOf("name", "artifact", "entry", "inputs", "outputs", "macs"),
                    if (version >= 6) setOf("precision") else emptySet(),
                )
                if (entry["name"] != name) throw r.fail("$where.name", "${Python.repr(entry["name"])} differs from its key")
                val method = entry["entry"]
                val artifact = r.text(entry["artifact"], "$where.artifact")
                if (artifact !in artifacts) throw r.fail("$where.artifact", "${Python.repr(artifact)} is not listed in artifacts")
                r.graphs[name] = Graph(
                    name = name,
                    artifact = artifact,
                    entry = if (method == null) null else r.text(method, "$where.entry"),
                    inputs = r.tensors(entry["inputs"], "$where.inputs"),
                    outputs = r.tensors(entry["outputs"], "$where.outputs"),
                    macs = r.longCount(entry["macs"], "$where.macs"),
                    precision = r.choice(if ("precision" in entry) entry["precision"] else "fp32", PRECISIONS, "$where.precision"),
                )
            }

            val d = r.map(top["dispatch"], "dispatch")
            val rule = RULES.getValue(r.choice(d["rule"], RULES.keys, "dispatch.rule"))
            if (version < rule.since) {
                throw r.fail("dispatch.rule", "${Python.repr(rule.name)} exists from format_version ${rule.since}, not $version")
            }
            val dispatch = rule.parse(r, d, r.graphs, classes.size)
            val image = listOf(preprocessing.mean.size, preprocessing.resolution, preprocessing.resolution)
            for ((name, graph) in r.graphs) {
                val first = graph.inputs[0]
                if (first.name == "image" && first.shape != image) {
                    throw r.fail(
                        "graphs[${Python.repr(name)}].inputs[0].shape",
                        "${Python.repr(first.shape)} differs from the preprocessed image ${Python.repr(image)}",
                    )
                }
            }

            val producer = r.map(top["producer"], "producer")
            val build = top["build"]
            val family = r.text(top["family"], "family")
            val target = r.choice(top["target"], TARGETS, "target")
            return Manifest(
                formatVersion = version.toInt(),
                family = family,
                target = target,
                classes = classes,
                maxBatch = r.count(top["max_batch"], "max_batch", 1),
                preprocessing = preprocessing,
                graphs = LinkedHashMap(r.graphs),
                dispatch = dispatch,
                artifacts = artifacts,
                producer = producer.mapValues { (_, v) -> if (v is String) v else Python.repr(v) },
                macsConvention = r.text(top["macs_convention"], "macs_convention"),
                build = if (build == null) null else parseBuild(r, build, artifacts),
                accuracy = if ("accuracy" in top) parseAccuracy(r, top["accuracy"]) else null,
                quantization = if ("quantization" in top) parseQuantization(r, top["quantization"], target) else null,
            )
        }

        /** A version 1 or 2 manifest in version 3's terms: batch-1 graphs, per-sample shapes, the rule's own upgrade. */
        private fun upgrade(original: Map<String, Any?>, r: FieldReader): Map<String, Any?> {
            @Suppress("UNCHECKED_CAST")
            val data = deepCopy(original) as MutableMap<String, Any?>
            data["max_batch"] = 1L
            if ("macs_convention" !in data) data["macs_convention"] = MACS_CONVENTION
            for ((name, graph) in r.map(data["graphs"], "graphs")) {
                for (side in listOf("inputs", "outputs")) {
                    val tensors = r.list(r.map(graph, "graphs[${Python.repr(name)}]")[side], side)
                    for ((i, tensor) in tensors.withIndex()) {
                        val where = "graphs[${Python.repr(name)}].$side[$i]"
                        @Suppress("UNCHECKED_CAST")
                        val t = r.map(tensor, where) as MutableMap<String, Any?>
                        val shape = r.list(t["shape"], "$where.shape")
                        if (shape.isEmpty() || shape[0] != 1L) {
                            throw r.fail("$where.shape", "a version ${data["format_version"]} graph has batch 1 first, got ${Python.repr(shape)}")
                        }
                        t["shape"] = shape.drop(1)
                    }
                }
            }
            @Suppress("UNCHECKED_CAST")
            val dispatch = r.map(data["dispatch"], "dispatch") as MutableMap<String, Any?>
            RULES[dispatch["rule"]]?.upgrade?.invoke(r, dispatch)
            return data
        }

        private fun deepCopy(value: Any?): Any? = when (value) {
            is Map<*, *> -> LinkedHashMap<String, Any?>().also { copy -> value.forEach { (k, v) -> copy[k as String] = deepCopy(v) } }
            is List<*> -> value.mapTo(ArrayList()) { deepCopy(it) }
            else -> value
        }

        private fun share(r: FieldReader, value: Any?, where: String): Double {
            val share = r.number(value, where)
            if (!(share >= 0 && share <= 1)) throw r.fail(where, "must be in [0, 1], got ${Python.str(share)}")
            return share
        }

        private fun parseAccuracy(r: FieldReader, value: Any?): Accuracy {
            val data = r.fields(value, "accuracy", setOf("source", "images", "points"))
            val points = r.list(data["points"], "accuracy.points").mapIndexed { i, item ->
                val where = "accuracy.points[$i]"
                val entry = r.fields(item, where, setOf("name", "kind", "value", "top1"))
                val kind = r.choice(entry["kind"], listOf("path", "scale"), "$where.kind")
                val scale = entry["value"]
                val point = when {
                    kind == "scale" -> share(r, scale, "$where.value")
                    scale != null -> throw r.fail("$where.value", "a path point has no value, got ${Python.repr(scale)}")
                    else -> null
                }
                PointAccuracy(r.text(entry["name"], "$where.name"), kind, point, share(r, entry["top1"], "$where.top1"))
            }
            val names = points.map { it.name }
            if (names.toSet().size != names.size) throw r.fail("accuracy.points", "point names repeat: ${Python.repr(names)}")
            return Accuracy(r.text(data["source"], "accuracy.source"), r.count(data["images"], "accuracy.images", 1), points)
        }

        private fun parseQuantization(r: FieldReader, value: Any?, target: String): Quantization {
            val data = r.fields(value, "quantization", setOf("precision", "calibration", "selector", "check"))
            val precision = r.choice(data["precision"], PRECISIONS.drop(1), "quantization.precision")
            val calibration = data["calibration"]?.let { given ->
                val c = r.fields(given, "quantization.calibration", setOf("source", "images", "sha256", "routed", "forced"))
                val digest = c["sha256"] as? String
                    ?: throw r.fail("quantization.calibration.sha256", "expected str, got ${Python.repr(c["sha256"])}")
                if (!SHA256.matches(digest)) throw r.fail("quantization.calibration.sha256", "not a lowercase hex sha256: ${Python.repr(digest)}")
                val (routed, forced) = listOf("routed", "forced").map { side ->
                    val where = "quantization.calibration.$side"
                    r.map(c[side], where).entries.associate { (graph, n) ->
                        val at = "$where[${Python.repr(graph)}]"
                        r.graph(graph, at) to r.count(n, at)
                    }
                }
                Calibration(
                    r.text(c["source"], "quantization.calibration.source"),
                    r.count(c["images"], "quantization.calibration.images", 1), digest, routed, forced,
                )
            }
            if (precision == "int8" && calibration == null && CALIBRATES_INT8.getValue(target)) {
                throw r.fail("quantization.calibration", "int8 graphs on $target need their calibration recorded")
            }
            val selector = data["selector"]?.let { given ->
                val s = r.fields(given, "quantization.selector", setOf("precision", "agreement", "threshold"))
                SelectorPrecision(
                    r.choice(s["precision"], PRECISIONS, "quantization.selector.precision"),
                    share(r, s["agreement"], "quantization.selector.agreement"),
                    share(r, s["threshold"], "quantization.selector.threshold"),
                )
            }
            val check = data["check"]?.let { given ->
                val where = "quantization.check"
                val c = r.fields(
                    given, where,
                    setOf("images", "path_agreement", "top1_agreement", "top1_fp32", "top1", "max_abs_diff", "tolerance"),
                )
                // Python reads the two optional shares first
                val (top1Fp32, top1) = listOf("top1_fp32", "top1").map { k -> c[k]?.let { share(r, it, "$where.$k") } }
                QuantizedCheck(
                    images = r.count(c["images"], "$where.images", 1),
                    pathAgreement = share(r, c["path_agreement"], "$where.path_agreement"),
                    top1Agreement = share(r, c["top1_agreement"], "$where.top1_agreement"),
                    top1Fp32 = top1Fp32,
                    top1 = top1,
                    maxAbsDiff = r.number(c["max_abs_diff"], "$where.max_abs_diff"),
                    tolerance = r.number(c["tolerance"], "$where.tolerance"),
                )
            }
            return Quantization(precision, calibration, selector, check)
        }

        private fun parseBuild(r: FieldReader, value: Any?, artifacts: Map<String, Artifact>): BuildPlan {
            val data = r.fields(value, "build", setOf("precision"), setOf("workspace_mb", "compute_units", "calibration", "profiles"))
            val precision = r.choice(data["precision"], PRECISIONS, "build.precision")
            val workspace = data["workspace_mb"]?.let { r.count(it, "build.workspace_mb", 1) }
            val units = data["compute_units"]?.let { r.choice(it, COMPUTE_UNITS, "build.compute_units") }
            val calibration = data["calibration"]?.let { r.choice(it, artifacts.keys, "build.calibration") }
            val int8Graphs = r.graphs.values.any { it.precision == "int8" }
            if (precision == "int8" && calibration == null && data["profiles"] != null && !int8Graphs) {
                throw r.fail("build.calibration", "int8 engines need a calibration artifact or at least one int8 graph")
            }
            val profiles = data["profiles"]?.let { table ->
                r.map(table, "build.profiles").entries.associate { (name, entries) ->
                    val where = "build.profiles[${Python.repr(name)}]"
                    val inputs = r.graphs.getValue(r.graph(name, where)).inputs.associateBy { it.name }
                    name to r.list(entries, where).mapIndexed { i, item ->
                        val at = "$where[$i]"
                        val entry = r.fields(item, at, setOf("input", "min", "opt", "max"))
                        val spec = inputs.getValue(r.choice(entry["input"], inputs.keys, "$at.input"))
                        val shapes = listOf("min", "opt", "max").map { key ->
                            val dims = r.list(entry[key], "$at.$key")
                            if (dims.size != 1 + spec.shape.size) {
                                throw r.fail("$at.$key", "rank ${dims.size} is not the input's per-sample rank ${spec.shape.size} plus the batch")
                            }
                            dims.map { r.count(it, "$at.$key", 1) }
                        }
                        if (!shapes[0].indices.all { shapes[0][it] <= shapes[1][it] && shapes[1][it] <= shapes[2][it] }) {
                            throw r.fail(at, "needs min <= opt <= max per dimension, got ${Python.repr(shapes.map { Python.Tuple(it) })}")
                        }
                        EngineProfile(spec.name, shapes[0], shapes[1], shapes[2])
                    }
                }
            }
            return BuildPlan(precision, workspace, units, calibration, profiles)
        }
    }
}
