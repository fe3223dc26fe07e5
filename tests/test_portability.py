"""Runs anywhere: Windows and macOS, the version floor, Apple's GPU, and the GPU choices, tested
with the facts of machines we do not have (a GTX 1650, a T4, an A100, an H100)."""

import re
import sys

import psutil  # imported here, before a test pretends to be on another platform
import pytest
import torch

from conftest import CPU, REPO_ROOT, load_definitions


@pytest.mark.parametrize("platform", ["win32", "darwin", "linux"])
def test_definitions_load_and_read_memory_without_resource(monkeypatch, platform):
    """Windows has no `resource` module: the definitions still load, psutil reads the memory."""
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` now raises ImportError
    monkeypatch.setattr(sys, "platform", platform)
    definitions = load_definitions()
    assert definitions.device_facts(torch.device("cpu"))["platform"] == platform
    peak = definitions.process_peak_memory_mb()
    assert peak == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=0.5)


def test_peak_memory_is_in_mb_on_linux(nb):
    rss_mb = psutil.Process().memory_info().rss / 2**20
    assert rss_mb * 0.9 <= nb.process_peak_memory_mb() <= rss_mb * 20  # KiB read as KiB, not bytes


def test_the_declared_torch_floor_is_the_one_the_code_checks(nb):
    floor = re.search(r"^torch>=(\d+)\.(\d+)", (REPO_ROOT / "requirements.txt").read_text(), re.M)
    assert floor and tuple(map(int, floor.groups())) == nb.MIN_TORCH


def test_pick_device_prefers_cuda_then_mps_then_cpu(nb, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert nb.pick_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert nb.pick_device().type == "cpu"


def test_relative_paths_are_the_repository_s_or_jupyter_s(nb, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT / "notebooks")
    assert nb.resolve_path(None, "checkpoints") == REPO_ROOT / "checkpoints"
    monkeypatch.chdir(tmp_path)  # the notebook copied alone, outside the repository
    assert nb.resolve_path(None, "checkpoints") == tmp_path / "checkpoints"
    assert nb.resolve_path(str(tmp_path / "x"), "checkpoints") == tmp_path / "x"


def card(name, memory_gib, capability):
    return dict(type="cuda", name=name, memory_gib=memory_gib, capability=capability)


@pytest.mark.parametrize(
    "facts, precision, size",
    [
        (card("NVIDIA GeForce GTX 1650", 3.8, (7, 5)), "fp16", "2x512, adaptive softmax"),
        (card("Tesla T4", 14.6, (7, 5)), "fp16", "3x1500 projected to 400, full softmax"),
        (
            card("NVIDIA A100-SXM4-40GB", 39.4, (8, 0)),
            "bf16",
            "3x1500 projected to 400, full softmax",
        ),
        (
            card("NVIDIA H100 80GB HBM3", 79.1, (9, 0)),
            "bf16",
            "3x1500 projected to 400, full softmax",
        ),
        (card("Tesla P100", 16.0, (6, 0)), "fp32", "3x1500 projected to 400, full softmax"),
    ],
)
def test_each_card_gets_a_precision_and_a_size(nb, facts, precision, size):
    config = nb.resolve_preset("auto", facts)
    assert config["preset"] == "gpu" and config["precision"] == precision
    data = torch.zeros(64, 100, dtype=torch.long)
    chosen = nb.calibrate(config, 33_278, data, 1_000, facts)  # no measurement on a GPU
    assert chosen["size_label"] == size and chosen["precision"] == precision
    model = nb.build_model(chosen, 33_278)
    assert model.adaptive == size.endswith("adaptive softmax")


def test_the_large_gpu_model_is_the_30_million_weight_one(nb):
    config = nb.calibrate(
        nb.resolve_preset("gpu", card("A100", 40, (8, 0))),
        33_278,
        torch.zeros(2, 10, dtype=torch.long),
        10,
        card("A100", 40, (8, 0)),
    )
    assert 25e6 < nb.count_weights(config, 33_278) < 35e6


def test_settings_that_cannot_run_here_are_refused_with_the_way_out(nb):
    mps = dict(type="mps", name="MPS", capability=None)
    assert nb.resolve_preset("auto", mps)["precision_candidates"] == ["fp32"]
    with pytest.raises(ValueError, match="Apple GPU.*'cpu'"):
        nb.resolve_preset("gpu", mps)
    with pytest.raises(ValueError, match="PRECISION"):
        nb.resolve_preset("cpu", CPU, precision="fp16")  # float16 autocast: NVIDIA GPUs only
    with pytest.raises(ValueError, match="PRECISION"):
        nb.resolve_preset("gpu", card("T4", 16, (7, 5)), precision="bf16")  # no bf16 before 8.0
    with pytest.raises(ValueError, match="PRESET must be 'auto' or one of"):
        nb.resolve_preset("turbo", CPU)
    with pytest.raises(ValueError, match="EPOCHS"):
        nb.resolve_preset("cpu", CPU, epochs=0)
    with pytest.raises(ValueError, match="TIME_BUDGET_S"):
        nb.resolve_preset("cpu", CPU, time_budget_s=float("inf"))
    forced = nb.resolve_preset("cpu", CPU, precision="bf16", epochs=3, time_budget_s=60)
    assert forced["precision_candidates"] == ["bf16"] and forced["epochs"] == 3
    assert forced["time_budget_s"] == 60
