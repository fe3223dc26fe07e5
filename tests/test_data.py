"""Tokens, vocabulary, batches, presets and paths."""

import pytest
import torch

from conftest import real_data_dir


def test_tokenize_lines_adds_eos_per_line(nb):
    assert nb.tokenize_lines([" a b \n", " \n", " c \n"]) == [
        "a",
        "b",
        "<eos>",
        "<eos>",
        "c",
        "<eos>",
    ]


def test_vocabulary_orders_by_frequency_and_round_trips(nb):
    vocab = nb.Vocabulary.build("b a b c b a <eos>".split())
    assert vocab.itos[:3] == ["b", "a", "c"]  # most frequent first, ties by first appearance
    assert "<unk>" in vocab.stoi and len(vocab) == 5  # <unk> added for a corpus without it
    ids = vocab.encode(["a", "never-seen", "c"])
    assert ids[1] == vocab.unk_id
    assert vocab.decode(ids) == ["a", "<unk>", "c"]


def test_vocabulary_rejects_duplicates_and_missing_specials(nb):
    with pytest.raises(ValueError, match="twice"):
        nb.Vocabulary(["<eos>", "<unk>", "a", "a"])
    with pytest.raises(ValueError, match="<unk>"):
        nb.Vocabulary(["<eos>", "a"])


def test_batchify_rows_are_contiguous_streams(nb):
    data = nb.batchify(list(range(26)), 4)
    assert data.shape == (4, 6) and data.dtype == torch.long
    assert data[1].tolist() == [6, 7, 8, 9, 10, 11]  # row 1 continues where row 0 stopped
    assert data.flatten().tolist() == list(range(24))  # the 2 ids that do not fit are dropped


@pytest.mark.parametrize("bad", [0, -3, 2.5, "4"])
def test_batchify_rejects_bad_batch_size(nb, bad):
    with pytest.raises(ValueError, match="batch_size"):
        nb.batchify(list(range(10)), bad)


def test_batchify_rejects_too_little_data(nb):
    with pytest.raises(ValueError, match="too few"):
        nb.batchify([1, 2, 3], 4)


def test_get_batch_targets_are_inputs_shifted_by_one(nb):
    data = nb.batchify(list(range(40)), 2)  # rows 0..19 and 20..39
    inputs, targets = nb.get_batch(data, 0, 5)
    assert inputs[0].tolist() == [0, 1, 2, 3, 4] and targets[0].tolist() == [1, 2, 3, 4, 5]
    inputs, targets = nb.get_batch(data, 15, 5)  # the last window is shorter
    assert inputs.shape == (2, 4) and targets[1].tolist() == [36, 37, 38, 39]


def test_tiny_corpus_loads_without_checksums(nb, tiny_corpus, tiny_vocab):
    assert tiny_corpus["train"][:5] == ["<eos>", "=", "Harrow", "Creek", "="]
    assert all(
        token in tiny_vocab.stoi or token in tiny_corpus["valid"] for token in tiny_corpus["train"]
    )


def test_custom_corpus_with_missing_file_says_what_to_do(nb, tmp_path):
    (tmp_path / "train.txt").write_text(" a b \n")
    with pytest.raises(FileNotFoundError, match="valid.txt, test.txt"):
        nb.load_corpus(tmp_path, custom=True)


def test_empty_split_is_refused(nb, tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text(" a b \n")
    (tmp_path / "valid.txt").write_text("")
    with pytest.raises(ValueError, match="no text"):
        nb.load_corpus(tmp_path, custom=True)


def test_resolve_preset(nb):
    cpu = torch.device("cpu")
    assert nb.resolve_preset("auto", cpu)["preset"] == "cpu"
    assert nb.resolve_preset("smoke", cpu, epochs=3, time_budget_s=60)["epochs"] == 3
    for name in nb.PRESETS:  # every preset builds a valid model description
        config = nb.resolve_preset(name, cpu)
        assert config["optimizer"] in ("adamw", "sgd") and config["schedule"] in (
            "cosine",
            "plateau",
        )
    with pytest.raises(ValueError, match="'smoke'"):
        nb.resolve_preset("fast", cpu)
    with pytest.raises(ValueError, match="EPOCHS"):
        nb.resolve_preset("cpu", cpu, epochs=0)
    with pytest.raises(ValueError, match="TIME_BUDGET_S"):
        nb.resolve_preset("cpu", cpu, time_budget_s=-5)


def test_paths_resolve_from_repo_root_whatever_the_working_directory(nb, tmp_path, monkeypatch):
    from conftest import REPO_ROOT

    monkeypatch.delenv("WIKITEXT2_DIR", raising=False)
    assert nb.find_repo_root(REPO_ROOT / "tests" / "data") == REPO_ROOT
    paths = nb.resolve_paths(REPO_ROOT)
    assert paths["data_dir"] == REPO_ROOT / "data" / "wikitext-2"
    assert paths["metrics_path"] == REPO_ROOT / "checkpoints" / "metrics.json"
    monkeypatch.setenv("WIKITEXT2_DIR", str(tmp_path))
    assert nb.resolve_paths(REPO_ROOT)["data_dir"] == tmp_path
    assert nb.resolve_paths(REPO_ROOT, data_dir="elsewhere")["data_dir"] == REPO_ROOT / "elsewhere"


@pytest.mark.skipif(
    real_data_dir() is None, reason="WikiText-2 not on this machine (set WIKITEXT2_DIR)"
)
def test_real_wikitext2_has_the_standard_counts(nb):
    corpus = nb.load_corpus(real_data_dir())  # also verifies the three SHA-256 hashes
    vocab = nb.Vocabulary.build(corpus["train"])
    assert len(vocab) == 33_278
    assert [len(corpus[s]) for s in ("train", "valid", "test")] == [2_088_628, 217_646, 245_569]
    assert vocab.encode(corpus["valid"]).count(vocab.unk_id) == corpus["valid"].count(
        "<unk>"
    )  # no OOV words
