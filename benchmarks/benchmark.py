"""Run the notebook headless for a preset and a time budget, then print what it measured.

    python benchmarks/benchmark.py --preset cpu --budget 600
    python benchmarks/benchmark.py --preset cpu gpu --budget 600  # one, then the other
    python benchmarks/benchmark.py --preset cpu --budget 600 --no-bf16-units   # a laptop CPU

Each run executes the whole notebook with papermill (the sampling study off) into
benchmarks/runs/ and reads the numbers from its metrics.json. Runs are sequential on purpose: two
training jobs on one machine slow each other down several-fold. Nothing here is a test; it reports
numbers.

--no-bf16-units turns oneDNN off in the kernel before the first cell
(torch.backends.mkldnn.enabled = False). That removes the CPU's bf16 acceleration the way a laptop
CPU without bf16 units lacks it: bf16 matrix products and LSTMs fall back to slow emulation, while
float32 keeps its BLAS speed.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import nbformat
import papermill

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "lstm_text_generation.ipynb"

FIGURES = [  # (metrics key, label, format)
    ("device_name", "device", "{}"),
    ("size", "model size", "{}"),
    ("num_parameters", "parameters", "{:,}"),
    ("precision", "precision", "{}"),
    ("wall_seconds", "training + validation (s)", "{:.0f}"),
    ("train_seconds", "training steps (s)", "{:.0f}"),
    ("epochs_completed", "epochs", "{:.2f}"),
    ("train_tokens_per_second", "training tokens/s", "{:,.0f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:,.0f}"),
    ("val_ppl", "validation perplexity", "{:.1f}"),
    ("test_ppl", "test perplexity", "{:.1f}"),
]


EMULATE_NO_BF16 = (
    "import torch\n"
    "torch.backends.mkldnn.enabled = False  # emulate a CPU without bf16 units (oneDNN off)"
)


def run(
    preset: str, budget, data_dir, out_root: Path, no_bf16_units=False, sampling_study=False
) -> dict:
    run_dir = (
        out_root / f"{preset}-{budget or 'epochs'}s{'-no-bf16-units' if no_bf16_units else ''}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    notebook = NOTEBOOK
    if no_bf16_units:
        copy = nbformat.read(NOTEBOOK, as_version=4)
        copy.cells.insert(0, nbformat.v4.new_code_cell(EMULATE_NO_BF16))
        notebook = run_dir / "input.ipynb"
        nbformat.write(copy, notebook)
    parameters = dict(
        PRESET=preset,
        TIME_BUDGET_S=budget,
        SAMPLING_STUDY=sampling_study,
        CHECKPOINT_DIR=str(run_dir / "checkpoints"),
        METRICS_PATH=str(run_dir / "metrics.json"),
    )
    if data_dir:
        parameters["DATA_DIR"] = data_dir
    started = time.perf_counter()
    papermill.execute_notebook(
        str(notebook),
        str(run_dir / "executed.ipynb"),
        parameters=parameters,
        cwd=str(REPO_ROOT / "notebooks"),
        kernel_name="python3",
        progress_bar=False,
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["notebook_wall_seconds"] = round(time.perf_counter() - started, 1)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset", nargs="+", default=["cpu"], help="preset(s) to run, one after the other"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="TIME_BUDGET_S for every run (default: the preset's)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="DATA_DIR (default: the notebook's default)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "runs")
    parser.add_argument(
        "--no-bf16-units",
        action="store_true",
        help="emulate a CPU without bf16 units (oneDNN off in the kernel)",
    )
    parser.add_argument(
        "--sampling-study", action="store_true", help="keep the sampling study on (peak memory)"
    )
    args = parser.parse_args(argv)

    results = {
        preset: run(
            preset, args.budget, args.data_dir, args.out, args.no_bf16_units, args.sampling_study
        )
        for preset in args.preset
    }
    width = max(len(p) for p in results) + 2
    print(f"\n{'':28s}" + "".join(f"{p:>{max(width, 14)}s}" for p in results))
    for key, label, fmt in FIGURES + [("notebook_wall_seconds", "whole notebook (s)", "{:.0f}")]:
        cells = [fmt.format(m[key]) if m.get(key) is not None else "-" for m in results.values()]
        print(f"{label:28s}" + "".join(f"{c:>{max(width, 14)}s}" for c in cells))
    summary = args.out / "summary.json"
    summary.write_text(
        json.dumps({p: {k: m.get(k) for k, _, _ in FIGURES} for p, m in results.items()}, indent=2)
    )
    print(f"\nfull metrics in {args.out}/<preset>-<budget>s/metrics.json; this table in {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
