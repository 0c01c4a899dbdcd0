"""`nasdsl report`: what a search found, as pictures and a short markdown summary.

    pareto.png      validation accuracy against MACs and against params; the front marked
    progress.png    accuracy of every trial in proposal order, the best so far, and each
                    child linked to its parent
    population.png  mean and range of the living population's params as trials finish
                    (MENAS's slimming curve: tickets replace the models they were cut from)
    lineage.png     the family tree: depth = generations from a random ancestor, colour =
                    accuracy, size = params, dashed = a model to its lottery ticket
    supernet.png    a one-shot search's supernet loss and training accuracy per epoch
    ranking.png     a one-shot search's shared-weight accuracy against stand-alone accuracy
                    of the retrained derivations, with Kendall's tau
    supertickets.png  a SuperTickets search's MACs, parameters, sparsity and accuracy per
                    epoch, the shrink steps marked
    summary.md      the search's settings, the best trials, the front, the failures

A `nasdsl sparsify` store's report is its own (`sparsify_report`): sparsify.png (group
sparsity and accuracy per epoch), erased.png (the network, its erased structures
filled; needs Graphviz) and summary.md (the sub-network against the supernet).
"""

from __future__ import annotations

import math
from pathlib import Path

from .propose import living_population
from .search import pareto_front
from .store import Store, Trial


def write_report(store: Store, out) -> dict:
    """Write the report for `store` into folder `out`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if store.config.get("command") == "sparsify":
        return sparsify_report(store, out)
    trials = store.trials()
    done = [t for t in trials if t.status == "done"]
    written = {name: out / f"{name}.png" for name in ("pareto", "progress", "population", "lineage")}
    epochs = store.get_state("supernet_epochs")
    if epochs:
        written.update(supernet=out / "supernet.png", ranking=out / "ranking.png")
        plot_supernet(epochs, written["supernet"])
        plot_ranking(done, written["ranking"])
    tickets = store.get_state("supertickets")
    if tickets:
        written["supertickets"] = out / "supertickets.png"
        plot_supertickets(tickets, written["supertickets"])
    written["summary"] = out / "summary.md"
    plot_pareto(done, written["pareto"])
    plot_progress(trials, written["progress"])
    plot_population(store, written["population"])
    plot_lineage(done, written["lineage"])
    written["summary"].write_text(summary_markdown(store, trials))
    return {k: str(v) for k, v in written.items()}


def plot_pareto(done: list[Trial], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True, layout="constrained")
    for ax, cost, label in ((axes[0], "macs", "MACs"), (axes[1], "params", "parameters")):
        ax.scatter([getattr(t, cost) for t in done], [t.val_acc for t in done], s=14, color="0.6", label="trials")
        front = pareto_front(done, cost)
        ax.step([getattr(t, cost) for t in front], [t.val_acc for t in front], where="post", color="C3",
                marker="o", markersize=4, label="Pareto front")
        _cost_axis(ax, [getattr(t, cost) for t in done])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2)  # off the points
    fig.suptitle(f"{len(done)} trained architectures: accuracy against cost")
    save(fig, path)


def plot_supertickets(rows: list[dict], path: Path) -> None:
    """The joint search-and-prune over its epochs: what is left of the network (MACs and
    parameters, as shares of the first epoch's; the weights' density), and its
    accuracy; dotted lines where a shrink step rebuilt it."""
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    left.plot(epochs, [r["macs"] / rows[0]["macs"] for r in rows], marker="o", label="MACs")
    left.plot(epochs, [r["params"] / rows[0]["params"] for r in rows], marker="s", label="parameters")
    left.plot(epochs, [1 - r["sparsity"] for r in rows], marker="^", label="weight density (1 - sparsity)")
    left.plot(epochs, [r["nonzero_params"] / rows[0]["params"] for r in rows], marker=".",
              label="nonzero parameters")
    left.set_ylim(0, 1.05)
    left.set_ylabel("share of the supernet's")
    right.plot(epochs, [r["val_acc"] for r in rows], marker="o", color="C3", label="validation")
    right.plot(epochs, [r["train_acc"] for r in rows], marker=".", color="0.5", label="training")
    right.set_ylabel("accuracy")
    for ax in (left, right):
        for r in rows:
            if r["rebuilt"]:
                ax.axvline(r["epoch"], color="0.7", linestyle=":")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("SuperTickets: shrinking and pruning while training")
    save(fig, path)


def sparsify_report(store: Store, out: Path) -> dict:
    """The report of a `nasdsl sparsify` run (see the module's text)."""
    import shutil

    from nasdsl.compiler.export import render_png

    rows, result = store.get_state("sparsify") or [], store.get_state("sparsify_result")
    written = {"sparsify": out / "sparsify.png", "summary": out / "summary.md"}
    plot_sparsify(rows, result, written["sparsify"])
    dot = store.checkpoint_dir() / "erased.dot"
    if dot.exists() and shutil.which("dot"):
        written["erased"] = out / "erased.png"
        render_png(dot.read_text(), str(written["erased"]))
    written["summary"].write_text(sparsify_markdown(store, rows, result, "erased" in written))
    return {k: str(v) for k, v in written.items()}


def plot_sparsify(rows: list[dict], result: dict | None, path: Path) -> None:
    """H2SPG over its epochs: the share of groups at zero (the target dashed) and the
    accuracies; the constructed sub-network's test accuracy marked at the end."""
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    left.plot(epochs, [r["group_sparsity"] for r in rows], marker="o", label="groups at zero")
    if result:
        left.axhline(result["target_sparsity"], color="0.5", linestyle="--", label="target")
        left.plot([epochs[-1] if epochs else 0], [result["group_sparsity"]], marker="*", markersize=12, color="C3",
                  linestyle="none", label="after the end's zeroing")
    left.set_ylim(0, 1.05)
    left.set_ylabel("group sparsity")
    right.plot(epochs, [r["val_acc"] for r in rows], marker="o", color="C3", label="validation")
    right.plot(epochs, [r["train_acc"] for r in rows], marker=".", color="0.5", label="training")
    if result and "subnet" in result["accuracy"]:
        right.plot([epochs[-1] if epochs else 0], [result["accuracy"]["subnet"]["test"]], marker="*", markersize=12,
                   color="C2", linestyle="none", label="sub-network, test")
    right.set_ylabel("accuracy")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("OTOv3: H2SPG zeroing whole structures while training")
    save(fig, path)


def sparsify_markdown(store: Store, rows: list[dict], result: dict | None, drawn: bool) -> str:
    config = store.config
    lines = [f"# Sparsify report: {config['model']} on {config['dataset']}", "",
             f"- {len(rows)} of {config['train']['epochs']} epochs, lr {config['train']['lr']}, batch "
             f"{config['train']['batch_size']}" + (f", {config['limit']} training images" if config.get("limit") else ""),
             f"- settings: {config['settings']}", f"- seed {config['seed']}; store `{store.path}`", ""]
    if result is None:
        lines.append("The run has not finished: resume it with `nasdsl sparsify --store ... --resume`.")
    else:
        sup = result["accuracy"]["supernet"]
        lines += [f"- groups at zero: {result['zero_groups']} of {result['groups']} (group sparsity "
                  f"{result['group_sparsity']:.3f}, target {result['target_sparsity']}); {result['projected']} zeroed "
                  f"by the half-space projection before the end", f"- supernet: {result['params_before']:,} params, "
                  f"{result['macs_before']:,} MACs, validation {sup['val']:.4f}, test {sup['test']:.4f}"]
        if result["valid"]:
            sub = result["accuracy"]["subnet"]
            lines.append(f"- sub-network: {result['params_after']:,} params, {result['macs_after']:,} MACs, "
                         f"validation {sub['val']:.4f}, test {sub['test']:.4f}; largest logit gap to the sparse "
                         f"supernet {result['output_gap']:.2e}")
        else:
            lines.append(f"- no sub-network: the selection left an invalid network ({result['reasons'][0]})")
        if "derivation" in result:
            lines.append(f"- derivation ({result['distance']} options from the sub-network): `{result['derivation']}`")
    lines += ["", "![group sparsity and accuracy](sparsify.png)", ""]
    if drawn:
        lines += ["![the network, its erased structures filled](erased.png)", ""]
    return "\n".join(lines)


def kendall_tau(a, b) -> float | None:
    """Kendall's tau-b of two lists of scores (ties, common in accuracies on small
    sets, are corrected for); None where either list is constant."""
    pairs = tied_a = tied_b = score = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = (a[i] > a[j]) - (a[i] < a[j]), (b[i] > b[j]) - (b[i] < b[j])
            pairs += 1
            tied_a += da == 0
            tied_b += db == 0
            score += da * db
    denominator = math.sqrt((pairs - tied_a) * (pairs - tied_b))
    return score / denominator if denominator else None


def shared_and_alone(done: list[Trial]) -> tuple[list, list]:
    """(shared-weight, stand-alone validation) accuracies of a one-shot search's retrained trials."""
    ranked = [t for t in done if "shared_acc" in t.extra]
    return [t.extra["shared_acc"] for t in ranked], [t.val_acc for t in ranked]


def plot_supernet(epochs: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    xs = [e["epoch"] for e in epochs]
    ax.plot(xs, [e["loss"] for e in epochs], marker="o", color="C0", label="training loss")
    ax.set_xlabel("supernet epoch (each step trains one sampled derivation)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(xs, [e["acc"] for e in epochs], marker=".", color="C1", label="training accuracy")
    twin.set_ylabel("training accuracy")
    fig.legend(loc="upper center", ncols=2)
    save(fig, path)


def plot_ranking(done: list[Trial], path: Path) -> None:
    import matplotlib.pyplot as plt

    shared, alone = shared_and_alone(done)
    tau = kendall_tau(shared, alone)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(shared, alone, s=18, color="C0")
    ax.set_xlabel("shared-weight accuracy (supernet)")
    ax.set_ylabel("stand-alone validation accuracy")
    shown = "-" if tau is None else f"{tau:.3f}"
    ax.set_title(f"{len(shared)} retrained derivations: Kendall tau {shown}")
    ax.grid(alpha=0.3)
    save(fig, path)


def _cost_axis(ax, values) -> None:
    """A cost axis that reads at a glance: log scale only over a factor of 10 or more,
    a few ticks written as 120k or 3.4M, and no labelled minor ticks to overlap."""
    from matplotlib import ticker

    positive = [v for v in values if v > 0]
    if positive and max(positive) >= 10 * min(positive):
        ax.set_xscale("log")
        decades = math.log10(max(positive) / min(positive))
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))


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
    save(fig, path)


def plot_population(store: Store, path: Path) -> None:
    import matplotlib.pyplot as plt

    size = store.config.get("settings", {}).get("population") or 16
    finished = store.finished_in_order()
    xs, mean, low, high = [], [], [], []
    for k, trial in enumerate(finished):
        following = finished[k + 1] if k + 1 < len(finished) else None
        if following is not None and following.extra.get("ticket_of") == trial.id:
            continue  # a model and its ticket arrive together: one point, after the ticket
        alive = [t.params for t in living_population(finished[:k + 1], size)]
        xs.append(len(xs) + 1)
        mean.append(sum(alive) / len(alive))
        low.append(min(alive))
        high.append(max(alive))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.fill_between(xs, low, high, color="C0", alpha=0.15, label="min to max")
    ax.plot(xs, mean, color="C0", label=f"mean of the living population (last {size})")
    ax.set_xlabel("trials finished (a model and its ticket count once)")
    ax.set_ylabel("parameters")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    save(fig, path)


def plot_lineage(done: list[Trial], path: Path) -> None:
    import matplotlib.pyplot as plt

    by_id = {t.id: t for t in done}
    depth: dict[int, float] = {}
    for t in sorted(done, key=lambda t: t.id):  # parents always have smaller ids
        parent = by_id.get(t.parent) if t.parent else None
        step = 0.5 if t.extra.get("ticket_of") else 1.0
        depth[t.id] = depth[parent.id] + step if parent else 0.0
    rows: dict[float, int] = {}
    place = {}
    for t in sorted(done, key=lambda t: (depth[t.id], t.id)):
        place[t.id] = (depth[t.id], rows.get(depth[t.id], 0))
        rows[depth[t.id]] = rows.get(depth[t.id], 0) + 1
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.25 * max(rows.values(), default=1) + 1)))
    for t in done:
        if t.parent in place:
            (x0, y0), (x1, y1) = place[t.parent], place[t.id]
            ax.plot([x0, x1], [y0, y1], color="0.5", linewidth=0.7,
                    linestyle="--" if t.extra.get("ticket_of") else "-")
    if done:
        largest = max(t.params for t in done)
        points = ax.scatter([place[t.id][0] for t in done], [place[t.id][1] for t in done],
                            c=[t.val_acc for t in done], s=[20 + 180 * t.params / largest for t in done],
                            cmap="viridis", zorder=3)
        for t in done:  # the trial id, as `nasdsl trials` lists it
            ax.annotate(str(t.id), place[t.id], xytext=(7, 4), textcoords="offset points", fontsize=8)
        fig.colorbar(points, ax=ax, label="validation accuracy")
    from matplotlib import ticker

    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # whole generations; tickets sit between
    ax.margins(x=0.06, y=0.12)  # room for the ids at the edges
    ax.set_xlabel("generations from a random ancestor (a ticket: +0.5)")
    ax.set_yticks([])
    save(fig, path)


def save(fig, path: Path) -> None:
    """Every figure of the report: laid out, written at one resolution, and closed."""
    import matplotlib.pyplot as plt

    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_markdown(store: Store, trials: list[Trial]) -> str:
    config = store.config
    done = [t for t in trials if t.status == "done"]
    failed = [t for t in trials if t.status == "failed"]
    train = config.get("train", {})
    lines = [f"# Search report: {config['space']['file']} on {config['dataset']}", "",
             f"- algorithm: {config['algorithm']} {config.get('settings') or ''}".rstrip(),
             f"- trials: {len(done)} done, {len(failed)} failed, {len(trials) - len(done) - len(failed)} unfinished "
             f"(budget {config['trials']})",
             f"- training per trial: {train.get('epochs')} epochs, {train.get('optimizer')}, lr {train.get('lr')}, "
             f"batch {train.get('batch_size')}" + (f", {config['limit']} training images" if config.get("limit") else ""),
             f"- constraints: max params {config.get('max_params') or '-'}, max MACs {config.get('max_macs') or '-'}",
             f"- seed {config['seed']}; store `{store.path}`", "",
             *_one_shot_lines(store, done),
             "![Pareto front](pareto.png)", "", "![progress](progress.png)", "",
             "![living population](population.png)", "", "![lineage](lineage.png)", "",
             "## Best trials (by validation accuracy)", "", *_table(sorted(done, key=lambda t: -t.val_acc)[:10]),
             "", "## Pareto front (validation accuracy vs MACs)", "", *_table(pareto_front(done, "macs"))]
    if failed:
        lines += ["", "## Failed trials", "", *(f"- trial {t.id}: {t.reason}" for t in failed)]
    return "\n".join(lines) + "\n"


def _one_shot_lines(store: Store, done: list[Trial]) -> list[str]:
    ticket = store.get_state("superticket")
    if ticket:
        return [f"- SuperTickets' ticket: validation accuracy {ticket['val_acc']:.4f}, test accuracy "
                f"{ticket['test_acc']:.4f}, {ticket['params']:,} parameters of which {ticket['nonzero_params']:,} "
                f"nonzero (sparsity {ticket['sparsity']:.2f}), {ticket['macs']:,} MACs; saved as "
                f"{ticket['ticket']} and {ticket['preset']} in the store's checkpoint folder", "",
                f"- its derivation: `{ticket['derivation']}`", "", "![supertickets](supertickets.png)", ""]
    epochs = store.get_state("supernet_epochs")
    if not epochs:
        return []
    shared, alone = shared_and_alone(done)
    tau = kendall_tau(shared, alone)
    return [f"- supernet: {len(epochs)} epochs, final training loss {epochs[-1]['loss']:.4f}; "
            f"{len(store.evaluations())} derivations measured on shared weights; {len(shared)} retrained, "
            f"Kendall tau of shared-weight against stand-alone accuracy "
            f"{'-' if tau is None else f'{tau:.3f}'}", "",
            "![supernet training](supernet.png)", "", "![shared against stand-alone](ranking.png)", ""]


def _table(trials: list[Trial]) -> list[str]:
    rows = ["| trial | val acc | test acc | params | MACs | parent | derivation |", "|---|---|---|---|---|---|---|"]
    for t in trials:
        test = f"{t.test_acc:.4f}" if t.test_acc is not None else "-"
        rows.append(f"| {t.id} | {t.val_acc:.4f} | {test} | {t.params:,} | {t.macs:,} | {t.parent or '-'} "
                    f"| `{t.derivation}` |")
    return rows
