"""Run the whole notebook headless with papermill (smoke preset), as README command 1 does."""

import json
import math
import re

import nbformat
import papermill
import pytest

from conftest import NOTEBOOK, TINY_CORPUS, real_data_dir

REQUIRED_METRICS = {
    "preset",
    "device",
    "vocab_size",
    "train_tokens",
    "valid_tokens",
    "test_tokens",
    "num_parameters",
    "epochs_completed",
    "train_seconds",
    "train_tokens_per_second",
    "val_loss",
    "val_ppl",
    "test_loss",
    "test_ppl",
    "eval_batch_size",
    "bptt",
    "batch_size",
    "history",
}

# Appended to a copy of the notebook: what the kernel's namespace holds after a run.
PROBE = """import json as _json
namespace = {"model": type(model).__name__, "vocab": len(vocab), "device": str(device)}
print("PROBE" + _json.dumps(namespace))"""


def run_notebook(tmp_path, **parameters):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    source = tmp_path / "input.ipynb"
    nbformat.write(notebook, source)
    parameters = (
        dict(
            PRESET="smoke",
            CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
            METRICS_PATH=str(tmp_path / "metrics.json"),
            SEED=1,
        )
        | parameters
    )
    executed = papermill.execute_notebook(
        str(source),
        str(tmp_path / "output.ipynb"),
        parameters=parameters,
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
    )
    probe = next(
        o["text"] for o in executed.cells[-1].outputs if o.get("text", "").startswith("PROBE")
    )
    return (
        json.loads((tmp_path / "metrics.json").read_text()),
        json.loads(probe[len("PROBE") :]),
        executed,
    )


def check_reported_perplexity(nb, metrics, tmp_path, data_dir):
    """exp(evaluate(...)) on the test split, recomputed here, equals the reported test_ppl."""
    model, vocab, _ = nb.load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    corpus = nb.load_corpus(data_dir, custom=data_dir == TINY_CORPUS)
    test_data = nb.batchify(vocab.encode(corpus["test"]), metrics["eval_batch_size"])
    assert math.exp(nb.evaluate(model, test_data, 7)) == pytest.approx(
        metrics["test_ppl"], rel=1e-4
    )


def test_notebook_runs_top_to_bottom_on_the_tiny_corpus(nb, tmp_path):
    metrics, namespace, executed = run_notebook(
        tmp_path, DATA_DIR=str(TINY_CORPUS), CUSTOM_CORPUS=True
    )
    assert REQUIRED_METRICS <= metrics.keys()
    assert metrics["preset"] == "smoke" and metrics["epochs_completed"] == 1
    assert metrics["train_tokens"] == 870 and metrics["vocab_size"] == namespace["vocab"]
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert namespace == {
        "model": "LSTMLanguageModel",
        "vocab": metrics["vocab_size"],
        "device": "cpu",
    }
    assert (
        metrics["sampling_study"]["rows"]
        and metrics["sampling_study"]["real_text"]["model_ppl"] > 1
    )
    errors = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors
    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells)  # every cell ran, the main line's included
    assert metrics["plain_model"]["val_ppl"] > 1  # the plain model of sections 2-3 trained
    check_clean_outputs(executed, metrics["epochs_completed"])
    check_reported_perplexity(nb, metrics, tmp_path, TINY_CORPUS)


ABSOLUTE_PATH = re.compile(r"(?<![\w.~])(/tmp/|/home/|/work/|/root/|/Users/|[A-Z]:\\\\)")


def check_clean_outputs(notebook, epochs):
    """No output names an absolute path or a temporary kernel file; training prints a few
    outputs per epoch, not every progress frame."""
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    for output in outputs:
        text = json.dumps({key: value for key, value in output.items() if key != "data"})
        text += json.dumps(output.get("data", {}).get("text/plain", ""))
        assert "ipykernel" not in text and not ABSOLUTE_PATH.search(text), text[:300]
    training = next(c for c in notebook.cells if c.cell_type == "code" and "= train(" in c.source)
    assert len(training.outputs) <= 3 * math.ceil(epochs) + 2


def test_the_committed_notebook_reads_cleanly():
    """The committed run: no absolute paths, a few outputs per epoch, no markdown cell over 1,000
    words, and no word about how the notebook was developed."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    training = next(c for c in notebook.cells if c.cell_type == "code" and "= train(" in c.source)
    epochs = max(1, sum(1 for o in training.outputs if o.output_type == "display_data"))
    check_clean_outputs(notebook, epochs)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            assert len(cell.source.split()) <= 1000, cell.source[:80]
            for phrase in ("issue", "session", "benchmark command", "performance log in section"):
                assert phrase not in cell.source.lower(), (phrase, cell.source[:80])


def test_resume_continues_from_last_checkpoint(nb, tmp_path):
    run_notebook(tmp_path, DATA_DIR=str(TINY_CORPUS), CUSTOM_CORPUS=True, SAMPLING_STUDY=False)
    metrics, _, _ = run_notebook(
        tmp_path,
        DATA_DIR=str(TINY_CORPUS),
        CUSTOM_CORPUS=True,
        SAMPLING_STUDY=False,
        RESUME=True,
        EPOCHS=2,
    )
    assert metrics["epochs_completed"] == 2 and [row["epoch"] for row in metrics["history"]] == [
        1,
        2,
    ]


def test_train_false_reuses_the_saved_run(tmp_path):
    first, _, _ = run_notebook(
        tmp_path, DATA_DIR=str(TINY_CORPUS), CUSTOM_CORPUS=True, SAMPLING_STUDY=False
    )
    again, namespace, executed = run_notebook(
        tmp_path, DATA_DIR=str(TINY_CORPUS), CUSTOM_CORPUS=True, SAMPLING_STUDY=False, TRAIN=False
    )
    assert (
        again["val_ppl"] == pytest.approx(first["val_ppl"], rel=1e-9)
        and again["history"] == first["history"]
    )
    assert any(
        "TRAIN is False" in o.get("text", "") for c in executed.cells for o in c.get("outputs", [])
    )
    assert first["plain_model"] and again["plain_model"] is None  # no training at all the 2nd time


def test_bad_preset_fails_with_the_allowed_names(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="Choose one of"):
        run_notebook(tmp_path, PRESET="turbo", DATA_DIR=str(TINY_CORPUS), CUSTOM_CORPUS=True)


@pytest.mark.skipif(
    real_data_dir() is None, reason="WikiText-2 not on this machine (set WIKITEXT2_DIR)"
)
def test_smoke_preset_on_real_wikitext2(nb, tmp_path):
    metrics, namespace, _ = run_notebook(tmp_path, DATA_DIR=str(real_data_dir()))
    assert metrics["vocab_size"] == 33_278 and metrics["train_tokens"] == 2_088_628
    assert (metrics["valid_tokens"], metrics["test_tokens"]) == (217_646, 245_569)
    assert metrics["test_ppl"] < 33_278  # learned something in 20 batches
    check_reported_perplexity(nb, metrics, tmp_path, real_data_dir())
