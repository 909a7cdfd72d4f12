"""Write notebooks/degradation.ipynb and notebooks/ab_test.ipynb (outputs cleared).

    .venv/bin/python notebooks/build_notebooks.py

The notebooks are generated so that their code stays reviewable as plain Python here.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

OPEN_STORE = '''\
%matplotlib inline
import os
import sys
import tempfile
from pathlib import Path

# Make the repository importable when the notebook runs from notebooks/.
root = Path.cwd() if (Path.cwd() / "analytics").is_dir() else Path.cwd().parent
sys.path.insert(0, str(root))

import matplotlib.pyplot as plt  # the kernel's inline backend: works headless too
import pandas as pd

from analytics.load import load_store
from analytics.pushdown import open_source
from analytics.synthetic import write_synthetic_store

# The source: a SQLite store path, or a fleet's ClickHouse (clickhouse://host:8123/otel,
# chdb:///dir) fed by the Collector. $AMM_SOURCE, else $AMM_STORE, else data/amm.db.
spec = os.environ.get("AMM_SOURCE") or os.environ.get("AMM_STORE") or str(root / "data" / "amm.db")
is_url = "://" in spec and not spec.startswith("sqlite://")
if not is_url and not Path(spec.removeprefix("sqlite://")).is_file():
    # No recorded store: generate the synthetic one (known planted effects) instead.
    spec = str(Path(tempfile.mkdtemp()) / "synthetic.db")
    truth = write_synthetic_store(spec, seed=7)
    print(f"no store found; generated a synthetic store at {spec}")
source = open_source(spec)
data = load_store(source)
print(f"{spec}: {len(data.requests):,} requests, {len(data.attempts):,} attempts")
'''

DEGRADATION = [
    new_markdown_cell(
        "# Is a model getting worse?\n\n"
        "Per model, we follow three metrics of its provider attempts over time: error rate,\n"
        "p95 latency of successful attempts and mean quality score. For each, the attempts\n"
        "in time order form a series where *worse is larger* (the error indicator, log\n"
        "latency, minus the quality score), and `analytics.degradation` looks for a change\n"
        "of level:\n\n"
        "1. **Scan.** For every split *t* (at least 30 attempts each side), the likelihood\n"
        "   ratio of \"one level before *t*, a worse one after\" against \"one level\n"
        "   throughout\": Bernoulli for errors (so 1% -> 5% is one clear signal), Gaussian\n"
        "   for log latency and quality. The split with the largest ratio is the change\n"
        "   point; the splits whose ratio is within 7 of it are its **interval**.\n"
        "2. **Decide.** The change is real when that ratio exceeds 25, a threshold calibrated\n"
        "   by simulation to fewer than one false report per 10,000 requests\n"
        "   (`docs/validation.md`); binary segmentation then looks for further changes on\n"
        "   each side.\n"
        "3. **Report.** The level after the change is compared with a reference window of\n"
        "   up to 500 attempts just before it, and reported only if it also crosses\n"
        "   `PerformanceMonitor.detect_degradation(threshold=0.8)`: current/baseline < 0.8\n"
        "   for quality, baseline/current < 0.8 for p95 latency and for the error rate\n"
        "   (1% -> 5% has ratio 0.2). `detected_at` is when the data first showed it."),
    new_code_cell(OPEN_STORE),
    new_code_cell(
        "from analytics.degradation import detect_degradations, model_timeseries\n\n"
        "changes = detect_degradations(data.attempts, threshold=0.8)\n"
        "for d in changes:\n"
        "    print(d.describe())\n"
        "if not changes:\n"
        "    print('no degradation detected')\n"
        "pd.DataFrame([{'model': d.model, 'metric': d.metric, 'change at': d.change_time,\n"
        "               'interval from': d.change_low, 'interval to': d.change_high,\n"
        "               'detected at': d.detected_at, 'ratio': round(d.ratio, 3),\n"
        "               'statistic': round(d.statistic, 1)} for d in changes])"),
    new_code_cell(
        "series = model_timeseries(data.attempts, freq='3h')\n"
        "fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True)\n"
        "titles = {'error_rate': 'error rate', 'p95_latency_ms': 'p95 latency (ms)',\n"
        "          'quality': 'mean quality'}\n"
        "for ax, metric in zip(axes, titles):\n"
        "    for model, g in series.groupby('model'):\n"
        "        ax.plot(g['time'], g[metric], label=model)\n"
        "    for d in changes:\n"
        "        if d.metric == metric:\n"
        "            ax.axvspan(d.change_low, d.change_high, color='red', alpha=0.15)\n"
        "            ax.axvline(d.change_time, color='red', linestyle='--')\n"
        "            ax.annotate(f'{d.model} degraded', (d.change_time, ax.get_ylim()[1]),\n"
        "                        color='red', ha='left', va='top')\n"
        "    ax.set_ylabel(titles[metric])\n"
        "axes[0].legend(ncol=3, fontsize='small')\n"
        "fig.suptitle('Per-model metrics; dashed: change point, shaded: its interval')\n"
        "fig.tight_layout()\n"
        "plt.show()"),
    new_markdown_cell(
        "The scan itself, for the first degraded model and metric: the likelihood ratio at\n"
        "each split. It peaks at the change point, the dotted line is the critical value\n"
        "(25), and the shaded band is the change point's interval."),
    new_code_cell(
        "from analytics.degradation import CRITICAL, likelihood_ratios, metric_series\n\n"
        "if changes:\n"
        "    d = changes[0]\n"
        "    rows, x, binary = metric_series(data.attempts[data.attempts['model'] == d.model],\n"
        "                                    d.metric)\n"
        "    lr = likelihood_ratios(x, binary=binary, min_samples=30)\n"
        "    fig, ax = plt.subplots(figsize=(11, 3))\n"
        "    ax.plot(rows['time'].iloc[30:30 + len(lr)], lr)\n"
        "    ax.axhline(CRITICAL, color='grey', linestyle=':', label=f'critical {CRITICAL:g}')\n"
        "    ax.axvspan(d.change_low, d.change_high, color='red', alpha=0.15)\n"
        "    ax.axvline(d.change_time, color='red', linestyle='--', label='change point')\n"
        "    ax.set_title(f'Likelihood-ratio scan of {d.metric} for {d.model}')\n"
        "    ax.legend()\n"
        "    plt.show()"),
]

AB_TEST = [
    new_markdown_cell(
        "# Does an experiment have a winner?\n\n"
        "Only randomised traffic counts: requests whose assigned arm was actually used and\n"
        "that were not cache hits. Per arm we estimate mean quality, success rate, latency\n"
        "and cost with 95% CIs; arms are compared with Welch's t (means), a two-proportion\n"
        "z test (rates) and a bootstrap (p95 latency, cost per quality point).\n\n"
        "The **decision** uses a mixture sequential probability ratio test (mSPRT, Johari\n"
        "et al. 2017) over daily looks: its always-valid p-value may be checked every day\n"
        "without inflating false positives, unlike a t test re-run daily. Until it decides,\n"
        "the report says how many more requests per arm a fixed test would need for the\n"
        "minimum detectable effect (0.03 quality points, power 0.8)."),
    new_code_cell(OPEN_STORE),
    new_code_cell(
        "from analytics.ab import analyse_experiments\n\n"
        "reports = analyse_experiments(data.requests)\n"
        "for rep in reports:\n"
        "    for line in rep.verdicts:\n"
        "        print(line)\n"
        "if not reports:\n"
        "    print('no experiment in this store')"),
    new_code_cell(
        "for rep in reports:\n"
        "    display(rep.arms_table().set_index('arm').T)"),
    new_code_cell(
        "for rep in reports:\n"
        "    table = rep.arms_table()\n"
        "    fig, axes = plt.subplots(1, 3, figsize=(13, 3))\n"
        "    for ax, metric in zip(axes, ['quality', 'cost_per_request', 'latency_p95_ms']):\n"
        "        est = table[metric]\n"
        "        err = [est - table[f'{metric}_low'], table[f'{metric}_high'] - est]\n"
        "        ax.errorbar(est, table['arm'], xerr=err, fmt='o', capsize=6)\n"
        "        ax.set_title(f'{metric} (95% CI)')\n"
        "    fig.suptitle(rep.name)\n"
        "    fig.tight_layout()\n"
        "    plt.show()"),
    new_markdown_cell(
        "How the always-valid p-value of the quality difference evolved, day by day (the\n"
        "dashed line is alpha = 0.05; the decision is taken the first day it is crossed)."),
    new_code_cell(
        "from analytics.ab import randomised\n"
        "from analytics.stats import msprt\n\n"
        "for rep in reports:\n"
        "    for c in rep.comparisons:\n"
        "        fair = randomised(data.requests, rep.name)\n"
        "        fair = fair.assign(day=fair['time'].dt.floor('1D'))\n"
        "        days = sorted(fair['day'].unique())\n"
        "        looks = [[fair[(fair['day'] == d) & (fair['arm'] == arm)]['quality'].dropna()\n"
        "                  .to_numpy() for d in days] for arm in (c.arm_a, c.arm_b)]\n"
        "        p = [msprt(looks[0][: i + 1], looks[1][: i + 1], tau=rep.mde).p_value\n"
        "             for i in range(len(days))]\n"
        "        fig, ax = plt.subplots(figsize=(8, 3))\n"
        "        ax.semilogy(days, p, marker='o')\n"
        "        ax.axhline(0.05, color='red', linestyle='--')\n"
        "        ax.set_title(f'{c.arm_b} vs {c.arm_a}: always-valid p-value')\n"
        "        plt.show()"),
]


def build() -> list[Path]:
    """Write both notebooks; return their paths."""
    written = []
    for name, cells in (("degradation.ipynb", DEGRADATION), ("ab_test.ipynb", AB_TEST)):
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        path = HERE / name
        nbformat.write(nb, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build():
        print(f"wrote {p}")
