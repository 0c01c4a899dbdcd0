"""`nasdsl sparsify` (OTOv3): H2SPG trains a super-network, the zero structures are
erased, the sub-network computes what the sparse network does, a space's sub-network
is its derivation, a killed run resumes to the same result, and bad input is a clear
error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from nasdsl.runtime.algorithms.otov3 import Sparsify, load_subject, remainder, sparsify
from nasdsl.runtime.data import load as load_data
from nasdsl.runtime.h2spg import H2SPG
from nasdsl.runtime.store import Store
from nasdsl.runtime.train import TrainConfig

import nasdsl
from nasdsl.cli.commands import main

SUPERRESNET = str(Path(__file__).resolve().parents[1] / "spaces" / "superresnet.nas")
PARAMS = ["--param", "C=4", "--param", "resolution=8", "--param", "in_channels=1"]
QUICK = ["--dataset", "digits", "--limit", "300", "--epochs", "3", "--batch-size", "32", "--lam", "4",
         "--calibration-batches", "2"]
CELLS = '''
import torch
from torch import nn


class SummedCell(nn.Module):
    """conv3, conv5 and max-pool branches summed, twice, then a classifier."""

    def __init__(self, c=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.cells = nn.ModuleList(nn.ModuleDict({
            "conv3": nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)),
            "conv5": nn.Sequential(nn.Conv2d(c, c, 5, padding=2), nn.BatchNorm2d(c)),
            "pool": nn.MaxPool2d(3, 1, 1)}) for _ in range(2))
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        x = self.stem(x)
        for cell in self.cells:
            x = torch.relu(cell["conv3"](x) + cell["conv5"](x) + cell["pool"](x))
        return self.head(x.mean((2, 3)))
'''


def _space():
    return nasdsl.load(SUPERRESNET, {"C": 4, "resolution": 8, "in_channels": 1, "num_classes": 10})


def test_a_space_is_sparsified_to_its_target_and_the_sub_network_is_its_derivation(tmp_path, capsys):
    store = tmp_path / "s.db"
    assert main(["sparsify", SUPERRESNET, "--supernet", "supernet", *PARAMS, *QUICK, "--target-sparsity", "0.4",
                 "--store", str(store), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["groups"] == 67 and out["zero_groups"] == round(0.4 * 67) and out["valid"]
    assert out["projected"] > 0  # the half-space projection zeroed groups while training
    assert out["output_gap"] <= 1e-5 and out["params_after"] < out["params_before"]
    assert out["macs_after"] < out["macs_before"]
    assert out["accuracy"]["subnet"] == out["accuracy"]["supernet"]  # the same function, on the same images
    assert out["distance"] == 0  # a summed pick keeps any subset: the sub-network is a derivation
    space = _space()
    d = space.parse(out["derivation"])
    folder = tmp_path / "s.db.ckpt"
    assert (folder / "subnet.nas").read_text().split("preset subnet = ")[1].strip() == d.text
    saved = torch.load(folder / "subnet.pt", weights_only=True)
    module = space.compile(d, (1, 8, 8))
    module.load_state_dict(saved["state_dict"])  # the derivation's module takes the sub-network's weights
    assert sum(p.numel() for p in module.parameters()) == out["params_after"]
    with Store.open(store) as s:
        rows = s.get_state("sparsify")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["zero_groups"] >= out["projected"]
    assert main(["report", "--store", str(store), "--out", str(tmp_path / "r"), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)["report"]
    assert Path(written["sparsify"]).stat().st_size > 0 and "sub-network" in Path(written["summary"]).read_text()
    assert main(["trials", "--store", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sparsify"] == rows
    assert main(["search", "--store", str(store), "--resume"]) == 1  # not a search's store, and it says so
    assert "holds a `nasdsl sparsify` run" in capsys.readouterr().err
    # the finished run, resumed, is its result
    assert main(["sparsify", "--store", str(store), "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == out


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    data = load_data("digits", limit=200)
    config, settings = TrainConfig(epochs=3, batch_size=32), Sparsify(target_sparsity=0.3, lam=4.0,
                                                                     calibration_batches=2)

    def run(path, reporter=None):
        subject = load_subject("superresnet", (1, 8, 8), 10, space=_space(), supernet="supernet")
        with Store.create(path, {"run": 1}) if not Path(path).exists() else Store.resume(path, {"run": 1}) as store:
            return sparsify(subject, data, config, settings, store, reporter=reporter), store.get_state("sparsify")

    class Killed(Exception):
        pass

    class KillAfterTheFirstEpoch:
        def note(self, text):
            raise Killed(text)

    whole = run(tmp_path / "a.db")
    with pytest.raises(Killed):
        run(tmp_path / "b.db", KillAfterTheFirstEpoch())
    with Store.open(tmp_path / "b.db") as store:
        assert len(store.get_state("sparsify")) == 1
    resumed = run(tmp_path / "b.db")
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in whole[1]]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed[1]] == rows
    assert resumed[0] == whole[0]


def test_the_parallel_supernet_gives_the_nearest_derivation_and_never_an_unsumming_pick():
    subject = load_subject("superresnet", (1, 8, 8), 10, space=_space(), supernet="parallel")
    erasing = subject.erasing
    first_units = [n for n in erasing.structures if n.split(".")[1] == "unit" and ".pick." in n]
    scores = {n: (2.0 if n in first_units else 1.0) for n in erasing.structures}  # every stage's first unit first
    plain = H2SPG(subject.module, erasing, lr=0.1, target=0.5).select(scores)
    ours = H2SPG(subject.module, erasing, lr=0.1, target=0.5, admissible=subject.admissible()).select(scores)
    assert set(first_units) <= set(plain)  # the graph allows a stage-first unit of only its shortcut ...
    assert not set(first_units) <= set(ours)  # ... the space does not: each keeps a branch
    d, distance = remainder(subject, ours)
    assert _space().validate(d) == d and distance >= 0
    _, far = remainder(subject, plain)
    assert far > 0  # the branches the space must keep, counted


def test_a_traced_model_and_a_users_module_are_sparsified(tmp_path, capsys):
    data = load_data("digits", limit=200)
    subject = load_subject("torchvision:resnet18", (3, 32, 32), 10)
    assert len(subject.erasing.structures) == 11  # 8 residual bodies, 3 projections
    with Store.create(tmp_path / "r.db", {}) as store:
        result = sparsify(subject, data, TrainConfig(epochs=1, batch_size=50),
                          Sparsify(target_sparsity=0.3, calibration_batches=1), store)
    assert result["valid"] and result["zero_groups"] == 3 and result["output_gap"] <= 1e-4
    assert result["params_after"] < result["params_before"] and "derivation" not in result
    cells = tmp_path / "cells.py"
    cells.write_text(CELLS)
    assert main(["trace", f"module:{cells}:SummedCell", "--input-shape", "1,8,8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removal_structures"] == 6
    # per cell conv3, conv5 and their sum (torch adds two at a time: (conv3 + conv5) + pool); the pool has nothing to zero
    assert main(["sparsify", f"module:{cells}:SummedCell", *QUICK, "--target-sparsity", "0.5",
                 "--store", str(tmp_path / "c.db"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["zero_groups"] == 3 and out["valid"] and out["output_gap"] <= 1e-5
    assert out["params_after"] < out["params_before"]


@pytest.mark.parametrize("argv, code, message", [
    ([SUPERRESNET, *PARAMS], 2, "add --supernet parallel"),
    (["torchvision:resnet18", "--supernet", "parallel"], 2, "--supernet is for a space file"),
    (["torchvision:resnet81"], 1, "did you mean `resnet18`"),
    (["module:/no/such.py:Net"], 1, "no such Python file"),
    (["resnet18"], 1, "expected a model as torchvision:NAME, timm:NAME or module:PATH:NAME"),
    (["torchvision:resnet18", "--target-sparsity", "1.5"], 1, "--target-sparsity must lie in [0, 1]"),
    ([SUPERRESNET, *PARAMS, "--supernet", "nosuch"], 1, "has no preset `nosuch`"),
])
def test_bad_sparsify_input_is_a_clear_error(tmp_path, capsys, argv, code, message):
    assert main(["sparsify", *argv, "--dataset", "digits", "--store", str(tmp_path / "x.db")]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
