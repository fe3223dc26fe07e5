"""Shared fixtures: the notebook's definitions, executed in a fresh namespace, and small corpora."""

import os
import types
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "lstm_text_generation.ipynb"
TINY_CORPUS = Path(__file__).parent / "data" / "tiny-wikitext"


def load_definitions():
    """Run every cell tagged `definitions` (and nothing else) in a new namespace."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    namespace = {"__name__": "notebook_definitions"}
    for cell in notebook.cells:
        if cell.cell_type == "code" and "definitions" in cell.metadata.get("tags", []):
            exec(compile(cell.source, f"{NOTEBOOK.name}:definitions", "exec"), namespace)
    return types.SimpleNamespace(**namespace)


@pytest.fixture(scope="session")
def nb():
    return load_definitions()


def real_data_dir():
    """The real WikiText-2, when this machine has it: $WIKITEXT2_DIR or the repository's
    data/wikitext-2."""
    folder = Path(os.environ.get("WIKITEXT2_DIR") or REPO_ROOT / "data" / "wikitext-2")
    return (
        folder
        if all((folder / f"{split}.txt").is_file() for split in ("train", "valid", "test"))
        else None
    )


@pytest.fixture(scope="session")
def tiny_corpus(nb):
    return nb.load_corpus(TINY_CORPUS, custom=True)


@pytest.fixture(scope="session")
def tiny_vocab(nb, tiny_corpus):
    return nb.Vocabulary.build(tiny_corpus["train"])


@pytest.fixture()
def tiny_model(nb, tiny_vocab):
    import torch

    torch.manual_seed(0)
    return nb.LSTMLanguageModel(
        len(tiny_vocab), embedding_dim=16, hidden_dim=24, num_layers=2, dropout=0.1
    )


@pytest.fixture(scope="session")
def trained_tiny(nb, tiny_corpus, tiny_vocab, tmp_path_factory):
    """A small model trained for a few epochs on the tiny corpus (its predictions not uniform)."""
    import torch

    torch.manual_seed(0)
    config = dict(
        nb.resolve_preset("smoke", torch.device("cpu")),
        epochs=15,
        max_batches_per_epoch=None,
        batch_size=4,
        bptt=20,
        adaptive_cutoffs=None,
        sparse_embedding=False,
        lr=1e-2,
    )
    model = nb.LSTMLanguageModel(
        len(tiny_vocab), embedding_dim=32, hidden_dim=32, num_layers=1, dropout=0.0
    )
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["train"]), config["batch_size"])
    valid = nb.batchify(tiny_vocab.encode(tiny_corpus["valid"]), 2)
    nb.train(
        model,
        nb.make_optimizers(model, config),
        data,
        valid,
        tiny_vocab,
        config,
        tmp_path_factory.mktemp("ck"),
    )
    return model.eval()


def train_a_few_steps(nb, config, vocab, corpus, folder, steps=3):
    """Train `config`'s model for `steps` batches of the tiny corpus (4 x 10 tokens); the state."""
    import torch

    config = dict(config, epochs=1, max_batches_per_epoch=steps, batch_size=4, bptt=10,
                  time_budget_s=None)  # fmt: skip
    if config["adaptive_cutoffs"]:
        config["adaptive_cutoffs"] = [50, 150]  # the tiny vocabulary has 320 words
    torch.manual_seed(0)
    model = nb.build_model(config, len(vocab))
    data = nb.batchify(vocab.encode(corpus["train"]), config["batch_size"])
    valid = nb.batchify(vocab.encode(corpus["valid"]), 2)
    return nb.train(model, nb.make_optimizers(model, config), data, valid, vocab, config, folder)
