"""The GPU configuration and precision chosen from a card's facts, tested with the facts of cards
we do not have (a GTX 1650, a T4, an A100, an H100) and plausible measured speeds."""

import math

import pytest
import torch

from conftest import train_a_few_steps

TOKENS = (2_088_628, 217_646)  # WikiText-2 training and validation tokens
VOCAB = 33_278


def card(name, memory_gib, capability):
    return dict(
        type="cuda",
        name=name,
        memory_gib=memory_gib,
        capability=capability,
        cpu_threads=4,
        platform="linux",
    )


# Plausible training speeds (tokens/s) of the three GPU sizes, smallest first, from each card's
# throughput
# (float32 or float16 TFLOP/s at ~30 % use) and the sizes' training cost (about 30, 120 and 177
# MFLOP per
# token); None: not measured because it does not fit or a smaller size was already too slow.
CARDS = {
    "GTX 1650": (card("NVIDIA GeForce GTX 1650", 3.8, (7, 5)), [27_000, 7_500, None], "fp16", 0),
    "T4": (card("Tesla T4", 14.6, (7, 5)), [150_000, 60_000, 25_000], "fp16", 0),
    "A100": (card("NVIDIA A100-SXM4-40GB", 39.4, (8, 0)), [300_000, 150_000, 100_000], "bf16", 1),
    "H100": (card("NVIDIA H100 80GB HBM3", 79.1, (9, 0)), [400_000, 250_000, 150_000], "bf16", 2),
}


@pytest.mark.parametrize("name", CARDS)
def test_each_card_gets_a_configuration_that_fits_and_gets_its_epochs(nb, name):
    facts, speeds, low_precision, expected = CARDS[name]
    config = nb.resolve_preset("auto", facts)
    assert config["preset"] == "gpu"
    assert config["precision_candidates"] == [
        "fp32",
        low_precision,
    ]  # bf16 only from compute capability 8.0
    assert config["tf32"] == (facts["capability"][0] >= 8)  # TF32 exists from Ampere on
    rungs = nb.size_rungs(config)
    budget = config["time_budget_s"] - 20  # less the calibration
    index, rows = nb.choose_size(rungs, speeds, budget, *TOKENS, nb.memory_limit_gib(facts), VOCAB)
    assert index == expected, rows
    chosen = rows[index]
    assert chosen["memory_gib"] <= 0.7 * facts["memory_gib"]  # fits, with headroom
    if any(row["good"] for row in rows):  # what the rule promises: enough tokens per parameter
        assert chosen["good"]
        assert chosen["tokens_per_parameter"] >= config["min_tokens_per_parameter"]
    for row in rows[index + 1 :]:  # every bigger size fails the rule
        assert not row["good"]


def test_the_big_model_does_not_fit_a_4_gb_card(nb):
    facts = CARDS["GTX 1650"][0]
    rungs = nb.size_rungs(nb.resolve_preset("gpu", facts))
    big = nb.estimate_training_memory_gib(rungs[-1], VOCAB)
    small = nb.estimate_training_memory_gib(rungs[0], VOCAB)
    assert 2.0 < big and big > nb.memory_limit_gib(facts) and small < 1.0


def test_older_cards_train_in_float32(nb):
    config = nb.resolve_preset("gpu", card("Tesla P100", 16.0, (6, 0)))
    assert config["precision_candidates"] == ["fp32"] and not config["tf32"]
    assert (
        nb.resolve_preset("gpu", card("T4", 14.6, (7, 5)), precision="fp16")["precision"] == "fp16"
    )
    with pytest.raises(ValueError, match="not available"):
        nb.resolve_preset("gpu", card("T4", 14.6, (7, 5)), precision="bf16")


def test_out_of_memory_stops_with_advice_and_keeps_the_checkpoints(
    nb, tiny_vocab, tiny_corpus, tmp_path
):
    config = dict(
        nb.resolve_preset("smoke", torch.device("cpu")),
        epochs=2,
        max_batches_per_epoch=None,
        batch_size=4,
        bptt=16,
        adaptive_cutoffs=None,
    )
    torch.manual_seed(0)
    model = nb.build_model(config, len(tiny_vocab))
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["train"]), 4)
    valid = nb.batchify(tiny_vocab.encode(tiny_corpus["valid"]), 2)
    per_epoch = nb.batches_per_epoch(data, config)
    real_loss, calls = model.loss, {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += model.training
        if calls["n"] == per_epoch + 2 and model.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loss(*args, **kwargs)

    model.loss = loss
    with pytest.raises(nb.TrainingOutOfMemory, match="batch size 4.*CALIBRATE"):
        nb.train(
            model, nb.make_optimizers(model, config), data, valid, tiny_vocab, config, tmp_path
        )
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert nb.read_checkpoint(tmp_path / "last.pt")["state"]["stop_reason"] == "out of memory"


@pytest.mark.parametrize("rung", range(3))
def test_every_gpu_size_builds_and_trains_on_the_cpu(nb, rung, tiny_vocab, tiny_corpus, tmp_path):
    """Each configuration the GPU calibration can choose trains a few steps (on the CPU here)."""
    config = nb.size_rungs(nb.resolve_preset("gpu", CARDS["H100"][0]))[rung]
    state = train_a_few_steps(nb, config, tiny_vocab, tiny_corpus, tmp_path, steps=2)
    assert state["step"] == 2 and state["best_val_loss"] < math.log(len(tiny_vocab)) + 1
