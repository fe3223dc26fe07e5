"""Run the notebook headless for a preset and a time budget, then print what it measured.

    python benchmarks/benchmark.py --preset cpu --budget 600
    python benchmarks/benchmark.py --preset cpu pytorch_examples --budget 600   # one after the other

Each run executes the whole notebook with papermill (the sampling study off) into benchmarks/runs/ and
reads the numbers from its metrics.json. Runs are sequential on purpose: two training jobs on one
machine slow each other down several-fold. Nothing here is a test; it reports numbers.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import papermill

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "lstm_text_generation.ipynb"

FIGURES = [  # (metrics key, label, format)
    ("device_name", "device", "{}"),
    ("num_parameters", "parameters", "{:,}"),
    ("train_seconds", "training time (s)", "{:.0f}"),
    ("epochs_completed", "epochs", "{}"),
    ("train_tokens_per_second", "training tokens/s", "{:,.0f}"),
    ("achieved_gflops", "achieved GFLOP/s", "{:.1f}"),
    ("matmul_peak_gflops", "matmul peak GFLOP/s", "{:.1f}"),
    ("fraction_of_matmul_peak", "fraction of peak", "{:.1%}"),
    ("peak_memory_mb", "peak memory (MB)", "{:,.0f}"),
    ("val_ppl", "validation perplexity", "{:.1f}"),
    ("test_ppl", "test perplexity", "{:.1f}"),
]


def run(preset: str, budget, data_dir, out_root: Path) -> dict:
    run_dir = out_root / f"{preset}-{budget or 'epochs'}s"
    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = dict(PRESET=preset, TIME_BUDGET_S=budget, SAMPLING_STUDY=False,
                      CHECKPOINT_DIR=str(run_dir / "checkpoints"), METRICS_PATH=str(run_dir / "metrics.json"))
    if data_dir:
        parameters["DATA_DIR"] = data_dir
    started = time.perf_counter()
    papermill.execute_notebook(str(NOTEBOOK), str(run_dir / "executed.ipynb"), parameters=parameters,
                               cwd=str(REPO_ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["notebook_wall_seconds"] = round(time.perf_counter() - started, 1)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", nargs="+", default=["cpu"], help="preset(s) to run, one after the other")
    parser.add_argument("--budget", type=float, default=None, help="TIME_BUDGET_S for every run (default: the preset's)")
    parser.add_argument("--data-dir", default=None, help="DATA_DIR (default: the notebook's default)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "runs")
    args = parser.parse_args(argv)

    results = {preset: run(preset, args.budget, args.data_dir, args.out) for preset in args.preset}
    width = max(len(p) for p in results) + 2
    print(f"\n{'':24s}" + "".join(f"{p:>{max(width, 14)}s}" for p in results))
    for key, label, fmt in FIGURES + [("notebook_wall_seconds", "whole notebook (s)", "{:.0f}")]:
        cells = [fmt.format(m[key]) if m.get(key) is not None else "-" for m in results.values()]
        print(f"{label:24s}" + "".join(f"{c:>{max(width, 14)}s}" for c in cells))
    summary = args.out / "summary.json"
    summary.write_text(json.dumps({p: {k: m.get(k) for k, _, _ in FIGURES} for p, m in results.items()}, indent=2))
    print(f"\nfull metrics in {args.out}/<preset>-<budget>s/metrics.json; this table in {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
