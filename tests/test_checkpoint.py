"""Checkpoints: weights_only-loadable state dicts, atomic writes, and errors that name the file."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import pytest
import torch
from helpers import copy_tree, current_umask, read_json, write_json

from trainer import checkpoint as checkpoint_module
from trainer.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, read_config, save_checkpoint
from trainer.families.drnet import DRNet, DRNetOptions, build


def small_config() -> dict:
    options = DRNetOptions(resolutions=(32, 16))
    model = {"depth": 8, "width": 8, "num_classes": 10, "options": dataclasses.asdict(options)}
    return {"family": "drnet", "recipe": "test", "model": model, "data": {"dataset": "digits"}}


@pytest.fixture
def saved(tmp_path):
    """A freshly built model with non-default weights, saved to tmp_path/ckpt."""
    torch.manual_seed(0)
    config = small_config()
    model = build(config["model"])
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.1 + 1.0)
    model.eval()
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, model, config)
    return directory, model, config


def test_weights_load_with_plain_torch_weights_only(saved):
    directory, model, _ = saved
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert isinstance(state, dict)
    assert state.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name


def test_the_session_checkpoint_loads_with_weights_only(checkpoint_dir):
    state = torch.load(checkpoint_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    config = read_json(checkpoint_dir / CONFIG_FILE)
    assert config["config_version"] == 1 and config["family"] == "drnet"
    assert {"model", "data", "training", "metrics"} <= config.keys()


def test_load_checkpoint_round_trips_outputs_exactly(saved):
    directory, model, config = saved
    loaded, loaded_config = load_checkpoint(directory)
    assert isinstance(loaded, DRNet)
    assert not loaded.training, "load_checkpoint returns the model in eval mode"
    assert loaded_config["config_version"] == 1
    for key, value in json.loads(json.dumps(config)).items():
        assert loaded_config[key] == value, key
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a, b = model.infer(x), loaded.infer(x)
    assert torch.equal(a.logits, b.logits)
    assert a.paths == b.paths
    assert torch.equal(a.macs, b.macs)


def test_no_temporary_files_are_left_behind(saved):
    directory, model, config = saved
    save_checkpoint(directory, model, config)  # overwrite in place
    assert sorted(p.name for p in directory.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_an_interrupted_save_leaves_no_temporary_file_and_keeps_the_old_weights(saved, monkeypatch, interrupt):
    directory, model, config = saved
    old_weights = (directory / WEIGHTS_FILE).read_bytes()

    def half_written_save(obj, path):
        with open(path, "wb") as stream:
            stream.write(b"half a checkpoint")
        raise interrupt("interrupted")

    monkeypatch.setattr(checkpoint_module.torch, "save", half_written_save)
    with pytest.raises(interrupt):
        save_checkpoint(directory, model, config)
    assert sorted(p.name for p in directory.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    assert (directory / WEIGHTS_FILE).read_bytes() == old_weights


def test_missing_config_is_named(saved):
    directory, _, _ = saved
    (directory / CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=str(directory / CONFIG_FILE)):
        load_checkpoint(directory)


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere" / CONFIG_FILE)):
        load_checkpoint(tmp_path / "nowhere")


def test_corrupt_config_json_is_named(saved):
    directory, _, _ = saved
    (directory / CONFIG_FILE).write_text('{"config_version": 1, "family": ')
    with pytest.raises(ValueError, match=f"{directory / CONFIG_FILE}: not valid JSON"):
        load_checkpoint(directory)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_wrong_config_version_is_named(saved, version):
    directory, _, _ = saved
    config = read_json(directory / CONFIG_FILE)
    if version is None:
        del config["config_version"]
    else:
        config["config_version"] = version
    write_json(directory / CONFIG_FILE, config)
    with pytest.raises(ValueError, match=f"{directory / CONFIG_FILE}: config_version"):
        read_config(directory)
    with pytest.raises(ValueError, match="config_version"):
        load_checkpoint(directory)


@pytest.mark.parametrize(("field", "value"), [("depth", 14), ("width", 16)])
def test_weights_that_do_not_fit_the_config_are_named(saved, field, value):
    directory, _, _ = saved
    config = read_json(directory / CONFIG_FILE)
    config["model"][field] = value
    write_json(directory / CONFIG_FILE, config)
    with pytest.raises(ValueError, match=f"{directory / WEIGHTS_FILE}: weights do not fit"):
        load_checkpoint(directory)


def test_missing_weights_are_named(saved):
    directory, _, _ = saved
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=str(directory / WEIGHTS_FILE)):
        load_checkpoint(directory)


def test_garbage_weights_are_named(saved):
    directory, _, _ = saved
    (directory / WEIGHTS_FILE).write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(ValueError, match=f"{directory / WEIGHTS_FILE}: unreadable"):
        load_checkpoint(directory)


def test_empty_weights_say_so(saved):
    directory, _, _ = saved
    (directory / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(ValueError, match=f"{directory / WEIGHTS_FILE}: unreadable .*: the file is empty or cut short"):
        load_checkpoint(directory)


def test_an_unknown_family_is_named(saved):
    directory, _, _ = saved
    config = read_json(directory / CONFIG_FILE)
    config["family"] = "fakenet"
    write_json(directory / CONFIG_FILE, config)
    with pytest.raises(ValueError, match="'fakenet'"):
        load_checkpoint(directory)


class Payload:
    """Unpickling this would run os.system: the classic malicious checkpoint."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Innocent:
    def __init__(self) -> None:
        self.weights = torch.zeros(2)


def test_a_pickled_payload_is_refused_without_running_it(saved, tmp_path):
    directory, model, _ = saved
    marker = tmp_path / "payload-ran"
    state = dict(model.state_dict())
    state["backbone.head[-1].weight"] = Payload(marker)
    torch.save(state, directory / WEIGHTS_FILE)
    assert not marker.exists(), "saving must not run the payload"
    # The file really is a live payload: plain pickle loading would have run it.
    with pytest.raises(ValueError, match=f"{directory / WEIGHTS_FILE}: unreadable"):
        load_checkpoint(directory)
    assert not marker.exists(), "load_checkpoint executed code from the weights file"


def test_the_payload_is_live_under_full_unpickling(tmp_path):
    """Guard for the test above: without weights_only the same file would run its payload."""
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_an_arbitrary_class_instance_is_refused(saved):
    directory, _, _ = saved
    torch.save({"model": Innocent()}, directory / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=f"{directory / WEIGHTS_FILE}: unreadable"):
        load_checkpoint(directory)


def test_a_raw_pickle_is_refused(saved, tmp_path):
    directory, _, _ = saved
    marker = tmp_path / "raw-payload-ran"
    (directory / WEIGHTS_FILE).write_bytes(pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(ValueError, match=str(directory / WEIGHTS_FILE)):
        load_checkpoint(directory)
    assert not marker.exists()


def test_a_copied_session_checkpoint_still_loads(checkpoint_dir, tmp_path):
    copy = copy_tree(checkpoint_dir, tmp_path / "copy")
    model, config = load_checkpoint(copy)
    assert config["recipe"] == "drnet-digits" and isinstance(model, DRNet)


def test_checkpoint_files_get_ordinary_permissions(saved):
    directory, _, _ = saved
    expected = 0o666 & ~current_umask()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        assert (directory / name).stat().st_mode & 0o777 == expected, name


def test_weights_from_another_save_are_refused(saved, tmp_path):
    directory, model, config = saved
    with torch.no_grad():
        model.backbone.head[-1].bias.add_(1.0)
    other = tmp_path / "other"
    save_checkpoint(other, model, config)
    (directory / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ValueError, match=f"{directory / WEIGHTS_FILE}: sha256 differs"):
        load_checkpoint(directory)


def test_a_published_checkpoint_keeps_the_model_and_its_record_without_companions(saved, tmp_path):
    from trainer.checkpoint import load_extras, publish_checkpoint

    directory, model, config = saved
    companion = build(config["model"])
    save_checkpoint(directory, model, {**config, "metrics": {"accuracy": 0.5}}, extras={"baseline": companion})
    published = publish_checkpoint(directory, tmp_path / "published")
    assert sorted(p.name for p in published.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    loaded, record = load_checkpoint(published)
    assert record["metrics"] == {"accuracy": 0.5} and record["extras"] == [] and load_extras(published, record) == {}
    weights = loaded.state_dict()
    assert all(torch.equal(weights[name], tensor) for name, tensor in model.state_dict().items())
    written = (published / WEIGHTS_FILE).read_bytes()
    publish_checkpoint(directory, published)  # the same model again: the committed bytes stay
    assert (published / WEIGHTS_FILE).read_bytes() == written


def test_a_damaged_checkpoint_is_not_published(saved, tmp_path):
    from trainer.checkpoint import publish_checkpoint

    directory, _, _ = saved
    write_json(directory / CONFIG_FILE, read_json(directory / CONFIG_FILE) | {"weights_sha256": "0" * 64})
    with pytest.raises(ValueError, match="sha256 differs"):
        publish_checkpoint(directory, tmp_path / "published")
    assert not (tmp_path / "published").exists()
