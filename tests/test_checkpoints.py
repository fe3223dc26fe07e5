"""Checkpoints, resume, interruption, divergence."""

import math

import pytest
import torch


class NotPlainData:
    """Any class: a checkpoint holding one must be refused by weights_only loading."""


def constant_lr_config(nb, epochs):
    """The smoke preset on the tiny corpus, at a constant learning rate: epochs split freely."""
    return dict(
        nb.resolve_preset("smoke", torch.device("cpu")),
        epochs=epochs,
        max_batches_per_epoch=None,
        batch_size=4,
        bptt=16,
        adaptive_cutoffs=None,
        dropout=0.2,
        warmup_fraction=0.0,
        final_lr_fraction=1.0,
        lr=5e-3,
    )


def make_run(nb, tiny_vocab, tiny_corpus, config, sparse=False):
    torch.manual_seed(0)
    model = nb.LSTMLanguageModel(
        len(tiny_vocab),
        embedding_dim=16,
        hidden_dim=16,
        num_layers=2,
        dropout=0.2,
        adaptive_cutoffs=[50, 150],
        sparse_embedding=sparse,
    )
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["train"]), config["batch_size"])
    valid = nb.batchify(tiny_vocab.encode(tiny_corpus["valid"]), 2)
    return model, nb.make_optimizers(model, config), data, valid


def test_round_trip(nb, tiny_model, tiny_vocab, tmp_path):
    config = nb.resolve_preset("smoke", torch.device("cpu"))
    nb.save_checkpoint(
        tmp_path / "best.pt", nb.checkpoint_payload(tiny_model, tiny_vocab, config, {"epoch": 3})
    )
    model, vocab, info = nb.load_checkpoint(tmp_path / "best.pt")
    assert (
        vocab.itos == tiny_vocab.itos
        and info["state"]["epoch"] == 3
        and info["train_config"]["preset"] == "smoke"
    )
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_checkpoint(nb, tmp_path):
    with pytest.raises(FileNotFoundError, match="Run the training cells"):
        nb.load_checkpoint(tmp_path / "nothing.pt")


def test_checkpoint_with_a_pickled_object_is_refused(nb, tiny_model, tiny_vocab, tmp_path):
    payload = nb.checkpoint_payload(tiny_model, tiny_vocab, {}, {"epoch": 1})
    payload["state"]["surprise"] = NotPlainData()
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(nb.CheckpointError, match="refused"):
        nb.load_checkpoint(tmp_path / "evil.pt")


def test_files_that_are_not_checkpoints(nb, tmp_path):
    (tmp_path / "noise.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(nb.CheckpointError, match="not a readable"):
        nb.load_checkpoint(tmp_path / "noise.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(nb.CheckpointError, match="not a checkpoint of this notebook"):
        nb.load_checkpoint(tmp_path / "other.pt")


def test_truncated_checkpoint(nb, tiny_model, tiny_vocab, tmp_path):
    nb.save_checkpoint(
        tmp_path / "best.pt", nb.checkpoint_payload(tiny_model, tiny_vocab, {}, {"epoch": 1})
    )
    data = (tmp_path / "best.pt").read_bytes()
    (tmp_path / "best.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(nb.CheckpointError, match="truncated"):
        nb.load_checkpoint(tmp_path / "best.pt")


def test_weights_that_do_not_fit(nb, tiny_model, tiny_vocab, tmp_path):
    payload = nb.checkpoint_payload(tiny_model, tiny_vocab, {}, {"epoch": 1})
    payload["model_state"]["lstm.weight_hh_l0"] = torch.zeros(3, 3)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(nb.CheckpointError, match="do not fit"):
        nb.load_checkpoint(tmp_path / "bad.pt")


def test_checkpoint_from_another_vocabulary(nb, tiny_vocab):
    other = nb.Vocabulary(tiny_vocab.itos[:-1] + ["zebra"])
    with pytest.raises(nb.CheckpointError, match="another vocabulary"):
        nb.check_same_vocabulary(other, tiny_vocab)
    nb.check_same_vocabulary(nb.Vocabulary(tiny_vocab.itos), tiny_vocab)  # the same: no error


def test_a_crash_mid_save_keeps_the_previous_checkpoint(
    nb, tiny_model, tiny_vocab, tmp_path, monkeypatch
):
    path = tmp_path / "best.pt"
    nb.save_checkpoint(path, nb.checkpoint_payload(tiny_model, tiny_vocab, {}, {"epoch": 1}))
    before = path.read_bytes()
    real_save = torch.save

    def dies_half_way(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        with open(file, "r+b") as handle:  # leave a half-written file, then "lose power"
            handle.truncate(len(before) // 2)
        raise OSError("simulated crash while writing")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="simulated"):
        nb.save_checkpoint(path, nb.checkpoint_payload(tiny_model, tiny_vocab, {}, {"epoch": 2}))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert nb.load_checkpoint(path)[2]["state"]["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt"
    ]  # no temporary file left behind


@pytest.mark.parametrize("sparse", [False, True])
def test_resume_gives_the_same_losses_as_training_straight(
    nb, tiny_vocab, tiny_corpus, tmp_path, sparse
):
    straight = make_run(nb, tiny_vocab, tiny_corpus, constant_lr_config(nb, 2), sparse)
    state_straight = nb.train(*straight[:4], tiny_vocab, constant_lr_config(nb, 2), tmp_path / "a")

    first = make_run(nb, tiny_vocab, tiny_corpus, constant_lr_config(nb, 1), sparse)
    nb.train(*first[:4], tiny_vocab, constant_lr_config(nb, 1), tmp_path / "b")
    torch.manual_seed(999)  # a fresh process: different random state
    model, optimizers, data, valid = make_run(
        nb, tiny_vocab, tiny_corpus, constant_lr_config(nb, 2), sparse
    )
    state = nb.resume_training(
        tmp_path / "b" / "last.pt", model, optimizers, tiny_vocab, torch.device("cpu")
    )
    state_resumed = nb.train(
        model,
        optimizers,
        data,
        valid,
        tiny_vocab,
        constant_lr_config(nb, 2),
        tmp_path / "b",
        state=state,
    )

    for key in ("train_loss", "val_loss"):
        assert [row[key] for row in state_resumed["history"]] == pytest.approx(
            [row[key] for row in state_straight["history"]], abs=1e-6
        )
    assert state_resumed["step"] == state_straight["step"]


def test_resume_refuses_another_vocabulary(nb, tiny_vocab, tiny_corpus, tmp_path):
    model, optimizers, data, valid = make_run(
        nb, tiny_vocab, tiny_corpus, constant_lr_config(nb, 1)
    )
    nb.train(model, optimizers, data, valid, tiny_vocab, constant_lr_config(nb, 1), tmp_path)
    other = nb.Vocabulary(tiny_vocab.itos[:-1] + ["zebra"])
    with pytest.raises(nb.CheckpointError, match="another vocabulary"):
        nb.resume_training(tmp_path / "last.pt", model, optimizers, other, torch.device("cpu"))


def fail_on_call(model, number, error):
    """Make model.loss raise `error` (an exception, or 'nan') on its `number`-th training call."""
    real_loss, calls = model.loss, {"n": 0}

    def loss(*args, **kwargs):
        value, hidden = real_loss(*args, **kwargs)
        if model.training:
            calls["n"] += 1
            if calls["n"] == number:
                if error == "nan":
                    return value * float("nan"), hidden
                raise error
        return value, hidden

    model.loss = loss


def test_interrupting_training_keeps_best_and_last(nb, tiny_vocab, tiny_corpus, tmp_path, capsys):
    config = constant_lr_config(nb, 3)
    model, optimizers, data, valid = make_run(nb, tiny_vocab, tiny_corpus, config)
    per_epoch = nb.batches_per_epoch(data, config)
    fail_on_call(model, per_epoch + 3, KeyboardInterrupt())  # stop the cell during epoch 2
    state = nb.train(model, optimizers, data, valid, tiny_vocab, config, tmp_path)
    assert (
        state["stop_reason"] == "interrupted by the user"
        and state["epoch"] == 1
        and state["batch"] == 2
    )
    assert "best.pt" in capsys.readouterr().out
    best, vocab, info = nb.load_checkpoint(tmp_path / "best.pt")
    assert info["state"]["epoch"] == 1
    assert nb.load_checkpoint(tmp_path / "last.pt")[2]["state"]["step"] == per_epoch + 2
    assert math.isfinite(nb.evaluate(best, valid, 10))
    assert nb.generate(best, vocab, "The town", 5, seed=0).startswith("The town")


def test_a_nan_loss_stops_training_with_a_message(nb, tiny_vocab, tiny_corpus, tmp_path):
    config = constant_lr_config(nb, 3)
    model, optimizers, data, valid = make_run(nb, tiny_vocab, tiny_corpus, config)
    per_epoch = nb.batches_per_epoch(data, config)
    fail_on_call(model, per_epoch + 5, "nan")
    with pytest.raises(nb.TrainingDiverged, match=f"step {per_epoch + 4}.*learning rate"):
        nb.train(model, optimizers, data, valid, tiny_vocab, config, tmp_path)
    assert (
        nb.load_checkpoint(tmp_path / "best.pt")[2]["state"]["epoch"] == 1
    )  # the best model is kept


def test_time_budget_stops_training(nb, tiny_vocab, tiny_corpus, tmp_path):
    config = dict(constant_lr_config(nb, 1000), time_budget_s=1.0)
    state = nb.train(
        *make_run(nb, tiny_vocab, tiny_corpus, config)[:4], tiny_vocab, config, tmp_path
    )
    assert state["stop_reason"].startswith("time budget") and state["epoch"] < 1000
    assert len(state["history"]) == math.ceil(
        state["epochs_completed"]
    )  # validated when the budget ran out, too
    assert state["history"][-1]["epoch"] == pytest.approx(
        state["epochs_completed"], abs=1e-4
    )  # a fraction if cut


def test_tokens_per_second_counts_training_time_only(nb, tiny_vocab, tiny_corpus, tmp_path):
    config = constant_lr_config(nb, 2)
    state = nb.train(
        *make_run(nb, tiny_vocab, tiny_corpus, config)[:4], tiny_vocab, config, tmp_path
    )
    assert state["validation_seconds"] > 0 and state["train_seconds"] > 0
    assert state["train_seconds"] + state["validation_seconds"] == pytest.approx(
        state["wall_seconds"], rel=1e-6
    )
    assert state["epochs_completed"] == 2 and [row["epoch"] for row in state["history"]] == [1, 2]


def recording_lr(optimizers, seen):
    """Record the learning rate of every step (wraps the first optimiser's step)."""
    real_step = optimizers[0].step

    def step(*args, **kwargs):
        seen.append(optimizers[0].param_groups[0]["lr"])
        return real_step(*args, **kwargs)

    optimizers[0].step = step


def resume_and_train(nb, tiny_vocab, tiny_corpus, config, folder):
    """As a fresh process would: resume folder/last.pt and train; the final state, and the
    learning rate of every step."""
    model, optimizers, data, valid = make_run(nb, tiny_vocab, tiny_corpus, config)
    cpu = torch.device("cpu")
    state = nb.resume_training(folder / "last.pt", model, optimizers, tiny_vocab, cpu)
    lrs = []
    recording_lr(optimizers, lrs)
    return nb.train(model, optimizers, data, valid, tiny_vocab, config, folder, state=state), lrs


def test_resuming_mid_epoch_continues_at_the_batch_where_it_stopped(
    nb, tiny_vocab, tiny_corpus, tmp_path
):
    config = dict(
        constant_lr_config(nb, 2), warmup_fraction=0.1, final_lr_fraction=0.1
    )  # a real schedule
    model, optimizers, data, valid = make_run(nb, tiny_vocab, tiny_corpus, config)
    per_epoch = nb.batches_per_epoch(data, config)
    fail_on_call(model, 4, KeyboardInterrupt())  # stop at the 4th batch of epoch 1
    stopped = nb.train(model, optimizers, data, valid, tiny_vocab, config, tmp_path)
    assert (stopped["epoch"], stopped["batch"], stopped["step"]) == (0, 3, 3)
    assert stopped["epochs_completed"] == pytest.approx(3 / per_epoch)

    resumed, lrs = resume_and_train(nb, tiny_vocab, tiny_corpus, config, tmp_path)
    # no batch done twice or skipped
    assert resumed["step"] == 2 * per_epoch and resumed["epochs_completed"] == 2
    assert len(lrs) == 2 * per_epoch - 3
    assert max(lrs) <= config["lr"] * stopped["lr_scale"] + 1e-12  # the rate never jumps back up
    final_lr = config["lr"] * config["final_lr_fraction"]
    assert lrs[-1] == pytest.approx(final_lr, rel=0.2)  # and ends decayed


def test_resuming_after_the_budget_trains_for_the_new_budget(nb, tiny_vocab, tiny_corpus, tmp_path):
    config = dict(
        constant_lr_config(nb, 1000), warmup_fraction=0.02, final_lr_fraction=0.1, time_budget_s=0.5
    )
    model, optimizers, data, valid = make_run(nb, tiny_vocab, tiny_corpus, config)
    first = nb.train(model, optimizers, data, valid, tiny_vocab, config, tmp_path)
    assert first["stop_reason"].startswith("time budget")
    second, lrs = resume_and_train(nb, tiny_vocab, tiny_corpus, config, tmp_path)
    assert second["stop_reason"].startswith("time budget") and second["step"] > first["step"] + 5
    assert second["wall_seconds"] == pytest.approx(
        first["wall_seconds"] + 0.5, abs=0.4
    )  # the budget is added
    assert max(lrs) <= config["lr"] * first["lr_scale"] + 1e-12
