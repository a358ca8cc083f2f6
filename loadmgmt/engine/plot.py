"""PNG plot of a simulator run: per-phase load against the limit, and one line per car.

matplotlib is imported here, lazily and with the Agg backend, so that the engine itself never
needs it (the Django workers only import ``allocate``).
"""

from __future__ import annotations

import math
from pathlib import Path

from .model import PHASE_NAMES
from .simulate import Result


def write_png(result: Result, out: str | Path, title: str | None = None) -> Path:
    """Draw ``result`` into ``out`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = result.trace
    minutes = [t / 60.0 for t in tr.times]
    fig, axes = plt.subplots(
        4, 1, figsize=(11, 10), sharex=True, gridspec_kw={"height_ratios": [1, 1, 1, 1.6]}
    )
    colours = ("#1f77b4", "#2ca02c", "#d62728")
    for g in range(3):
        ax = axes[g]
        ax.plot(minutes, [x[g] for x in tr.load], color=colours[g], lw=1.2, label="load")
        ax.plot(minutes, [x[g] for x in tr.other], color="grey", lw=0.8, ls="--", label="other")
        ax.plot(minutes, [x[g] for x in tr.limit], color="black", lw=1.4, label="limit")
        ax.set_ylabel(f"{PHASE_NAMES[g]} (A)")
        top = max(
            max((x[g] for x in tr.limit), default=1.0), max((x[g] for x in tr.load), default=1.0)
        )
        ax.set_ylim(0, top * 1.1)
        ax.grid(alpha=0.3)
        if g == 0:
            ax.legend(loc="upper right", fontsize=8, ncol=3)
    ax = axes[3]
    for label, series in tr.cars.items():
        ys = [math.nan] * (len(minutes) - len(series)) + [s[0] for s in series]
        ax.plot(minutes, ys, lw=0.8, label=label)
    ax.set_ylabel("car current per phase (A)")
    ax.set_xlabel("minutes")
    ax.grid(alpha=0.3)
    if len(tr.cars) <= 24:
        ax.legend(loc="upper right", fontsize=6, ncol=4)
    m = result.metrics
    worst = max(m.overload_as.values(), default=0.0)
    fig.suptitle(
        (title or f"{result.scenario}: load at {tr.node_id}")
        + f"\noverload {worst:.0f} A·s, utilisation {m.utilisation:.0%},"
        f" Jain {m.jain:.2f}, {m.energy_kwh:.0f} kWh",
        fontsize=11,
    )
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
