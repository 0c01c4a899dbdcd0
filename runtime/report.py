"""`nasdsl report`: what a search found, as pictures and a short markdown summary.

    pareto.png    validation accuracy against MACs and against params; the front marked
    progress.png  accuracy of every trial in proposal order, the best so far, and each
                  child linked to its parent (the lineage)
    summary.md    the search's settings, the best trials, the front, the failures
"""

from __future__ import annotations

from pathlib import Path

from .search import pareto_front
from .store import Store, Trial


def write_report(store: Store, out) -> dict:
    """Write the report for `store` into folder `out`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials = store.trials()
    done = [t for t in trials if t.status == "done"]
    written = {"pareto": out / "pareto.png", "progress": out / "progress.png", "summary": out / "summary.md"}
    plot_pareto(done, written["pareto"])
    plot_progress(trials, written["progress"])
    written["summary"].write_text(summary_markdown(store, trials))
    return {k: str(v) for k, v in written.items()}


def plot_pareto(done: list[Trial], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, cost, label in ((axes[0], "macs", "MACs"), (axes[1], "params", "parameters")):
        ax.scatter([getattr(t, cost) for t in done], [t.val_acc for t in done], s=14, color="0.6", label="trials")
        front = pareto_front(done, cost)
        ax.step([getattr(t, cost) for t in front], [t.val_acc for t in front], where="post", color="C3",
                marker="o", markersize=4, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy")
    axes[0].legend(loc="lower right")
    fig.suptitle(f"{len(done)} trained architectures: accuracy against cost")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_progress(trials: list[Trial], path: Path) -> None:
    import matplotlib.pyplot as plt

    done = {t.id: t for t in trials if t.status == "done"}
    fig, ax = plt.subplots(figsize=(8, 4))
    for t in done.values():  # lineage: a line from each parent to its child
        for p in t.parents:
            if p in done:
                ax.plot([p, t.id], [done[p].val_acc, t.val_acc], color="C0", alpha=0.25, linewidth=0.8)
    ax.scatter(list(done), [t.val_acc for t in done.values()], s=14, color="C0", label="trial", zorder=3)
    failed = [t.id for t in trials if t.status == "failed"]
    if failed and done:
        ax.scatter(failed, [min(t.val_acc for t in done.values())] * len(failed), marker="x", color="C3",
                   label="failed", zorder=3)
    best, xs, ys = -1.0, [], []
    for t in sorted(done.values(), key=lambda t: t.id):
        best = max(best, t.val_acc)
        xs.append(t.id)
        ys.append(best)
    ax.step(xs, ys, where="post", color="C2", label="best so far")
    ax.set_xlabel("trial (proposal order)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_markdown(store: Store, trials: list[Trial]) -> str:
    config = store.config
    done = [t for t in trials if t.status == "done"]
    failed = [t for t in trials if t.status == "failed"]
    train = config.get("train", {})
    lines = [f"# Search report: {config['space']['file']} on {config['dataset']}", "",
             f"- algorithm: {config['algorithm']} {config.get('algorithm_settings') or ''}".rstrip(),
             f"- trials: {len(done)} done, {len(failed)} failed, {len(trials) - len(done) - len(failed)} unfinished "
             f"(budget {config['trials']})",
             f"- training per trial: {train.get('epochs')} epochs, {train.get('optimizer')}, lr {train.get('lr')}, "
             f"batch {train.get('batch_size')}" + (f", {config['limit']} training images" if config.get("limit") else ""),
             f"- constraints: max params {config.get('max_params') or '-'}, max MACs {config.get('max_macs') or '-'}",
             f"- seed {config['seed']}; store `{store.path}`", "",
             "![Pareto front](pareto.png)", "", "![progress and lineage](progress.png)", "",
             "## Best trials (by validation accuracy)", "", *_table(sorted(done, key=lambda t: -t.val_acc)[:10]),
             "", "## Pareto front (validation accuracy vs MACs)", "", *_table(pareto_front(done, "macs"))]
    if failed:
        lines += ["", "## Failed trials", "", *(f"- trial {t.id}: {t.reason}" for t in failed)]
    return "\n".join(lines) + "\n"


def _table(trials: list[Trial]) -> list[str]:
    rows = ["| trial | val acc | test acc | params | MACs | parent | derivation |", "|---|---|---|---|---|---|---|"]
    for t in trials:
        test = f"{t.test_acc:.4f}" if t.test_acc is not None else "-"
        rows.append(f"| {t.id} | {t.val_acc:.4f} | {test} | {t.params:,} | {t.macs:,} | {t.parent or '-'} "
                    f"| `{t.derivation}` |")
    return rows
