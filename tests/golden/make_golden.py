"""Writes tests/golden/behaviour.json: what users' stores and checkpoints depend on.

For every shipped space (at the small parameters of tests/support.py, so a module is
cheap to build) and 50 seeded samples, and for every preset at the file's defaults:
the derivation text (up to TEXT characters), its hash, the graph's node ids in build order, params, MACs and
the `state_dict` keys with their shapes. Presets also keep a checksum of their
seeded initial weights. `tests/test_golden.py` rebuilds all of it and compares.

Regenerate only when a change of behaviour is intended and said in the commit:
    .venv/bin/python tests/golden/make_golden.py
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from support import SMALL, SPACES  # noqa: E402

import nasdsl  # noqa: E402

SAMPLES = 50
TEXT = 2000  # longer derivation texts (hnb201's) are kept as their hash alone


def digest(lines) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def record(space, d, weights: bool = False) -> dict:
    graph = space.graph(d)
    # a sample's keys and shapes need no storage: on the meta device nothing is allocated
    # or initialised (resnet's 50 samples: 40 s -> 6 s); a preset's weights are summed
    with contextlib.nullcontext() if weights else torch.device("meta"):
        module = space.compile(d)
    state = module.state_dict()
    out = {
        "text": d.text if len(d.text) <= TEXT else None,  # the hash pins longer ones
        "hash": d.hash,
        "nodes": len(graph),
        "node_ids": digest(graph.nodes),
        "params": graph.graph["params"],
        "macs": graph.graph["macs"],
        "state_dict": len(state),
        "state_dict_keys": digest(f"{k} {tuple(v.shape)}" for k, v in state.items()),
    }
    if weights:
        out["weight_sum"] = round(sum(float(v.double().abs().sum()) for v in state.values()), 6)
    return out


def behaviour() -> dict:
    out: dict = {}
    for path in sorted(SPACES.glob("*.nas")):
        name = path.stem
        small = nasdsl.load(path, params=SMALL.get(name, {}))
        entry = {"count": str(small.count),
                 "samples": [record(small, small.sample(seed=i)) for i in range(SAMPLES)]}
        full = nasdsl.load(path)
        entry["presets"] = {p: record(full.preset_space(p), full.preset(p), weights=True) for p in full.presets}
        out[name] = entry
    return out


if __name__ == "__main__":
    (HERE / "behaviour.json").write_text(json.dumps(behaviour(), indent=1, sort_keys=True) + "\n")
