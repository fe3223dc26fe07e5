"""Runs anywhere: Windows and macOS imports, the version floor, portable peak memory, Apple's GPU,
bounded memory (chunked scoring), and the precision calibration."""

import math
import re
import sys

import psutil  # imported here, before a test pretends to be on another platform
import pytest
import torch

from conftest import REPO_ROOT, load_definitions


def laptop(kind, name, platform):
    """The device facts of a 16 GB, 8-thread laptop."""
    return dict(type=kind, name=name, memory_gib=16.0, capability=None, cpu_threads=8,
                platform=platform)  # fmt: skip


CPU = laptop("cpu", "a laptop CPU", "win32")
MPS = laptop("mps", "Apple GPU (MPS)", "darwin")


@pytest.mark.parametrize("platform", ["win32", "darwin", "linux"])
def test_definitions_load_without_resource_on_any_platform(nb, monkeypatch, platform):
    """Windows has no `resource` module: the definitions must still load and still measure
    memory."""
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` now raises ImportError
    monkeypatch.setattr(sys, "platform", platform)
    definitions = load_definitions()
    assert definitions.resource is None
    assert definitions.device_facts(torch.device("cpu"))["platform"] == platform
    peak = definitions.process_peak_memory_mb()  # psutil's reading instead
    assert peak is not None and 10 < peak < 100_000
    assert peak == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=0.5)


def test_peak_memory_units_on_macos_and_linux(nb, monkeypatch):
    """ru_maxrss is KiB on Linux and bytes on macOS: both must come out in MB."""
    import resource

    raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    monkeypatch.setattr(sys, "platform", "linux")
    linux = nb.process_peak_memory_mb()
    monkeypatch.setattr(sys, "platform", "darwin")
    macos = nb.process_peak_memory_mb()
    assert linux == pytest.approx(raw / 1024, rel=0.05) and macos == pytest.approx(
        linux / 1024, rel=0.05
    )


def test_the_declared_torch_floor_is_the_one_the_code_checks(nb):
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    floor = re.search(r"^torch>=(\d+)\.(\d+)", requirements, re.MULTILINE)
    assert floor and tuple(map(int, floor.groups())) == nb.MIN_TORCH
    assert tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2]) >= nb.MIN_TORCH
    assert hasattr(torch.amp, "GradScaler")  # used by the float16 path


def test_apple_gpu_gets_a_preset_it_can_run(nb):
    config = nb.resolve_preset("auto", MPS)
    assert config["preset"] == "cpu" and config["proj_size"] == 0  # no LSTM projections on MPS
    assert config["precision_candidates"] == ["fp32"] and not config["tf32"]
    with pytest.raises(ValueError, match="MPS"):
        nb.resolve_preset("gpu", MPS)  # LSTMP: refused with a way out
    with pytest.raises(ValueError, match="not available"):
        nb.resolve_preset("cpu", MPS, precision="bf16")


def test_pick_device_prefers_cuda_then_mps_then_cpu(nb, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert nb.pick_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert nb.pick_device().type == "cpu"


def test_precision_parameter_is_checked(nb):
    assert nb.resolve_preset("cpu", CPU)["precision_candidates"] == ["fp32", "bf16"]
    forced = nb.resolve_preset("cpu", CPU, precision="fp32")
    assert forced["precision"] == "fp32" and forced["precision_candidates"] == ["fp32"]
    assert nb.resolve_preset("pytorch_examples", CPU)["precision_candidates"] == [
        "fp32"
    ]  # the baseline as published
    with pytest.raises(ValueError, match="PRECISION must be"):
        nb.resolve_preset("cpu", CPU, precision="half")
    with pytest.raises(ValueError, match="not available"):
        nb.resolve_preset("cpu", CPU, precision="fp16")  # float16 autocast is for CUDA


def measured(tokens_per_second, losses=(10.4, 10.3), error=None):
    return {"tokens_per_second": tokens_per_second, "losses": list(losses), "error": error}


@pytest.mark.parametrize(
    "bf16, expected",
    [
        (measured(750), "fp32"),  # emulated bf16: a laptop CPU
        (
            measured(None, (), "RuntimeError: could not create a primitive"),
            "fp32",
        ),  # bf16 LSTM refused
        (measured(20_000, (10.4, float("nan"))), "fp32"),  # not finite
        (measured(20_000, (10.4, 10.9)), "fp32"),  # trains differently
        (measured(10_500), "fp32"),  # 5 % faster: not worth the precision
        (measured(20_000, (10.41, 10.32)), "bf16"),  # bf16 units: twice as fast, same loss
    ],
)
def test_choose_precision_from_measurements(nb, bf16, expected):
    chosen, rejected = nb.choose_precision({"fp32": measured(10_000), "bf16": bf16})
    assert chosen == expected
    assert (expected == "bf16") == ("bf16" not in rejected)


def test_calibration_on_a_cpu_without_bf16_units_picks_float32(nb):
    """oneDNN off removes the CPU's bf16 acceleration, as laptop CPUs lack it: float32 wins."""
    config = dict(nb.resolve_preset("cpu", CPU), sizes=None)
    torch.manual_seed(0)
    train_data = nb.batchify(torch.randint(0, 33_278, (64 * 200,)), 64)  # (64, 200)
    with torch.backends.mkldnn.flags(enabled=False):
        calibrated = nb.calibrate(config, 33_278, train_data, 2_000, CPU, max_seconds=12.0)
    report = calibrated["calibration"]
    assert calibrated["precision"] == "fp32", nb.describe_calibration(calibrated)
    assert report["precision"]["fp32"]["tokens_per_second"] > 1.1 * (
        report["precision"]["bf16"]["tokens_per_second"] or 0
    )
    assert calibrated["time_budget_s"] == pytest.approx(
        600 - report["seconds"]
    )  # counted in the budget
    assert "float32" in nb.describe_calibration(calibrated)


def test_cpu_size_follows_the_measured_speed(nb):
    """The largest size expected to see 2 training tokens per parameter: 2x256 on this CPU with
    or without bf16 units (speeds measured here), 2x128 on a much slower one."""
    rungs = nb.size_rungs(nb.resolve_preset("cpu", CPU))
    assert [r["label"] for r in rungs] == ["2x128", "2x192", "2x256", "2x384", "2x512"]
    tokens = (2_088_628, 217_646)
    bf16_units = [40_000, 30_000, 21_000, 12_500, None]  # 2x256: 21,214 and 2x384: 12,557 measured
    index, rows = nb.choose_size(rungs, bf16_units, 580, *tokens, 8.0, 33_278)
    assert rows[index]["label"] == "2x256" and rows[index]["tokens_per_parameter"] >= 2
    assert not rows[3]["good"] and rows[3]["tokens_per_parameter"] < 2  # 2x384: too few tokens
    float32 = [20_333, 12_059, 9_350, 5_840, None]  # measured with oneDNN off
    index, rows = nb.choose_size(rungs, float32, 580, *tokens, 8.0, 33_278)
    assert rows[index]["label"] == "2x256"
    slow = [3_000, 2_000, 1_200, None, None]
    index, rows = nb.choose_size(rungs, slow, 580, *tokens, 8.0, 33_278)
    assert rows[index]["label"] == "2x128" and rows[index]["good"]
    index, rows = nb.choose_size(rungs, [1_500, 1_000, None, None, None], 580, *tokens, 8.0, 33_278)
    assert rows[index]["label"] == "2x128" and not rows[index]["good"]  # none is: the smallest
    index, rows = nb.choose_size(rungs, float32, 580, *tokens, 0.001, 33_278)
    assert index == 0 and not rows[0]["fits"]  # nothing fits the memory: the smallest, said so


@pytest.mark.parametrize("adaptive", [None, [40, 120]])
def test_chunked_scoring_equals_scoring_everything(nb, adaptive):
    torch.manual_seed(0)
    model = nb.LSTMLanguageModel(
        300, embedding_dim=16, hidden_dim=16, adaptive_cutoffs=adaptive
    ).eval()
    ids = torch.randint(0, 300, (3, 11))
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])  # (3, 10, 300): every word scored
        everything = logits.log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
        chunked, _ = model.target_log_probs(ids[:, :-1], ids[:, 1:], chunk=7)
        last, _ = model(ids[:, :-1], last_only=True)  # (3, 300)
    assert torch.allclose(chunked, everything, atol=1e-5)
    assert torch.allclose(last, logits[:, -1], atol=1e-5)


def test_real_text_statistics_do_not_depend_on_the_chunk(nb, trained_tiny, tiny_vocab, tiny_corpus):
    ids = torch.tensor(tiny_vocab.encode(tiny_corpus["test"]))
    one = nb.real_text_statistics(
        trained_tiny, tiny_vocab, ids, 12, 10, context=5, seed=0, chunk=1000
    )
    many = nb.real_text_statistics(
        trained_tiny, tiny_vocab, ids, 12, 10, context=5, seed=0, chunk=5
    )
    assert one == pytest.approx(many, rel=1e-6)


def test_mixed_precision_steps_run_and_a_failing_precision_is_reported(nb, tiny_vocab, tiny_corpus):
    """bf16 autocast, and float16 autocast with its gradient scaler (NVIDIA 7.x cards' path),
    train; a precision the machine cannot run comes back as an error to skip, not an exception."""
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["train"]), 4)
    config = dict(nb.resolve_preset("smoke", CPU), adaptive_cutoffs=[50, 150])
    result = nb.measure_training_speed(
        dict(config, precision="bf16"), len(tiny_vocab), data, steps=2
    )
    assert result["error"] is None and all(math.isfinite(loss) for loss in result["losses"]), result
    with torch.backends.mkldnn.flags(enabled=False):  # the CPU's own float16 LSTM (oneDNN has none)
        result = nb.measure_training_speed(
            dict(config, precision="fp16"), len(tiny_vocab), data, steps=2
        )
    assert result["error"] is None and all(math.isfinite(loss) for loss in result["losses"]), result
    with torch.backends.mkldnn.flags(enabled=True):
        refused = nb.measure_training_speed(
            dict(config, precision="fp16"), len(tiny_vocab), data, steps=2
        )
    if refused["error"]:  # oneDNN refuses a float16 LSTM on this CPU
        assert refused["tokens_per_second"] is None and "RuntimeError" in refused["error"]
        assert nb.choose_precision({"fp32": measured(1000), "fp16": refused})[0] == "fp32"
