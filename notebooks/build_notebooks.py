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
from analytics.synthetic import write_synthetic_store

store = Path(os.environ.get("AMM_STORE", root / "data" / "amm.db"))
if not store.is_file():
    # No recorded store: generate the synthetic one (known planted effects) instead.
    store = Path(tempfile.mkdtemp()) / "synthetic.db"
    truth = write_synthetic_store(store, seed=7)
    print(f"no store found; generated a synthetic store at {store}")
data = load_store(store)
print(f"{store}: {len(data.requests):,} requests, {len(data.attempts):,} attempts")
'''

DEGRADATION = [
    new_markdown_cell(
        "# Is a model getting worse?\n\n"
        "Per model, we follow three metrics of its provider attempts over time: error rate,\n"
        "p95 latency of successful attempts and mean quality score. A one-sided **CUSUM**\n"
        "per metric accumulates standardised deviations from a baseline (the first quarter\n"
        "of the data) in the *worse* direction; when the sum crosses `h = 5` an alarm is\n"
        "raised, and the change time is the last moment the sum was zero. A change is\n"
        "reported only when it crosses the same threshold as\n"
        "`PerformanceMonitor.detect_degradation(threshold=0.8)`: recent/baseline < 0.8 for\n"
        "success rate and quality, baseline/recent < 0.8 for p95 latency."),
    new_code_cell(OPEN_STORE),
    new_code_cell(
        "from analytics.degradation import detect_degradations, model_timeseries\n\n"
        "changes = detect_degradations(data.attempts, threshold=0.8)\n"
        "for d in changes:\n"
        "    print(d.describe())\n"
        "if not changes:\n"
        "    print('no degradation detected')"),
    new_code_cell(
        "series = model_timeseries(data.attempts, freq='3h')\n"
        "fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True)\n"
        "titles = {'error_rate': 'error rate', 'p95_latency_ms': 'p95 latency (ms)',\n"
        "          'quality': 'mean quality'}\n"
        "wanted = {'error_rate': 'success_rate', 'p95_latency_ms': 'p95_latency_ms',\n"
        "          'quality': 'quality'}\n"
        "for ax, metric in zip(axes, titles):\n"
        "    for model, g in series.groupby('model'):\n"
        "        ax.plot(g['time'], g[metric], label=model)\n"
        "    for d in changes:\n"
        "        if d.metric == wanted[metric]:\n"
        "            ax.axvline(d.change_time, color='red', linestyle='--')\n"
        "            ax.annotate(f'{d.model} degraded', (d.change_time, ax.get_ylim()[1]),\n"
        "                        color='red', ha='left', va='top')\n"
        "    ax.set_ylabel(titles[metric])\n"
        "axes[0].legend(ncol=3, fontsize='small')\n"
        "fig.suptitle('Per-model metrics; dashed: detected change points')\n"
        "fig.tight_layout()\n"
        "plt.show()"),
    new_markdown_cell(
        "The CUSUM statistic itself, for the first degraded model and metric: flat near zero\n"
        "while the model behaves as in its baseline, then climbing steadily after the change."),
    new_code_cell(
        "import numpy as np\n\n"
        "if changes:\n"
        "    d = changes[0]\n"
        "    rows = data.attempts[data.attempts['model'] == d.model].sort_values('time')\n"
        "    if d.metric == 'success_rate':\n"
        "        x = (~rows['success']).to_numpy(float)\n"
        "    elif d.metric == 'quality':\n"
        "        rows = rows[rows['quality'].notna()]\n"
        "        x = -rows['quality'].to_numpy(float)\n"
        "    else:\n"
        "        rows = rows[rows['success']]\n"
        "        x = np.log(rows['latency_ms'].to_numpy(float))\n"
        "    n0 = max(30, len(x) // 4)\n"
        "    z = (x - x[:n0].mean()) / x[:n0].std()\n"
        "    s = np.zeros(len(z))\n"
        "    for i in range(1, len(z)):\n"
        "        s[i] = max(0.0, s[i - 1] + z[i] - 0.25)\n"
        "    fig, ax = plt.subplots(figsize=(11, 3))\n"
        "    ax.plot(rows['time'], s)\n"
        "    ax.axvline(d.change_time, color='red', linestyle='--', label='estimated change')\n"
        "    ax.set_title(f'CUSUM of {d.metric} for {d.model}')\n"
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
