"""Shared fixtures: the notebook's definitions, executed in a fresh namespace, and small corpora."""

import os
import types
from pathlib import Path

import nbformat
import pytest
import torch

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
    """WikiText-2 when this machine has it: $WIKITEXT2_DIR or the repository's data/wikitext-2."""
    folder = Path(os.environ.get("WIKITEXT2_DIR") or REPO_ROOT / "data" / "wikitext-2")
    splits = ("train", "valid", "test")
    return folder if all((folder / f"{split}.txt").is_file() for split in splits) else None


@pytest.fixture(scope="session")
def tiny_corpus(nb):
    return nb.load_corpus(TINY_CORPUS, custom=True)


@pytest.fixture(scope="session")
def tiny_vocab(nb, tiny_corpus):
    return nb.Vocabulary.build(tiny_corpus["train"])


CPU = dict(type="cpu", name="CPU", capability=None, platform="linux", memory_gib=16.0)


def tiny_config(nb, **changes):
    """The smoke preset on the tiny corpus: 4 rows x 10 steps, the adaptive softmax used."""
    config = nb.resolve_preset("smoke", CPU, precision="fp32")
    return dict(config, **{"batch_size": 4, "bptt": 10, "max_batches_per_epoch": None, **changes})


def tiny_run(nb, tiny_vocab, tiny_corpus, folder, state=None, model=None, plain=None, **changes):
    """Train the tiny model with `train`; (model, optimizer, state)."""
    config = tiny_config(nb, **changes)
    torch.manual_seed(0)
    model = model or nb.build_model(config, len(tiny_vocab))
    optimizer = nb.make_optimizer(model, config)
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["train"]), config["batch_size"])
    valid = nb.batchify(tiny_vocab.encode(tiny_corpus["valid"]), 2)
    state = nb.train(model, optimizer, data, valid, tiny_vocab, config, folder, state, plain=plain)
    return model, optimizer, state


@pytest.fixture(scope="session")
def trained_tiny(nb, tiny_corpus, tiny_vocab, tmp_path_factory):
    """A small model trained for a few epochs on the tiny corpus (its predictions not uniform)."""
    folder = tmp_path_factory.mktemp("trained")
    model, _, _ = tiny_run(nb, tiny_vocab, tiny_corpus, folder, epochs=15, lr=1e-2, dropout=0.0)
    return model.eval()
