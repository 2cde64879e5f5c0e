"""The Core ML target: one zipped multifunction package whose functions share their conv weights.

Core ML predicts only on macOS, so on other hosts these tests check the
package spec (int8 graphs' 8-bit weights included), the build plan and the
bundle's integrity, and that the runtime refuses to load with an error that says why.
"""

from __future__ import annotations

import dataclasses
import platform
import re
import zipfile

import pytest
from helpers import copy_tree, run_without_torch

import exporter
import runtime
from exporter.splits import split_model
from runtime import BundleError
from runtime.format.files import sha256_of
from runtime.format.devices import get_device
from runtime.format.manifest import MANIFEST_FILE, BuildPlan, read_manifest

ct = pytest.importorskip("coremltools", reason="the Core ML target needs coremltools (pip install coremltools==9.0)")

from exporter.targets import coreml as coreml_target  # noqa: E402  (imports coremltools)
from runtime.backends import coreml as coreml_backend  # noqa: E402

ARCHIVE = "model.mlpackage.zip"
FLOAT32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
MIL = ct.proto.MIL_pb2
IPHONE = get_device("iphone-15")
MAC_CPU_FP32 = dataclasses.replace(IPHONE, name="mac-cpu-fp32", precision="fp32", compute_units="CPU_ONLY")
MAX_BATCH = 4


def unzipped(archive, cache):
    """The package in `archive`, unzipped the way the runtime does it."""
    return coreml_backend.unpack(archive, sha256_of(archive), cache)


def weight_bytes(package) -> int:
    return (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").stat().st_size


def written_alone(graph, device, directory, precision="fp16"):
    """`graph` written on its own for `device` at `precision` (int8: all of it): (Written, unzipped package)."""
    directory.mkdir()
    int8 = {graph.name: ()} if precision == "int8" else {}
    written = coreml_target.write(
        (graph,), directory, device=device, max_batch=MAX_BATCH, precision=precision, int8=int8
    )
    return written, unzipped(directory / ARCHIVE, directory / "cache")


def weights(package) -> dict[str, list[tuple[str, str, str, int, str]]]:
    """Per function, each conv and linear in order as (op, the op feeding its weight, the element type stored,
    the offset in weight.bin, the type the op computes in); a constexpr dequantize stores its data."""
    spec = ct.utils.load_spec(str(package))
    found = {}
    for name, function in spec.mlProgram.functions.items():
        ops = function.block_specializations[function.opset].operations
        producers = {op.outputs[0].name: op for op in ops}
        found[name] = []
        for op in (op for op in ops if op.type in ("conv", "linear")):
            source = producers[op.inputs["weight"].arguments[0].name]
            value = source.attributes["val"] if source.type == "const" else source.inputs["data"].arguments[0].value
            stored = (MIL.DataType.Name(value.type.tensorType.dataType), value.blobFileValue.offset)
            computes = MIL.DataType.Name(op.outputs[0].type.tensorType.dataType)
            found[name].append((op.type, source.type, *stored, computes))
    return found


@pytest.fixture(scope="module")
def coreml_bundle(checkpoint_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "drnet-coreml"
    exporter.export(checkpoint_dir, "coreml", out, device="iphone-15")
    return out


@pytest.fixture(scope="module")
def bundle_package(coreml_bundle, tmp_path_factory):
    return unzipped(coreml_bundle / ARCHIVE, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def split(trained):
    model, config = trained
    return split_model(model, config["family"], config["data"]["resolution"])


@pytest.fixture(scope="module")
def full_graph(split):
    """The full-resolution DRNet graph, alone: the baseline of the weight-sharing checks."""
    return next(g for g in split.graphs if g.name == split.dispatch.reference)


@pytest.fixture(scope="module")
def full_fp16(full_graph, tmp_path_factory):
    return written_alone(full_graph, IPHONE, tmp_path_factory.mktemp("single") / "fp16")


# --- the bundle ----------------------------------------------------------------------------------


def test_the_bundle_holds_one_zipped_package(coreml_bundle):
    assert sorted(p.name for p in coreml_bundle.iterdir()) == sorted([ARCHIVE, MANIFEST_FILE])
    manifest = read_manifest(coreml_bundle)
    assert set(manifest.graphs) == {"predictor", "res32", "res24", "res16"}
    assert {(g.artifact, g.entry) for g in manifest.graphs.values()} == {(ARCHIVE, name) for name in manifest.graphs}
    with zipfile.ZipFile(coreml_bundle / ARCHIVE) as zipped:
        entries = zipped.infolist()
    names = [e.filename for e in entries]
    assert names == sorted(names) and all(n.startswith("model.mlpackage/") for n in names)
    assert {e.date_time for e in entries} == {coreml_target.ZIP_TIMESTAMP}


def test_build_plan_follows_the_device(coreml_bundle):
    manifest = read_manifest(coreml_bundle)
    assert manifest.build == BuildPlan(precision="fp16", compute_units="ALL")
    assert manifest.producer["device"] == "iphone-15"


def test_every_graph_is_a_function_with_its_tensors(coreml_bundle, bundle_package):
    manifest = read_manifest(coreml_bundle)
    spec = ct.utils.load_spec(str(bundle_package))
    assert spec.specificationVersion >= ct.target.iOS18.value  # multifunction needs iOS 18
    assert spec.description.defaultFunctionName == "predictor"
    functions = {f.name: f for f in spec.description.functions}
    assert set(functions) == set(manifest.graphs) == set(spec.mlProgram.functions)
    for name, graph in manifest.graphs.items():
        # Inputs: per-sample shapes after a batch axis whose default is 1.
        inputs = [(t.name, tuple(t.type.multiArrayType.shape), t.type.multiArrayType.dataType) for t in functions[name].input]
        assert inputs == [(s.name, (1, *s.shape), FLOAT32) for s in graph.inputs], name
        # DRNet's functions take one image each: fixed shapes only, one per enumerated batch size, so that
        # each can run on the Neural Engine (a RangeDim runs there at its default shape only).
        (image,) = functions[name].input
        array = image.type.multiArrayType
        assert not array.shapeRange.sizeRanges, name
        sizes = coreml_backend.enumerated_batches(manifest.max_batch)
        assert len(sizes) > 1 and [tuple(s.shape) for s in array.enumeratedShapes.shapes] == [
            (b, *graph.inputs[0].shape) for b in sizes
        ], name
        # Outputs: their shapes follow the batch, so the spec leaves them open.
        outputs = [(t.name, t.type.multiArrayType.dataType) for t in functions[name].output]
        assert outputs == [(s.name, FLOAT32) for s in graph.outputs], name


@pytest.mark.parametrize("max_batch, sizes", [(1, (1,)), (4, (1, 2, 4)), (6, (1, 2, 4, 6)), (32, (1, 2, 4, 8, 16, 32))])
def test_enumerated_batches(max_batch, sizes):
    assert coreml_backend.enumerated_batches(max_batch) == sizes


@pytest.mark.parametrize("count, parts", [(7, [4, 2, 1]), (6, [6]), (5, [4, 1]), (1, [1])])
def test_a_batch_splits_into_compiled_sizes(count, parts):
    assert coreml_backend.split_batch(count, coreml_backend.enumerated_batches(6 if count == 6 else 4)) == parts


def test_conv_weights_are_stored_once(bundle_package, full_fp16):
    """Three resolutions plus the predictor cost far less than three full backbones."""
    _, single = full_fp16
    shared, alone = weight_bytes(bundle_package), weight_bytes(single)
    assert alone < shared < 1.6 * alone, f"{shared} bytes for all graphs vs {alone} for the full-resolution one"


# --- precision -----------------------------------------------------------------------------------


def test_fp32_weights_take_twice_the_fp16_bytes(full_graph, full_fp16, tmp_path):
    written, fp32 = written_alone(full_graph, MAC_CPU_FP32, tmp_path / "fp32", precision="fp32")
    assert written.build == BuildPlan(precision="fp32", compute_units="CPU_ONLY")
    assert full_fp16[0].build == BuildPlan(precision="fp16", compute_units="ALL")
    ratio = weight_bytes(fp32) / weight_bytes(full_fp16[1])
    assert 1.8 < ratio < 2.1, f"fp32 weights are {ratio:.2f}x the fp16 ones"


@pytest.fixture(scope="module")
def int8_package(split, tmp_path_factory):
    """(Written, unzipped package) of the DRNet graphs at precision int8, all but the predictor int8.

    Core ML's int8 is weights only, so the int8 graphs come without calibration inputs.
    """
    directory = tmp_path_factory.mktemp("int8")
    int8 = {graph.name: () for graph in split.graphs if graph.name != "predictor"}
    written = coreml_target.write(
        split.graphs, directory, device=IPHONE, max_batch=MAX_BATCH, precision="int8", int8=int8
    )
    return written, unzipped(directory / ARCHIVE, directory / "cache")


def test_int8_graphs_hold_8_bit_conv_and_linear_weights(int8_package):
    _, package = int8_package
    found = weights(package)
    assert set(found) == {"predictor", "res32", "res24", "res16"}
    for name in ("res32", "res24", "res16"):
        assert {op for op, *_ in found[name]} == {"conv", "linear"}
        # Every weight, the small stem and shortcut convs included: int8 data behind a constexpr dequantize.
        stored = {(source, stored) for _, source, stored, *_ in found[name]}
        assert stored == {("constexpr_blockwise_shift_scale", "INT8")}, name
    # A graph left out of int8 keeps fp16 weights.
    assert {(source, stored) for _, source, stored, *_ in found["predictor"]} == {("const", "FLOAT16")}


def test_int8_graphs_compute_in_fp16_and_the_plan_says_int8(int8_package):
    written, package = int8_package
    assert written.build == BuildPlan(precision="int8", compute_units="ALL")
    assert {computes for ops in weights(package).values() for *_, computes in ops} == {"FLOAT16"}


def test_int8_functions_share_their_int8_weights(int8_package):
    """The resolutions' conv weights are one set of int8 blobs, as their fp16 ones are one set of fp16 blobs."""
    _, package = int8_package
    blobs = {name: [where for _, _, _, where, _ in ops] for name, ops in weights(package).items()}
    assert blobs["res32"] == blobs["res24"] == blobs["res16"]
    assert len(set(blobs["res32"])) == len(blobs["res32"])  # and distinct from each other


def test_int8_weights_take_about_half_the_fp16_bytes(full_graph, full_fp16, tmp_path):
    written, int8 = written_alone(full_graph, IPHONE, tmp_path / "int8", precision="int8")
    assert written.build == BuildPlan(precision="int8", compute_units="ALL")
    ratio = weight_bytes(int8) / weight_bytes(full_fp16[1])
    # Measured 0.52: the per-channel scales, the fp16 BN affines and weight.bin's per-blob overhead add to the half.
    assert 0.45 < ratio < 0.65, f"int8 weights are {ratio:.2f}x the fp16 ones"


# --- the zip -------------------------------------------------------------------------------------


def test_zipping_ignores_file_times_and_creation_order(tmp_path):
    archives = []
    for attempt, order in enumerate((["b", "a/c"], ["a/c", "b"])):
        package = tmp_path / str(attempt) / "model.mlpackage"
        for name in order:
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            (package / name).write_text(name)
        archives.append(tmp_path / f"{attempt}.zip")
        coreml_target.zip_package(package, archives[-1])
    assert archives[0].read_bytes() == archives[1].read_bytes()


def test_unpacking_is_cached_by_sha256(coreml_bundle, tmp_path):
    first = unzipped(coreml_bundle / ARCHIVE, tmp_path)
    assert first == tmp_path / sha256_of(coreml_bundle / ARCHIVE) / "model.mlpackage"
    assert unzipped(coreml_bundle / ARCHIVE, tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.parent.name]  # no staging left behind


def test_an_archive_without_the_package_is_refused(tmp_path):
    archive = tmp_path / ARCHIVE
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("other/file", b"x")
    with pytest.raises(BundleError, match=r"does not hold a model\.mlpackage/ directory"):
        unzipped(archive, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


# --- the runtime ---------------------------------------------------------------------------------


@pytest.mark.skipif(platform.system() == "Darwin", reason="macOS runs Core ML")
def test_loading_off_macos_says_it_needs_macos(coreml_bundle):
    with pytest.raises(RuntimeError, match=f"Core ML prediction needs macOS, and this is {platform.system()}"):
        runtime.load(coreml_bundle)


@pytest.mark.skipif(platform.system() == "Darwin", reason="macOS runs Core ML")
def test_the_backend_needs_no_torch(coreml_bundle):
    done = run_without_torch(
        """
        import runtime
        try:
            runtime.load(sys.argv[1])
        except RuntimeError as error:
            print("refused:", error)
        print("torch loaded:", sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
        """,
        str(coreml_bundle),
    )
    assert done.returncode == 0, done.stderr
    assert "Core ML prediction needs macOS" in done.stdout
    assert "torch loaded: []" in done.stdout


def test_a_corrupt_package_is_refused(coreml_bundle, tmp_path):
    bundle = copy_tree(coreml_bundle, tmp_path / "bundle")
    data = bytearray((bundle / ARCHIVE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / ARCHIVE).write_bytes(data)
    with pytest.raises(BundleError, match=f"{re.escape(str(bundle / ARCHIVE))}: sha256 .* the file is corrupt"):
        runtime.load(bundle)


def test_threads_cannot_be_set():
    with pytest.raises(ValueError, match="Core ML schedules its own threads"):
        coreml_backend.create(threads=2)
    assert "coremltools 9.0" in coreml_backend.create().describe()


def test_exporting_twice_gives_the_same_bytes(checkpoint_dir, coreml_bundle, tmp_path):
    again = tmp_path / "again"
    exporter.export(checkpoint_dir, "coreml", again, device="iphone-15")
    assert sha256_of(again / ARCHIVE) == sha256_of(coreml_bundle / ARCHIVE)
    assert read_manifest(again).artifacts == read_manifest(coreml_bundle).artifacts
