"""Pictures of a tuning result (matplotlib, Agg backend, PNG files).

* ``pareto.png``: accuracy against cost (or tokens, when no prices are set) of every configuration
  tried, the accuracy–cost front, the chosen configuration, the best single candidate model and the
  large reference model(s);
* ``samples.png``: accuracy against samples per model for the chosen pool (one model's budget
  varied, the others held), and each model alone.
"""
from __future__ import annotations

from pathlib import Path

from muxlang.errors import MuxError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _x(result: dict) -> tuple[str, str]:
    costs = [p.get("cost", 0.0) for p in result.get("points", [])] + [
        e.get("cost", 0.0) for e in result.get("front_accuracy_cost", [])]
    if any(c > 0 for c in costs):
        return "cost", "expected cost per item (USD)"
    tokens = [p.get("tokens", 0.0) for p in result.get("points", [])]
    if any(t > 0 for t in tokens):
        return "tokens", "expected tokens per item"
    return "samples", "samples drawn per item (no prices or token counts stored)"


def plot_pareto(result: dict, path: Path) -> Path:
    plt = _pyplot()
    key, label = _x(result)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    points = result.get("points", [])
    if points:
        ax.scatter([p[key] for p in points], [100 * p["accuracy"] for p in points], s=8,
                   color="#bbbbbb", label="configurations tried (validation)", zorder=1)
    front = sorted(result.get("front_accuracy_cost", []), key=lambda e: e[key])
    if front:
        ax.step([e[key] for e in front], [100 * e["val_accuracy"] for e in front], where="post",
                color="#1f77b4", lw=1.5, zorder=2)
        ax.scatter([e[key] for e in front], [100 * e["val_accuracy"] for e in front],
                   color="#1f77b4", s=22, zorder=3, label="accuracy–cost front (validation)")
        tested = [e for e in front if e.get("test_accuracy") is not None]
        if tested:
            ax.scatter([e[key] for e in tested], [100 * e["test_accuracy"] for e in tested],
                       facecolors="none", edgecolors="#1f77b4", s=30, zorder=3,
                       label="same configurations on test")
    best = result["best"]
    ax.scatter([best[key]], [100 * best["val_accuracy"]], marker="*", s=260, color="#d62728",
               zorder=5, label=f"chosen ({best['rule']}, {len(best['pool'])} models) validation")
    if best.get("test_accuracy") is not None:
        ax.scatter([best[key]], [100 * best["test_accuracy"]], marker="*", s=260,
                   facecolors="none", edgecolors="#d62728", zorder=5, label="chosen, test")
    bs = result["baselines"]["best_single"]
    ax.scatter([bs[key]], [100 * bs["val_accuracy"]], marker="s", s=70, color="#2ca02c",
               zorder=4, label=f"best single: {bs['model']} (validation)")
    for name, ref in result["baselines"].get("references", {}).items():
        acc = ref["test_accuracy"] if ref.get("test_accuracy") is not None else ref["val_accuracy"]
        which = "test" if ref.get("test_accuracy") is not None else "validation"
        ax.axhline(100 * acc, color="#9467bd", ls="--", lw=1)
        ax.scatter([ref[key]], [100 * acc], marker="D", s=60, color="#9467bd", zorder=4,
                   label=f"reference: {name} ({which})")
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"tune {result['tune']}: accuracy vs {key} on {result['dataset']['name']}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_samples(result: dict, path: Path) -> Path:
    """Left: accuracy vs samples per model for the chosen pool. Right: the best pool of each
    size (the paper's other scaling dimension), validation and test."""
    plt = _pyplot()
    curves = result.get("curves", {})
    sizes = result.get("pool_sizes", [])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    budgets = set()
    for i, (model, pts) in enumerate(sorted(curves.items())):
        c = colors[i % len(colors)]
        xs = [p["budget"] for p in pts]
        budgets.update(xs)
        ax.plot(xs, [100 * p["val_accuracy"] for p in pts], marker="o", color=c,
                label=f"pool, varying {model}")
        ax.plot(xs, [100 * p["alone_val_accuracy"] for p in pts], ls=":", marker=".", color=c,
                label=f"{model} alone")
        chosen = result["best"]["pool"].get(model)
        hit = [p for p in pts if p["budget"] == chosen]
        if hit:
            ax.scatter([chosen], [100 * hit[0]["val_accuracy"]], marker="*", s=160, color=c,
                       zorder=4)
    if budgets:
        ax.set_xticks(sorted(budgets))
    ax.set_xlabel("samples per item of one model (the others as chosen)")
    ax.set_ylabel("validation accuracy (%)")
    title = "accuracy vs samples per model (chosen pool starred)"
    if len(budgets) <= 1:  # in the title: a note inside the axes collides with the legend
        title += "\none sample stored per model: budgets cannot vary on this data"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    for j, rule in enumerate(sorted({e["rule"] for e in sizes})):
        rows = [e for e in sizes if e["rule"] == rule]
        c = colors[j % len(colors)]
        ax2.plot([e["size"] for e in rows], [100 * e["val_accuracy"] for e in rows], marker="o",
                 color=c, label=f"{rule}, best pool of each size (validation)")
        tested = [e for e in rows if e.get("test_accuracy") is not None]
        if tested:
            ax2.plot([e["size"] for e in tested], [100 * e["test_accuracy"] for e in tested],
                     marker="o", ls="--", mfc="none", color=c, label=f"{rule}, same pools on test")
    for name, ref in result["baselines"].get("references", {}).items():
        acc = ref["test_accuracy"] if ref.get("test_accuracy") is not None else ref["val_accuracy"]
        ax2.axhline(100 * acc, color="#9467bd", ls=":", lw=1.2, label=f"{name} (reference)")
    ax2.set_xlabel("models in the pool")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_title("accuracy vs pool size", fontsize=10)
    ax2.grid(alpha=0.3)
    if sizes:
        ax2.set_xticks(sorted({e["size"] for e in sizes}))
        ax2.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"tune {result['tune']} on {result['dataset']['name']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(result: dict, directory: str) -> list[str]:
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MuxError(f"cannot create {directory}: {error.strerror or error}")
    if not out.is_dir():
        raise MuxError(f"{directory} is not a directory")
    return [str(plot_pareto(result, out / "pareto.png")),
            str(plot_samples(result, out / "samples.png"))]
