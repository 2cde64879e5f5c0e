"""Training under torchrun, on CPU with the gloo backend: ranks stay identical and match one process.

The reference for N ranks is one process that takes the same global batch as
N micro-batches, one per rank, and averages their gradients. That is what DDP
computes: each rank's BN normalizes by its own micro-batch's statistics, so a
single forward over the whole batch (one set of statistics) is not the
reference, whatever the tolerance.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import saved_step, script_module, slow_except
from torch.utils.data import DistributedSampler

from trainer.backbone import cifar_resnet
from trainer.data import load_split
from trainer.families import FAMILIES, blockdrop, get_family
from trainer.loop import OPTIMIZERS, SCHEDULES, Phase, pretrain_backbone, train_phase
from trainer.recipes import get_recipe
from trainer.resume import STATE_FILE
from trainer.train import training_loader

WORLD = 2
BATCH = 64  # global: 32 per rank
SUBSET = 256  # four steps an epoch
PHASE = Phase(epochs=2, lr=0.05, schedule="cosine")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, job, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.save(job(rank), out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def on_ranks(job, tmp_path: Path) -> list[dict]:
    """`job(rank)` on WORLD processes joined by gloo; each returns a dict of tensors and numbers."""
    mp.spawn(_rank, args=(_free_port(), job, tmp_path), nprocs=WORLD)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def micro_batches(epochs: int) -> list[list[list[int]]]:
    """Per step, each rank's sample indices, in the order a DistributedSampler deals them."""
    samplers = [DistributedSampler(range(SUBSET), num_replicas=WORLD, rank=r, seed=0, drop_last=True)
                for r in range(WORLD)]
    steps = []
    for epoch in range(epochs):
        orders = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            orders.append(list(sampler))
        per_rank = BATCH // WORLD
        steps += [[order[i : i + per_rank] for order in orders] for i in range(0, len(orders[0]), per_rank)]
    return steps


def reference(model: torch.nn.Module, loss_fn, params, seed: int) -> tuple[dict, dict]:
    """One process: each step averages the gradients of the ranks' micro-batches, each with that rank's RNG.

    Returns the final state and the mean of each step's logs. One thread, as each rank: the same arithmetic.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _reference(model, loss_fn, params, seed)
    finally:
        torch.set_num_threads(threads)


def _reference(model: torch.nn.Module, loss_fn, params, seed: int) -> tuple[dict, dict]:
    data, _ = load_split("digits", "train", subset=SUBSET)
    optimizer = OPTIMIZERS[PHASE.optimizer]([{"params": params, "lr": PHASE.lr}], PHASE.weight_decay)
    steps = micro_batches(PHASE.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: SCHEDULES[PHASE.schedule](PHASE, i, len(steps)))
    rng = []
    for rank in range(WORLD):
        torch.manual_seed(seed + rank)
        rng.append(torch.get_rng_state())
    logged = []
    model.train()
    for step in steps:
        optimizer.zero_grad()
        for rank, indices in enumerate(step):
            images, labels = map(torch.stack, zip(*(data[i] for i in indices)))
            torch.set_rng_state(rng[rank])
            loss, logs = loss_fn(images.contiguous(memory_format=torch.channels_last), labels)
            rng[rank] = torch.get_rng_state()
            (loss / WORLD).backward()
            logged.append(logs)
        optimizer.step()
        scheduler.step()
    means = {name: sum(logs[name] for logs in logged) / len(logged) for name in logged[0]}
    return model.state_dict(), means


def _backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return cifar_resnet(8, num_classes=10, width=8).to(memory_format=torch.channels_last)


def _plain_job(rank: int) -> dict:
    backbone = _backbone()
    loader, _ = training_loader("digits", BATCH, subset=SUBSET, seed=0)
    torch.manual_seed(100 + rank)
    pretrain_backbone(backbone, loader, phase=PHASE, device=torch.device("cpu"))
    return {"state": backbone.state_dict(), "batch": loader.batch_size}


def test_ranks_end_identical_and_equal_one_process_averaging_their_micro_batches(tmp_path):
    ranks = on_ranks(_plain_job, tmp_path)
    assert [r["batch"] for r in ranks] == [BATCH // WORLD] * WORLD, "each rank takes its share of the global batch"

    backbone = _backbone()
    initial = {k: v.clone() for k, v in backbone.state_dict().items()}
    expected, _ = reference(backbone, lambda x, y: (torch.nn.functional.cross_entropy(backbone(x), y), {}),
                            backbone.parameters(), seed=100)
    for name, parameter in backbone.named_parameters():
        first, second = ranks[0]["state"][name], ranks[1]["state"][name]
        assert torch.equal(first, second), f"{name} differs between the ranks"
        assert not torch.equal(first, initial[name]), f"{name} did not train"
        torch.testing.assert_close(first, expected[name], rtol=1e-4, atol=1e-5, msg=f"{name}: DDP != reference")


def _blockdrop_model() -> blockdrop.BlockDrop:
    torch.manual_seed(0)
    model = get_family("blockdrop").build({
        "backbone": "cifar-resnet", "depth": 8, "width": 8, "shortcut": "zero-pad", "num_classes": 10,
        "options": {**dataclasses.asdict(get_recipe("blockdrop-digits").options), "policy_depth": 8, "policy_width": 8},
    })
    return model.to(memory_format=torch.channels_last)


def _reinforce_loss(model: blockdrop.BlockDrop):
    learned = torch.ones(model.num_blocks)
    return lambda x, y: blockdrop._policy_step(model, x, y, learned, gamma=5.0, joint=True)


def _reinforce_job(rank: int) -> dict:
    model = _blockdrop_model()
    loader, _ = training_loader("digits", BATCH, subset=SUBSET, seed=0)
    torch.manual_seed(200 + rank)  # each rank samples its own policies
    history = train_phase(model, loader, _reinforce_loss(model), phase=PHASE,
                          param_groups=[{"params": model.parameters()}], device=torch.device("cpu"), desc="test")
    return {"state": model.state_dict(), "history": history}


def test_a_reinforce_step_under_ddp_averages_rewards_and_gradients_over_ranks(tmp_path):
    """BlockDrop's self-critical baseline is per image (its greedy policy), so it needs no reduction;
    the policy gradient and the logged reward are the means over every rank's images."""
    ranks = on_ranks(_reinforce_job, tmp_path)
    model = _blockdrop_model()
    expected, logged = reference(model, _reinforce_loss(model), model.parameters(), seed=200)
    for name, _ in model.named_parameters():
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), f"{name} differs between the ranks"
        torch.testing.assert_close(ranks[0]["state"][name], expected[name], rtol=1e-4, atol=1e-5,
                                   msg=f"{name}: DDP != reference")
    reported = ranks[0]["history"]
    assert reported == ranks[1]["history"], "every rank reports the same reduced means"
    for name in ("reward", "blocks", "ce"):
        mean = sum(epoch[name] for epoch in reported) / len(reported)  # equal steps per epoch
        assert mean == pytest.approx(logged[name], rel=1e-5), f"{name}: not the mean over both ranks' images"


def _skipping_job(rank: int) -> dict:
    """A loss that trains nothing on some steps (None), as URNet's binary-gate iterations in its gates phase:
    the draw comes from a generator seeded alike on every rank, so all ranks skip the same steps."""
    backbone = _backbone()
    loader, _ = training_loader("digits", BATCH, subset=SUBSET, seed=0)
    draws = torch.Generator().manual_seed(7)

    def loss_fn(x, y):
        if bool(torch.rand(1, generator=draws) < 0.5):
            return None, {}
        loss = torch.nn.functional.cross_entropy(backbone(x), y)
        return loss, {"ce": loss.item()}

    history = train_phase(backbone, loader, loss_fn, phase=PHASE, param_groups=[{"params": backbone.parameters()}],
                          device=torch.device("cpu"), desc="test")  # DDP as every phase that trains all it holds
    return {"state": backbone.state_dict(), "history": history}


def test_steps_that_train_nothing_are_skipped_alike_on_every_rank(tmp_path):
    ranks = on_ranks(_skipping_job, tmp_path)
    initial = dict(_backbone().named_parameters())
    for name in initial:  # parameters: BN running statistics follow each rank's own micro-batches
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), f"{name} differs between the ranks"
    assert all(not torch.equal(ranks[0]["state"][n], initial[n]) for n in initial), "a parameter did not train"
    draws = torch.Generator().manual_seed(7)
    steps = len(micro_batches(PHASE.epochs))
    trained = sum(not bool(torch.rand(1, generator=draws) < 0.5) for _ in range(steps))
    shares = [epoch["trained"] for epoch in ranks[0]["history"]]
    assert 0 < trained < steps and sum(shares) / len(shares) == pytest.approx(trained / steps)


def _urnet_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_family("urnet").build({
        "backbone": "cifar-resnet", "depth": 8, "width": 8, "shortcut": "zero-pad", "num_classes": 10,
        "options": {"soft_probability": 0.5},  # the paper's mode
    }).to(memory_format=torch.channels_last)


def _urnet_gates_job(rank: int) -> dict:
    """URNet's gate phase in the paper's mode: only its sigmoid iterations train, alike on every rank."""
    model = _urnet_model()
    loader, _ = training_loader("digits", BATCH, subset=SUBSET, seed=0)
    off = dataclasses.replace(PHASE, epochs=0)
    gates = Phase(epochs=2, lr=1e-2, optimizer="adam", weight_decay=0.0)
    get_family("urnet").fit(model, loader, phases={"pretrain": off, "joint": off, "gates": gates},
                            device=torch.device("cpu"))
    return {"state": model.gates.state_dict()}


def test_urnet_paper_mode_gates_train_alike_on_every_rank(tmp_path):
    ranks = on_ranks(_urnet_gates_job, tmp_path)
    initial = _urnet_model().gates.state_dict()
    for name, tensor in ranks[0]["state"].items():
        assert torch.equal(tensor, ranks[1]["state"][name]), f"{name} differs between the ranks"
        assert not torch.equal(tensor, initial[name]), f"{name} did not train"


# --- the command line, under torchrun -----------------------------------------------------------------------

def torchrun(*args: str, **options) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={WORLD}",
               f"--master-port={_free_port()}", "-m", "trainer", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **options)


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.mark.parametrize("recipe", slow_except([f"{family}-digits" for family in FAMILIES],
                                              "blockdrop-digits", "drnet-digits", "urnet-digits"))
def test_every_family_trains_under_torchrun_and_only_the_main_rank_writes(recipe, tmp_path):
    """DDP refuses a step whose parameters got no gradient unless the phase says so (skips_parameters):
    training every family's every phase on two ranks checks those declarations."""
    output = finished(torchrun("--recipe", recipe, "--epochs", "4", "--subset", str(SUBSET), "--out", str(tmp_path)))
    assert output.count("test images") == 1, "only the main rank prints the results"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["training"]["processes"] == WORLD
    assert not (tmp_path / STATE_FILE).exists()


def test_a_distributed_run_killed_mid_epoch_resumes_to_identical_weights(tmp_path):
    """BlockDrop: each rank samples its own policies, so the save must hold every rank's RNG state."""
    args = ["--recipe", "blockdrop-digits", "--epochs", "3", "--subset", str(SUBSET), "--checkpoint-every", "3"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    finished(torchrun(*args, "--out", str(whole)))

    process = torchrun(*args, "--out", str(killed))
    deadline = time.monotonic() + 300
    while (saved := saved_step(killed)) is None or saved[:2] != (1, 0) or not 0 < saved[2] < 4:
        assert process.poll() is None, f"the run ended before a mid-epoch save in phase 1 (last seen: {saved})"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    script_module("gpu_check").kill_with_ranks(process)
    assert torch.load(killed / STATE_FILE, weights_only=True)["world_size"] == WORLD

    single = subprocess.run([sys.executable, "-m", "trainer", "--resume", str(killed)], capture_output=True, text=True)
    assert single.returncode == 2 and "saved by 2 process(es)" in single.stderr, single.stderr[-2000:]

    finished(torchrun("--resume", str(killed)))
    for path in whole.glob("*.pt"):
        expected, actual = torch.load(path, weights_only=True), torch.load(killed / path.name, weights_only=True)
        assert expected.keys() == actual.keys()
        for key, value in expected.items():
            assert torch.equal(value, actual[key]), f"{path.name}: {key} differs after resuming"
    assert json.loads((killed / "config.json").read_text())["training"]["resumed"] is True
