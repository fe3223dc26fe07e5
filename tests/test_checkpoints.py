"""Checkpoint files: written atomically, read safely, each unusable file named with the fix."""

import pytest
import torch


def save_best(nb, model, vocab, folder):
    """best.pt as `validate` writes it, for `model` and `vocab`."""
    payload = dict(model_config=model.config, model_state=model.state_dict(), config={},
                   vocab=vocab.itos, state={})  # fmt: skip
    nb.save_checkpoint(folder / "best.pt", payload)


def test_round_trip_rebuilds_the_same_model(nb, trained_tiny, tiny_vocab, tmp_path):
    save_best(nb, trained_tiny, tiny_vocab, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left
    model, vocab, _ = nb.load_checkpoint(tmp_path / "best.pt", vocab=tiny_vocab)
    ids = torch.tensor([tiny_vocab.encode("the river flows into the".split())])
    with torch.no_grad():
        expected, _ = trained_tiny.next_log_probs(ids)
        got, _ = model.eval().next_log_probs(ids)
    assert vocab.itos == tiny_vocab.itos and torch.allclose(got, expected)


def test_a_failed_save_keeps_the_previous_file(nb, tmp_path, monkeypatch):
    nb.save_checkpoint(tmp_path / "last.pt", {"version": 1})

    def broken_save(payload, path):
        open(path, "wb").write(b"half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        nb.save_checkpoint(tmp_path / "last.pt", {"version": 2})
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.pt", weights_only=True) == {"version": 1}


class Code:  # a pickled object: loading it could run code
    pass


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "No checkpoint.*CHECKPOINT_DIR"),
        (b"not a checkpoint at all", "not a readable checkpoint"),
        ({"weights": torch.zeros(2)}, "not a checkpoint of this notebook"),
        ({"model": Code()}, "not a readable checkpoint.*UnpicklingError"),
    ],
)
def test_unusable_files_are_named_with_the_fix(nb, tmp_path, content, message):
    path = tmp_path / "best.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        nb.read_checkpoint(path)


def test_a_checkpoint_of_another_vocabulary_is_refused(nb, trained_tiny, tiny_vocab, tmp_path):
    save_best(nb, trained_tiny, tiny_vocab, tmp_path)
    other = nb.Vocabulary(["x", *tiny_vocab.itos[1:]])
    with pytest.raises(ValueError, match="another vocabulary.*DATA_DIR"):
        nb.load_checkpoint(tmp_path / "best.pt", vocab=other)
