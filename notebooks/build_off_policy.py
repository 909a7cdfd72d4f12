"""Write notebooks/off_policy.ipynb (outputs cleared): the "what if" estimates.

    .venv/bin/python notebooks/build_off_policy.py

Kept apart from build_notebooks.py (another notebook family, another owner).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

CELLS = [
    new_markdown_cell(
        "# What if we had routed differently?\n\n"
        "Off-policy evaluation of routing policies from the decision log "
        "(`amm.selection.candidates`: every eligible model with its score and the probability "
        "the logging policy gave it). Set `AMM_SOURCE` (or `AMM_STORE`) to a store or a ClickHouse URL written with an exploring "
        "policy (`softmax` or `thompson`) to read production traces; without it the notebook "
        "uses `analytics.policy_sim`'s synthetic world, whose true values are known. "
        "See `docs/off_policy.md`."),
    new_code_cell(
        "import os\nimport sys\nfrom pathlib import Path\n\n"
        "root = Path.cwd() if (Path.cwd() / 'analytics').is_dir() else Path.cwd().parent\n"
        "sys.path.insert(0, str(root))\n\n"
        "import numpy as np\n\n"
        "from analytics.ope import evaluate_policy, load_decisions, what_if\n"
        "from analytics.policy_sim import World, coverage, thompson_target, true_value\n"
        "from analytics.pushdown import open_source\n\n"
        "world = World.default()\n"
        "# A store path or a fleet's ClickHouse URL (chdb:///dir, clickhouse://host:8123/otel)\n"
        "store = os.environ.get('AMM_SOURCE') or os.environ.get('AMM_STORE')\n"
        "log = (load_decisions(open_source(store)) if store\n"
        "       else world.log(5000, rng=np.random.default_rng(1)))\n"
        "LAM = 10.0\n"
        "print(len(log), 'decisions;', 'store' if store else 'synthetic world')"),
    new_markdown_cell("## The logged policy next to two alternatives"),
    new_code_cell(
        "print(what_if(log, ['always:sim-claude', 'cheapest', 'score'], lam=LAM))"),
    new_markdown_cell("## IPS, SNIPS and DR side by side, with the truth where it is known"),
    new_code_cell(
        "est = evaluate_policy(log, 'always:sim-claude', lam=LAM)\n"
        "for how, e in est.methods.items():\n"
        "    print(f'{how:6} {e.value:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}]')\n"
        "if not store:\n"
        "    print('true  ', round(true_value(world, lambda d: {'sim-claude': 1.0}), 4))"),
    new_markdown_cell(
        "## Coverage of the intervals (synthetic world, 20 repetitions here; "
        "`tests/test_ope.py` runs 100)"),
    new_code_cell(
        "pilot = world.log(2000, rng=np.random.default_rng(99))\n"
        "targets = {'always-best': 'always:sim-claude', 'cheapest': 'cheapest', 'score': 'score',\n"
        "           'thompson': thompson_target(world, pilot)}\n"
        "for name, row in coverage(world, targets, reps=20, n=5000, seed=3).items():\n"
        "    print(f\"{name:12} true {row['true']:.4f}  DR coverage {row['dr_coverage']:.2f}  \"\n"
        "          f\"SNIPS {row['snips_coverage']:.2f}  IPS {row['ips_coverage']:.2f}\")"),
    new_markdown_cell(
        "## A deterministic logger cannot answer\n\n"
        "With the `score` policy every other model has logged probability 0: "
        "`support_ok` is false and the reason says where."),
    new_code_cell(
        "p = np.zeros(world.scores.shape)\n"
        "p[:, world.scores[0].argmax()] = 1.0\n"
        "det = world.log(2000, rng=np.random.default_rng(5), probabilities=p)\n"
        "e = evaluate_policy(det, 'always:sim-claude', lam=LAM)\n"
        "print(e.support_ok, '-', e.support_reason)"),
]


def main() -> None:
    nb = new_notebook(cells=CELLS, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, HERE / "off_policy.ipynb")


if __name__ == "__main__":
    main()
