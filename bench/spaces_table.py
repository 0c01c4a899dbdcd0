"""The shipped spaces in numbers, for docs/spaces.md: exact count, and the spread of
params and MACs over uniform samples, plus each preset's params and MACs and one
Graphviz picture per space.

For every space file in spaces/ (libraries aside), at its default parameters (and a
few other values of a parameter that switches the network family): the exact count,
then `--samples` derivations drawn with `space.sample(seed=i)`, i = 0, 1, ..., each
built into its graph for the space's input shape; min, median (the lower middle
value, so a real sample's) and max of params and MACs, and the seconds it took.
The pictures go to docs/img/<space>.png; big networks are drawn smaller (fewer
cells or blocks, or one part) as DRAW says, so that they stay readable.

    .venv/bin/python bench/spaces_table.py    # → bench/results/spaces_table.json, docs/img/*.png
    .venv/bin/python bench/spaces_table.py --merge spaces/vit.nas   # re-measure some, keep the rest's rows
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

import record  # bench/record.py, beside this script

import nasdsl
from nasdsl.compiler.export import write_png
from nasdsl.compiler.graph import default_input_shape

ROOT = Path(__file__).resolve().parent.parent

# Parameter values that change the network family get a row of their own; the
# presets of those families live there.
VARIANTS = {"mobilenetv3": [{"variant": "small"}], "resnet": [{"unit": "bottleneck"}], "regnet": [{"variant": "y"}]}

# Networks the papers report at other parameters than the file's defaults.
EXTRA_PRESETS = {"darts": [("darts_v1", {"C": 36, "layers": 20}), ("darts_v2", {"C": 36, "layers": 20})]}


def without_rest(text: str) -> str:
    """A derivation's text with every `rest=[...]` emptied: each stage keeps its first block."""
    out, i = [], 0
    while (j := text.find("rest=[", i)) >= 0:
        out.append(text[i:j] + "rest=[]")
        k, depth = j + len("rest=["), 1
        while depth:
            depth += {"[": 1, "]": -1}.get(text[k], 0)
            k += 1
        i = k
    return "".join(out) + text[i:]


def part(graph, segment: str):
    """The nodes under the first path that ends in `segment` (one piece of a huge network),
    with the nodes just before and after it, so that its inputs and outputs show."""
    prefix = next(".".join(p[:p.index(segment) + 1]) for p in (n.split(".") for n in graph.nodes) if segment in p)
    inside = {n for n in graph.nodes if n.startswith(prefix + ".")}
    around = {m for n in inside for m in (*graph.predecessors(n), *graph.successors(n))}
    return graph.subgraph(inside | around).copy(), prefix


def preset_first_blocks(name):
    def draw(space):
        small = space.preset_space(name)
        return small, small.parse(without_rest(space.preset(name).text))
    return draw


def regnet_shortest(space):
    """regnetx_400mf's w0, wa, wm and g with the smallest depth d they allow (one block in stage 4)."""
    text = space.preset("regnetx_400mf").text
    assert "stage4=(d=22)" in text, text
    for depth in range(1, 22):
        try:
            return space, space.parse(text.replace("stage4=(d=22)", f"stage4=(d={depth})"))
        except nasdsl.NasError:  # below the first depth with four stages
            continue
    raise AssertionError("regnetx_400mf has no shorter member")


def superresnet_one_unit(space):
    """The super-network preset with one unit per stage (blocks = 1)."""
    small = space.bind(blocks=1)
    return small, small.parse(without_rest(space.preset("supernet").text))


# What to draw, per space: (space, derivation) from the space at its defaults, and a
# caption that says what was drawn. Spaces missing here: sample seed 0, as it is.
DRAW = {
    "nb201": (lambda s: (s.bind(N=1), s.preset("best_cifar10")),
              "preset `best_cifar10` with N = 1 (one cell per stage; the benchmark's network has N = 5)"),
    "tutorial": (lambda s: (s, s.preset("smallest")), "preset `smallest`"),
    "darts": (lambda s: (s.bind(layers=3), s.preset("darts_v2")),
              "preset `darts_v2` with layers = 3 (a normal cell, then two reduction cells; the default has 8 cells)"),
    "resnet": (lambda s: (s.preset_space("resnet18"), s.preset("resnet18")), "preset `resnet18`"),
    "regnet": (regnet_shortest, "preset `regnetx_400mf` with the smallest depth its w0, wa, wm allow "
                                "(stage depths 1, 2, 7, 1 instead of 1, 2, 7, 12)"),
    "superresnet": (superresnet_one_unit, "preset `supernet` (every branch) with blocks = 1: one unit per stage"),
    "mobilenetv3": (preset_first_blocks("mobilenet_v3_large"),
                    "preset `mobilenet_v3_large` with the first block of each stage only (6 of its 15 blocks)"),
    "mobilenet3_mt": (preset_first_blocks("mobilenet_v3_large"),
                      "preset `mobilenet_v3_large` with the first block of each stage only (6 of its 15 blocks)"),
    "vit": (preset_first_blocks("deit_tiny"), "preset `deit_tiny` with its first block only (of 12)"),
    "unet": (lambda s: (s.bind(max_depth=3), s.parse("(d=3, level=(m=1.0, k=3, skip=cat(lower=(level=(m=1.0, k=3, "
                                                   "skip=cat(lower=(level=(m=1.0, k=3), up=transposed))), "
                                                   "up=transposed))))")),
             "the paper's network with 3 levels instead of 5 (64, 128, 256 channels)"),
    "hnb201": (lambda s: (s, s.sample(seed=0)), "sample seed 0, one part of it: the first `block` (C in the "
                                                 "paper's grammar), since the whole network has about 850 nodes"),
}
PARTS = {"hnb201": "block1"}


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def spread(values: list[int]) -> dict:
    return {"min": min(values), "median": statistics.median_low(values), "max": max(values)}


def measure(path: Path, params: dict, samples: int) -> dict:
    start = time.perf_counter()
    space = nasdsl.load(path, params)
    count = space.count
    load_s = time.perf_counter() - start
    shape = default_input_shape(space)
    start = time.perf_counter()
    p, m = [], []
    for seed in range(samples):
        graph = space.graph(space.sample(seed=seed), shape)
        p.append(graph.graph["params"])
        m.append(graph.graph["macs"])
    return {"space": space.name, "file": shown(path), "params_set": params,
            "input_shape": list(shape), "count": str(count), "log10_count": round(math.log10(count), 4),
            "load_and_count_s": round(load_s, 2), "samples": samples,
            "sample_and_graph_s": round(time.perf_counter() - start, 1),
            "params": spread(p), "macs": spread(m)}


def presets(path: Path) -> list[dict]:
    space = nasdsl.load(path)
    cases = [(name, {}) for name in space.presets] + EXTRA_PRESETS.get(space.name, [])
    rows = []
    for name, extra in cases:
        bound = space.preset_space(name)
        bound = bound.bind(**extra) if extra else bound
        shape = default_input_shape(bound)
        graph = bound.graph(space.preset(name), shape)
        rows.append({"space": space.name, "preset": name, "params_set": {**space.preset_params(name), **extra},
                     "input_shape": list(shape), "params": graph.graph["params"], "macs": graph.graph["macs"]})
    return rows


def draw(path: Path, out_dir: Path) -> dict:
    space = nasdsl.load(path)
    make, caption = DRAW.get(space.name, (lambda s: (s, s.sample(seed=0)), "sample seed 0"))
    drawn, d = make(space)
    shape = default_input_shape(drawn)
    graph = drawn.graph(d, shape)
    whole = graph.number_of_nodes()
    prefix = None
    if space.name in PARTS:
        graph, prefix = part(graph, PARTS[space.name])
    png = out_dir / f"{space.name}.png"
    write_png(graph, str(png))
    return {"space": space.name, "png": shown(png), "caption": caption, "derivation": d.text,
            "params_set": dict(drawn.params), "input_shape": list(shape), "nodes": graph.number_of_nodes(),
            "nodes_whole_network": whole, "part": prefix,
            "params": graph.graph["params"] if prefix is None else None,
            "macs": graph.graph["macs"] if prefix is None else None}


def short(n: int) -> str:
    """Three significant digits, in millions (M) or, from 10^9 on, billions (G)."""
    return f"{n / 1e6:.3g} M" if n < 999.5e6 else f"{n / 1e9:.3g} G"


def show_count(count: int) -> str:
    return f"{count:,}" if count < 10 ** 15 else f"{Decimal(count):.4E}".replace("E+", " × 10^")


def table(rows: list[dict]) -> str:
    lines = ["| space | parameters | input | count | params min / median / max "
             "| MACs min / median / max | samples | s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params_set"].items()) or "defaults"
        shape = "x".join(map(str, r["input_shape"]))
        p, m = (" / ".join(short(r[key][k]) for k in ("min", "median", "max")) for key in ("params", "macs"))
        lines.append(f"| {r['space']} | {params} | {shape} | {show_count(int(r['count']))} | {p} | {m} "
                     f"| {r['samples']:,} | {r['sample_and_graph_s']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "spaces_table.json")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--samples", type=int, default=1000, help="uniform samples per space")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the given spaces' rows in --out, keeping the others' (and their dates)")
    parser.add_argument("spaces", nargs="*", type=Path, help="default: every space file in spaces/")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in (args.spaces or sorted((ROOT / "spaces").glob("*.nas")))]
    paths = [p for p in paths if not nasdsl.load(p).is_library]
    args.img.mkdir(parents=True, exist_ok=True)
    rows, preset_rows, drawings = [], [], []
    for path in paths:
        name = nasdsl.load(path).name
        for params in [{}] + VARIANTS.get(name, []):
            rows.append(measure(path, params, args.samples))
            print(rows[-1], flush=True)
        preset_rows += presets(path)
        drawings.append(draw(path, args.img))
        print(drawings[-1]["png"], drawings[-1]["nodes"], "nodes", flush=True)
    measured = {"measured": time.strftime("%Y-%m-%d")}
    rows, preset_rows, drawings = ([{**r, **measured} for r in part] for part in (rows, preset_rows, drawings))
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        names = {r["space"] for r in rows}
        rows, preset_rows, drawings = (sorted([r for r in old[key] if r["space"] not in names] + new,
                                              key=lambda r: r["space"])
                                       for key, new in (("spaces", rows), ("presets", preset_rows),
                                                        ("drawings", drawings)))
    result = {"benchmark": "spaces_table", "python": sys.version.split()[0], "machine": platform.machine(),
              "samples": args.samples, "spaces": rows, "presets": preset_rows, "drawings": drawings}
    record.write(args.out, result)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
