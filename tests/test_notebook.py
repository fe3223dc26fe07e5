"""The notebook run headless with papermill, as README command 1 runs it, on the tiny corpus."""

import ast
import json
import math
import re
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest
import torch

from conftest import NOTEBOOK, TINY_CORPUS, real_data_dir

# Appended to a copy of the notebook: what the kernel's namespace holds after a run.
PROBE = """import json as _json
_left = [name for name in ("corpus", "plain_model", "optimizer") if name in globals()]
_probe = {"model": type(model).__name__, "adaptive": model.adaptive, "big objects left": _left}
print("PROBE" + _json.dumps(_probe))"""


def run_notebook(tmp_path, notebook=NOTEBOOK, **parameters):
    copy = nbformat.read(notebook, as_version=4)
    copy.cells.append(nbformat.v4.new_code_cell(PROBE))
    nbformat.write(copy, tmp_path / "input.ipynb")
    parameters = (
        dict(
            PRESET="smoke",
            DATA_DIR=str(TINY_CORPUS),
            CUSTOM_CORPUS=True,
            SEED=1,
            PLAIN_SECONDS=1,
            CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
            METRICS_PATH=str(tmp_path / "metrics.json"),
        )
        | parameters
    )
    executed = papermill.execute_notebook(
        str(tmp_path / "input.ipynb"),
        str(tmp_path / "output.ipynb"),
        parameters=parameters,
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
    )
    probe = next(
        o["text"] for o in executed.cells[-1].outputs if o.get("text", "").startswith("PROBE")
    )
    metrics_path = parameters["METRICS_PATH"] or tmp_path / "checkpoints" / "metrics.json"
    metrics = json.loads(Path(metrics_path).read_text())
    return metrics, json.loads(probe[len("PROBE") :]), executed


def outputs(notebook) -> str:
    texts = [
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
    ]
    return "\n".join(texts)


def test_the_tiny_run_top_to_bottom(nb, tmp_path):
    metrics, probe, executed = run_notebook(tmp_path, PLAIN_SECONDS=0, EPOCHS=20)
    assert metrics["preset"] == "smoke" and metrics["epochs_completed"] == 20
    assert metrics["train_tokens"] == 870 and metrics["vocab_size"] == 320
    assert probe == {"model": "LSTMLanguageModel", "adaptive": True, "big objects left": []}
    assert set(metrics["baselines"]) == {"unigram", "bigram"}
    assert metrics["equal_time"]["improved_val_ppl"] > 1
    assert [row["note"] for row in metrics["history"]].count("equal time") == 1
    assert metrics["plain_model"]["val_ppl"] > 1 and metrics["sampling_study"]["rows"]
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]))
    memory = metrics["memory"]
    assert {"context_curve", "cache", "dynamic", "both", "seconds"} <= memory.keys()
    assert {"theta", "lambda", "window", "val_ppl", "test_ppl", "seconds"} <= memory["cache"].keys()
    assert {"lr", "val_ppl", "test_ppl", "seconds"} <= memory["dynamic"].keys()
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    text = outputs(executed)
    assert not re.search(r"(?<![\w.~])(/tmp/|/home/|/work/|/root/|/Users/|[A-Z]:\\\\)", text)
    assert "ipykernel" not in text and "Traceback" not in text
    assert "- Both together:" in text and "closest on all three:" in text  # 10.2 and 10.6
    assert "chosen at an end of its grid:" in text  # 9.5
    assert memory["both"]["lr"] == memory["dynamic"]["lr"]  # the both row has its step size
    model, vocab, _ = nb.load_checkpoint(tmp_path / "checkpoints" / "best.pt")  # the test number
    test_data = nb.batchify(vocab.encode(nb.load_corpus(TINY_CORPUS, custom=True)["test"]), 10)
    assert math.exp(nb.evaluate(model, test_data, 7)) == pytest.approx(
        metrics["test_ppl"], rel=1e-4
    )


def test_train_false_after_a_restart_and_resume(nb, tmp_path):
    first, _, _ = run_notebook(tmp_path, SAMPLING_STUDY=False, MEMORY_STUDY=False)
    again, _, executed = run_notebook(
        tmp_path, SAMPLING_STUDY=False, MEMORY_STUDY=False, TRAIN=False
    )
    assert again["val_ppl"] == pytest.approx(first["val_ppl"], rel=1e-9)
    assert again["history"] == first["history"] and again["plain_model"] == first["plain_model"]
    assert "TRAIN is False" in outputs(executed)
    # RESUME keeps the saved run's settings (here the smoke preset's) whatever PRESET says now
    resumed, _, _ = run_notebook(
        tmp_path, SAMPLING_STUDY=False, MEMORY_STUDY=False, RESUME=True, EPOCHS=2, PRESET="cpu"
    )
    assert (
        resumed["preset"] == "smoke"
        and resumed["config"]["bptt"] == 35
        and resumed["epochs_completed"] == 2
    )
    assert [row["epochs_completed"] for row in resumed["history"]] == [1, 2]


def test_a_float16_run_opens_on_a_cpu_for_generation(tmp_path):
    """Trained in float16 (a T4), opened with TRAIN = False on a laptop: nothing trains, so the
    saved precision must not be refused; RESUME, which would train in it, is."""
    run_notebook(tmp_path, SAMPLING_STUDY=False, MEMORY_STUDY=False)
    for name in ("best.pt", "last.pt"):
        path = tmp_path / "checkpoints" / name
        saved = torch.load(path, weights_only=True)
        saved["config"]["precision"] = "fp16"
        torch.save(saved, path)
    metrics, _, _ = run_notebook(tmp_path, SAMPLING_STUDY=False, MEMORY_STUDY=False, TRAIN=False)
    assert metrics["precision"] == "fp16" and metrics["test_ppl"] > 1
    with pytest.raises(papermill.PapermillExecutionError, match="fp16"):
        run_notebook(tmp_path, SAMPLING_STUDY=False, MEMORY_STUDY=False, RESUME=True, EPOCHS=2)


def test_another_corpus_is_refused_before_anything_is_measured(tmp_path):
    run_notebook(tmp_path, SAMPLING_STUDY=False, MEMORY_STUDY=False)
    other = tmp_path / "other"
    shutil.copytree(TINY_CORPUS, other)
    (other / "train.txt").write_text("a different text entirely\n" * 50)
    with pytest.raises(papermill.PapermillExecutionError, match="another vocabulary"):
        run_notebook(tmp_path, DATA_DIR=str(other), TRAIN=False)
    executed = nbformat.read(tmp_path / "output.ipynb", as_version=4)
    assert "test perplexity" not in outputs(executed)


def test_the_notebook_copied_alone_outside_the_repository(tmp_path):
    alone = tmp_path / "alone.ipynb"
    shutil.copy(NOTEBOOK, alone)
    metrics, _, _ = run_notebook(
        tmp_path,
        notebook=alone,
        CHECKPOINT_DIR=None,
        METRICS_PATH=None,
        SAMPLING_STUDY=False,
        MEMORY_STUDY=False,
    )
    assert (tmp_path / "checkpoints" / "best.pt").is_file() and metrics["preset"] == "smoke"


def test_a_bad_preset_names_the_allowed_ones(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="one of"):
        run_notebook(tmp_path, PRESET="turbo")


@pytest.mark.skipif(real_data_dir() is None, reason="WikiText-2 not here (set WIKITEXT2_DIR)")
def test_the_smoke_preset_on_real_wikitext2(nb, tmp_path):
    metrics, _, executed = run_notebook(
        tmp_path, DATA_DIR=str(real_data_dir()), CUSTOM_CORPUS=False, MEMORY_STUDY=False
    )
    assert metrics["vocab_size"] == 33_278 and metrics["train_tokens"] == 2_088_628
    assert 900 < metrics["baselines"]["unigram"] < 1_050 and metrics["test_ppl"] < 33_278
    assert "2,088,628" in outputs(executed)


def code_cells(notebook):
    return [c.source for c in notebook.cells if c.cell_type == "code"]


def test_the_committed_notebook_reads_as_a_lesson():
    """One real run, top to bottom; short cells and functions; no formatter artifacts; the
    markdown speaks about language models, not about how the notebook was made."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    counts = [c.execution_count for c in notebook.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
    lines = [
        len([line for line in source.splitlines() if line.strip()])
        for source in code_cells(notebook)
    ]
    assert max(lines) <= 60
    for source in code_cells(notebook):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef):
                body = source.splitlines()[node.lineno - 1 : node.end_lineno]
                assert len([line for line in body if line.strip()]) <= 40, node.name
        assert not re.search(r"[(\[]\s*\n\s*[\w.]+\s*\n\s*[)\]]", source)  # a lone name wrapped
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for word in ("issue", "session", "README", "performance log"):
                assert word not in cell.source, (word, cell.source[:80])
