"""The long run: schedule, validation and checkpoints, stops, resume, calibration, precision."""

import math
import time

import pytest
import torch

from conftest import CPU, tiny_config, tiny_run


def test_schedule_warms_up_from_above_zero_then_decays_to_the_floor(nb):
    config = dict(lr=1.0, warmup_fraction=0.1, final_lr_fraction=0.05)
    assert nb.get_lr(0.05, config) == pytest.approx(0.5)
    assert nb.get_lr(0.1, config) == pytest.approx(1.0)
    assert nb.get_lr(1.0, config) == pytest.approx(0.05)
    assert nb.get_lr(0.55, config) == pytest.approx(0.05 + 0.95 * 0.5)


def test_the_first_step_has_a_learning_rate(nb, tiny_vocab, tiny_corpus, tmp_path, monkeypatch):
    rates = []
    step = nb.training_step

    def spy(model, optimizer, *args):
        rates.append(optimizer.param_groups[0]["lr"])
        return step(model, optimizer, *args)

    monkeypatch.setitem(nb.train.__globals__, "training_step", spy)
    tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, epochs=2)
    assert rates[0] > 0 and rates[-1] == pytest.approx(3e-3 * 0.1, rel=0.05)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:]))  # decays after the warm-up


def test_every_validation_writes_best_and_last(nb, tiny_vocab, tiny_corpus, tmp_path):
    _, _, state = tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, epochs=3)
    last = nb.read_checkpoint(tmp_path / "last.pt")
    best = nb.read_checkpoint(tmp_path / "best.pt")
    assert len(state["history"]) == 3 and last["state"]["step"] == state["step"]
    assert best["state"]["best_val_loss"] == min(row["val_loss"] for row in state["history"])
    assert {"optimizer", "scaler", "rng"} <= last.keys() and "optimizer" not in best


def test_a_crash_after_one_validation_leaves_that_validation_in_last(
    nb, tiny_vocab, tiny_corpus, tmp_path, monkeypatch
):
    calls = []
    validate = nb.validate

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the stop button, or a killed kernel, mid-run
        return validate(*args, **kwargs)

    monkeypatch.setitem(nb.train.__globals__, "validate", crash_on_second)
    _, _, state = tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, epochs=3)
    assert state["stop_reason"] == "interrupted"
    last = nb.read_checkpoint(tmp_path / "last.pt")["state"]
    assert last["epoch"] == 1 and last["batch"] == 0 and len(last["history"]) == 1


def test_equal_time_validation_is_marked_and_the_plain_run_kept(
    nb, tiny_vocab, tiny_corpus, tmp_path
):
    plain = dict(seconds=0.0, tokens=10, val_loss=5.0)
    _, _, state = tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, epochs=3, plain=plain)
    notes = [row["note"] for row in state["history"]]
    assert notes[0] == "equal time" and notes.count("equal time") == 1 and len(notes) == 4
    assert nb.read_checkpoint(tmp_path / "last.pt")["state"]["plain"] == plain


def test_resume_continues_the_schedule_from_where_it_stopped(
    nb, tiny_vocab, tiny_corpus, tmp_path, monkeypatch
):
    validate = nb.validate

    def stop_after_one(run, *args, **kwargs):
        validate(run, *args, **kwargs)
        if len(run.state["history"]) == 1:
            raise KeyboardInterrupt  # the stop button after the first epoch

    monkeypatch.setitem(nb.train.__globals__, "validate", stop_after_one)
    model, _, first = tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, epochs=2)
    monkeypatch.setitem(nb.train.__globals__, "validate", validate)
    saved = nb.read_checkpoint(tmp_path / "last.pt")["state"]
    assert saved["epoch"] == 1 and saved["batch"] == 0 and 0.4 < saved["progress"] < 0.6
    rates, step = [], nb.training_step

    def spy(model, optimizer, *args):
        rates.append(optimizer.param_groups[0]["lr"])
        return step(model, optimizer, *args)

    monkeypatch.setitem(nb.train.__globals__, "training_step", spy)
    state = dict(saved, stop_reason=None)
    _, _, second = tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, state, model, epochs=2)
    peak, floor = 3e-3, 3e-3 * 0.1
    assert floor * 2 < rates[0] < peak * 0.8  # mid-decay: not a new warm-up, not a restart
    assert rates[-1] == pytest.approx(floor, rel=0.05) and rates == sorted(rates, reverse=True)
    assert second["step"] == 2 * saved["step"] and second["epochs_completed"] == 2


def test_a_nan_loss_stops_with_advice(nb, tiny_vocab, tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match="Training loss nan.*lower `lr`"):
        tiny_run(
            nb, tiny_vocab, tiny_corpus, tmp_path, epochs=2, lr=1e12, clip=1e12, warmup_fraction=0.0
        )


@pytest.mark.parametrize(
    "message",
    [
        "CUDA out of memory. Tried to allocate 2 GiB",
        "DefaultCPUAllocator: can't allocate memory: you tried 9 GB",
    ],
)
def test_running_out_of_memory_says_what_to_do(
    nb, tiny_vocab, tiny_corpus, tmp_path, monkeypatch, message
):
    def full(*args):
        raise RuntimeError(message)

    monkeypatch.setitem(nb.train.__globals__, "training_step", full)
    with pytest.raises(MemoryError, match="halve `batch_size` in the preset"):
        tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, epochs=1)


def test_float16_training_saves_its_gradient_scaler(nb, tiny_vocab, tiny_corpus, tmp_path):
    with torch.backends.mkldnn.flags(enabled=False):  # the CPU's float16 LSTM needs oneDNN off
        tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, epochs=1, precision="fp16")
    scaler = nb.read_checkpoint(tmp_path / "last.pt")["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler


def test_training_seconds_leave_out_validation(nb, tiny_vocab, tiny_corpus, tmp_path, monkeypatch):
    def slow(*args, **kwargs):
        time.sleep(0.3)
        return nb.evaluate(*args, **kwargs)

    monkeypatch.setitem(nb.validate.__globals__, "evaluate", slow)
    _, _, state = tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, epochs=2)
    assert state["wall_seconds"] - state["train_seconds"] >= 0.6  # two validations of 0.3 s


def measured(tokens_per_second, losses=(10.4, 10.3), error=None):
    return dict(tokens_per_second=tokens_per_second, losses=list(losses), error=error)


@pytest.mark.parametrize(
    "bf16, expected",
    [
        (measured(750), "fp32"),  # emulated bf16: a laptop CPU
        (measured(None, (), "RuntimeError: could not create a primitive"), "fp32"),  # refused
        (measured(20_000, (10.4, float("nan"))), "fp32"),  # not finite
        (measured(20_000, (10.4, 10.9)), "fp32"),  # trains differently
        (measured(10_500), "fp32"),  # 5 % faster: not worth the precision
        (measured(20_000, (10.41, 10.32)), "bf16"),  # bf16 units: faster, same losses
    ],
)
def test_choose_precision_from_measurements(nb, bf16, expected):
    assert nb.choose_precision({"fp32": measured(10_000), "bf16": bf16}) == expected


def test_calibration_keeps_float32_without_bf16_units_and_leaves_the_seed_alone(nb):
    """oneDNN off removes the CPU's bf16 acceleration, as laptop CPUs lack it."""
    config = nb.resolve_preset("cpu", CPU)
    train_data = nb.batchify(torch.randint(0, 33_278, (64 * 200,)), 64)  # (64, 200)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with torch.backends.mkldnn.flags(enabled=False):
        calibrated = nb.calibrate(config, 33_278, train_data, 2_000, CPU, fit_size=False)
    assert torch.equal(torch.get_rng_state(), before)  # SEED still decides the model's weights
    report = calibrated["calibration"]["precision"]
    assert calibrated["precision"] == "fp32", report
    assert report["fp32"]["tokens_per_second"] > 1.1 * (report["bf16"]["tokens_per_second"] or 0)
    assert calibrated["time_budget_s"] == pytest.approx(600 - calibrated["calibration"]["seconds"])


def test_width_follows_the_measured_speed(nb, monkeypatch):
    """The widest LSTM expected to read 3 training tokens per weight in the budget."""
    config = dict(nb.resolve_preset("cpu", CPU), precision_candidates=["fp32"])
    data = torch.zeros(64, 32_634, dtype=torch.long)  # WikiText-2's training text in 64 rows

    def run(speeds):
        def fake(size, *args, **kwargs):
            return dict(tokens_per_second=speeds[size["hidden_dim"]])

        monkeypatch.setitem(nb.fit_cpu_width.__globals__, "measure_speed", fake)
        return nb.calibrate(config, 33_278, data, 217_640, CPU)

    bf16 = {128: 40_000, 192: 30_000, 256: 21_000, 384: 12_500, 512: 8_000}  # measured here
    assert run(bf16)["size_label"] == "2x256"
    slow = {128: 5_000, 192: 2_000, 256: 1_200, 384: 900, 512: 500}
    assert run(slow)["size_label"] == "2x128"
    rows = run(slow)["calibration"]["sizes"]
    assert rows[0]["tokens_per_weight"] > 3 > rows[1]["tokens_per_weight"] and len(rows) == 2


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_mixed_precision_steps_train(nb, tiny_vocab, tiny_corpus, precision):
    config = tiny_config(nb, precision=precision)
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["train"]), 4)
    result = nb.measure_speed(config, len(tiny_vocab), data)
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", ...
    if precision == "bf16" and result["error"] and not capability.startswith("AVX512"):
        # oneDNN has no bf16 LSTM without AVX-512 (seen on an AVX2 AMD EPYC): measure_speed
        # reports it instead of raising, and choose_precision keeps float32 (tested above).
        pytest.skip(f"this {capability} CPU cannot run a bf16 LSTM: {result['error']}")
    assert result["error"] is None and all(map(math.isfinite, result["losses"])), result
    assert result["losses"][0] == pytest.approx(math.log(len(tiny_vocab)), abs=0.6)


def test_no_second_validation_when_time_runs_out_right_after_one(
    nb, tiny_vocab, tiny_corpus, tmp_path, monkeypatch
):
    """The budget ends during the epoch's validation: the run stops there, not after one more step
    and a second validation of almost the same weights (which also overran the budget)."""

    def out_of_time(run):  # from the first validation on
        run.seconds()  # the clocks, which the real one updates
        return len(run.state["history"]) > 0

    monkeypatch.setattr(nb.TrainingRun, "out_of_time", out_of_time)
    _, _, state = tiny_run(nb, tiny_vocab, tiny_corpus, tmp_path, epochs=5)
    assert state["stop_reason"] == "time budget reached"
    assert [row["epochs_completed"] for row in state["history"]] == [1.0]
