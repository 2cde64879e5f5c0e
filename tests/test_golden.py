"""The Android core's golden vectors (android_demo/golden) still describe this runtime.

The JVM tests replay the committed vectors through the Kotlin core; these
replay them through the Python runtime, so a change to a dispatch rule or a
reader message that the vectors no longer match fails here, and the fix is to
run `python android_demo/golden/make_golden.py` and commit the result.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.format.bundle import open_bundle
from runtime.serving.costs import BudgetError
from runtime.format.fields import BundleError
from runtime.format.manifest import MANIFEST_FILE, read_manifest
from runtime.session import Session

GOLDEN = Path(__file__).resolve().parents[1] / "android_demo" / "golden"
FAMILIES = ("drnet", "blockdrop", "urnet", "resizable", "resizable-table")

_spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)


def load(name: str):
    return json.loads((GOLDEN / name).read_text())


def decode(encoded: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(encoded["base64"]), dtype="<f4").reshape(encoded["shape"])


class Replay:
    """A backend whose graphs answer with the recorded outputs, after checking each call is the recorded one."""

    name = "executorch"

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.next = 0

    def load(self, bundle, manifest, graph):
        return lambda inputs: self.run(graph.name, inputs)

    def run(self, name: str, inputs) -> list[np.ndarray]:
        assert self.next < len(self.calls), f"call to {name} beyond the {len(self.calls)} recorded"
        call = self.calls[self.next]
        self.next += 1
        assert call["graph"] == name, f"call {self.next}: {name}, recorded {call['graph']}"
        for expected, actual in zip(call["inputs"], inputs, strict=True):
            if "base64" in expected:
                np.testing.assert_allclose(actual, decode(expected), atol=1e-5)
            elif actual.ndim == 2 and actual.shape[1] == 1 and np.prod(expected["shape"][1:]) > 1:  # a stand-in of ours
                np.testing.assert_array_equal(actual[:, 0], np.float32(expected["fingerprints"]))
            else:
                np.testing.assert_allclose(make_golden.fingerprints(actual), expected["fingerprints"], rtol=1e-5, atol=1e-5)
        return [
            decode(out) if "base64" in out else np.float32(out["fingerprints"])[:, None]  # feature maps: their fingerprint
            for out in call["outputs"]
        ]


def family_cases():
    return [(family, case) for family in FAMILIES for case in load(f"{family}.json")["cases"]]


@pytest.fixture(scope="module")
def images():
    return {
        name: np.frombuffer(base64.b64decode(entry["base64"]), dtype=np.uint8).reshape(entry["shape"])
        for name, entry in load("images.json").items()
    }


@pytest.mark.parametrize("family, case", family_cases(), ids=lambda v: v if isinstance(v, str) else v["name"])
def test_the_python_runtime_makes_the_recorded_calls_and_decisions(family, case, images, tmp_path):
    golden = load(f"{family}.json")
    (tmp_path / MANIFEST_FILE).write_text((GOLDEN / golden["manifest"]).read_text())
    backend = Replay()
    session = Session(tmp_path, read_manifest(tmp_path), backend, device=golden["device"])
    backend.calls = case["calls"]
    try:
        result = session.run(images[case["images"]], **case["request"])
    except (ValueError, BudgetError) as error:
        assert str(error) == case.get("error"), "the runtime refuses a request the vectors ran, or another way"
    else:
        assert "error" not in case, f"the runtime ran a request the vectors refuse: {case['error']}"
        assert result.paths == case["result"]["paths"]
        assert result.macs.tolist() == case["result"]["macs"]
        np.testing.assert_array_equal(result.logits, decode(case["result"]["logits"]))
    assert backend.next == len(case["calls"]), "fewer graph calls than recorded"


def test_the_python_reader_refuses_each_damaged_manifest_with_the_recorded_message(tmp_path):
    damaged = load("damaged.json")
    placeholder = damaged["placeholders"]["manifest"]
    for case in damaged["manifests"]:
        if "text" in case:
            text = case["text"]
        else:
            manifest = load(f"{case['family']}.manifest.json")
            for edit in case["edits"]:
                manifest = make_golden.apply_edit(manifest, edit)
            text = json.dumps(manifest)
        (tmp_path / MANIFEST_FILE).write_text(text)
        with pytest.raises(BundleError) as error:
            read_manifest(tmp_path)
        assert str(error.value).replace(str(tmp_path / MANIFEST_FILE), placeholder) == case["message"], case["name"]


@pytest.mark.parametrize("case", load("damaged.json")["accepted"], ids=lambda case: case["name"])
def test_the_python_reader_accepts_each_edited_manifest_with_the_recorded_values(case, tmp_path):
    """The other half of damaged.json: what the Kotlin core must accept, the Python reader still accepts, alike."""
    manifest = load(f"{case['family']}.manifest.json")
    for edit in case["edits"]:
        manifest = make_golden.apply_edit(manifest, edit)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert make_golden.parsed_fields(read_manifest(tmp_path)) == case["parsed"]


def test_the_python_reader_checks_the_damaged_bundles_files_as_recorded(tmp_path):
    damaged = load("damaged.json")
    for i, case in enumerate(damaged["bundles"]):
        bundle = tmp_path / str(i)
        bundle.mkdir()
        for file, content in case["files"].items():
            (bundle / file).write_bytes(base64.b64decode(content))
        try:
            open_bundle(bundle)
            message = None
        except BundleError as error:
            message = str(error).replace(str(bundle), damaged["placeholders"]["bundle"])
        assert message == case["message"], case["name"]
