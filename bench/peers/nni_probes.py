"""What NNI 3.0's RandomOneShot does with what nasdsl's supernet training offers, tried.

Each probe builds the ModelSpace of bench/peers/nni_random_oneshot.py (small: C=4, one
cell, random 1x28x28 data) or a space of its own, tries one thing, and prints one line
`PROBE {json}` with what happened (the exception's type and message where one is
raised, the warnings NNI logs). Run in NNI's venv:

    /work/nni-venv/bin/python bench/peers/nni_probes.py [weights|filter|seed|topk|resume|unsupported|all]

bench/oneshot_nni.py's results quote these lines (docs/benchmarks.md); the probes
themselves are not timed.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nni  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from nni.nas.evaluator.pytorch import Classification, DataLoader  # noqa: E402
from nni.nas.experiment import NasExperiment  # noqa: E402
from nni.nas.nn.pytorch import Cell, LayerChoice, ModelSpace, MutableModule  # noqa: E402
from nni.nas.strategy import RandomOneShot  # noqa: E402
from nni_random_oneshot import OPS, OneshotCell  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

torch.set_num_threads(2)


WORKDIR = None  # every experiment's folder (a temporary one, set in main), not ~/nni-experiments


def experiment(space, ev, strategy, **kwargs) -> NasExperiment:
    made = NasExperiment(space, ev, strategy, **kwargs)
    made.config.experiment_working_directory = WORKDIR
    return made


def report(name: str, **what) -> None:
    print("PROBE " + json.dumps({"probe": name, **what}, default=str), flush=True)


class Logged(logging.Handler):
    """The messages NNI logs at WARNING and above while a probe runs."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def logged():
    handler = Logged()
    root = logging.getLogger("nni")
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)


def error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def evaluator(epochs=1, n=64, batch=16, **trainer):
    x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
    train = nni.trace(TensorDataset)(x, y)
    kwargs = dict(accelerator="cpu", devices=1, enable_progress_bar=False, logger=False, enable_checkpointing=False,
                  enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    kwargs.update(trainer)
    return Classification(learning_rate=0.05, optimizer=torch.optim.SGD, max_epochs=epochs, num_classes=10,
                          train_dataloaders=DataLoader(train, batch_size=batch, shuffle=True),
                          val_dataloaders=DataLoader(train, batch_size=batch), **kwargs)


def path_frequencies(space: ModelSpace, label: str, draws: int) -> dict:
    """How often each option of `label` comes up in `draws` resamplings of the supernet."""
    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule

    modules = [m for m in space.modules() if isinstance(m, BaseSuperNetModule)]
    counts = collections.Counter()
    for _ in range(draws):
        memo = {}
        for m in modules:
            memo.update(m.resample(memo))
        counts[str(memo[label])] += 1
    return dict(sorted(counts.items()))


def probe_weights():
    """Per-choice weights: LayerChoice takes `weights`; does RandomOneShot sample by them?"""
    class Weighted(ModelSpace):
        def __init__(self):
            super().__init__()
            self.op = LayerChoice({name: nn.Identity() for name in OPS}, weights=[0.95] + [0.01] * 5, label="op")

        def forward(self, x):
            return self.op(x)

    space = Weighted()
    before = space.simplify()["op"].weights
    plain = collections.Counter(str(space.simplify()["op"].random()) for _ in range(600))
    RandomOneShot().mutate_model(space)
    after = space.simplify()["op"].weights
    report("weights", weights_in_space=before, weights_after_mutate_model=after,
           space_random_600=dict(plain), random_oneshot_paths_600=path_frequencies(space, "op", 600))


def probe_filter():
    """Size-weighted sampling through RandomOneShot's `filter`: accept a uniform sample with
    probability params / max_params, which is exact rejection sampling as long as a sample is
    accepted within NNI's 100 tries. NNI's NumParamsProfiler would give the parameters; where
    it refuses the space, a hand-written count (from the modules of the chosen edges) does."""
    from nni.nas.profiler.pytorch.flops import NumParamsProfiler

    result = {}
    try:
        NumParamsProfiler(OneshotCell(4, 1), torch.randn(1, 1, 28, 28))
        result["profiler"] = "built"
    except Exception as e:
        result["profiler"] = error(e)

    def sizer(space):
        edge_params = {}  # (cell, node, edge) -> {op name: parameters}
        for i, cell in enumerate(space.cells):
            for j, edges in enumerate(cell.edges):
                for e, choice in enumerate(edges):
                    edge_params[i, j, e] = {n: sum(p.numel() for p in choice[n].parameters()) for n in OPS}
        fixed = sum(p.numel() for p in space.parameters()) - sum(sum(v.values()) for v in edge_params.values())

        def size(sample):
            total = fixed
            for (i, j, e), params in edge_params.items():
                if e in sample[f"cell{i}_n{j + 2}_pick"]:
                    total += params[sample[f"cell{i}_n{j + 2}_e{e}"]]
            return total
        largest = fixed + sum(max(p for p in v.values()) for (i, j, e), v in edge_params.items() if e < 2)
        return size, largest

    space = OneshotCell(4, 1)
    size, bound = sizer(space)  # bound: the largest network (conv_5x5 on p0 and p1 everywhere) bounds every size
    mutables = space.simplify()
    samples = [{k: m.random() for k, m in mutables.items()} for _ in range(2000)]
    start = time.perf_counter()
    sizes = [size(s) for s in samples]
    result["size_s_per_sample"] = (time.perf_counter() - start) / len(samples)
    result.update(max_params=bound, mean_params=sum(sizes) / len(sizes), acceptance=sum(sizes) / len(sizes) / bound)
    rng = random.Random(0)
    calls = collections.Counter()

    def by_size(sample):
        calls["calls"] += 1
        return rng.random() * bound < size(sample)

    try:
        experiment(space, evaluator(), RandomOneShot(filter=by_size)).run()
        result["size_weighted_run"] = "trained"
    except Exception as e:
        result["size_weighted_run"] = error(e)
    result["filter_calls"] = calls["calls"]

    def scarce(sample):  # acceptance 0.5 %: a size-proportional draw where the bound is 200x the mean size
        return rng.random() < 0.005

    try:
        experiment(OneshotCell(4, 1), evaluator(), RandomOneShot(filter=scarce)).run()
        result["acceptance_0.5%"] = "trained"
    except Exception as e:
        result["acceptance_0.5%"] = error(e)
    report("filter", **result)


def probe_seed():
    """Is RandomOneShot's sequence of paths reproducible from the usual seeds?"""
    runs = []
    for _ in range(2):
        random.seed(0)
        torch.manual_seed(0)
        import numpy as np

        np.random.seed(0)
        space = OneshotCell(4, 1)
        RandomOneShot().mutate_model(space)
        runs.append([json.dumps(path_frequencies(space, "cell0_n4_e0", 1)) for _ in range(8)])
    report("seed", first_run=runs[0], second_run=runs[1], same=runs[0] == runs[1])


def probe_topk():
    with logged() as messages:
        made = experiment(OneshotCell(4, 1), evaluator(), RandomOneShot())
        made.run()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            top = made.export_top_models(top_k=3, formatter="dict")
    report("topk", asked=3, got=len(top), logged=[m for m in messages if "top" in m.lower()],
           warnings=[str(w.message) for w in caught])


RESUME_ID = "nasdsl-resume-probe"


def resume_child(workdir: str, phase: str):
    """One process of the resume probe: `first` is killed (SIGKILL) as its third epoch of four
    starts, when Lightning's ModelCheckpoint has written the second's (`ckpt/last.ckpt`);
    `again` builds the same experiment (same id and folder) and calls `resume()`; `by_hand`
    builds a fresh one and hands Lightning that checkpoint (`fit_kwargs["ckpt_path"]`)."""
    import pytorch_lightning as pl

    log = Path(workdir) / "epochs.txt"

    class Note(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            with log.open("a") as f:
                f.write(f"{phase} {trainer.current_epoch}\n")
            if phase == "first" and trainer.current_epoch == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    ev = evaluator(epochs=4, enable_checkpointing=True, default_root_dir=str(Path(workdir) / "lightning"),
                   callbacks=[Note(), pl.callbacks.ModelCheckpoint(dirpath=str(Path(workdir) / "ckpt"),
                                                                   save_last=True)])
    if phase == "by_hand":  # Lightning's own ckpt_path, on a fresh experiment
        ev.fit_kwargs["ckpt_path"] = str(Path(workdir) / "ckpt" / "last.ckpt")
    made = NasExperiment(OneshotCell(4, 1), ev, RandomOneShot(), id=None if phase == "by_hand" else RESUME_ID)
    made.config.experiment_working_directory = str(Path(workdir) / "nni-experiments")
    made.resume() if phase == "again" else made.run()


def probe_resume():
    with tempfile.TemporaryDirectory() as workdir:
        outcomes = {}
        for phase in ("first", "again", "by_hand"):
            done = subprocess.run([sys.executable, __file__, "resume-child", workdir, phase], capture_output=True,
                                  text=True, timeout=600)
            lines = [line for line in (done.stdout + done.stderr).splitlines() if "Error" in line or "heckpoint" in line]
            files = sorted(str(p.relative_to(workdir)) for p in Path(workdir).rglob("*.ckpt*") if p.is_file())
            outcomes[phase] = {"returncode": done.returncode, "messages": lines[-4:], "checkpoints_after": files}
        epochs = (Path(workdir) / "epochs.txt").read_text().split("\n")
    report("resume", epochs_started=[e for e in epochs if e], outcomes=outcomes)


def probe_unsupported():
    """Spaces NNI's one-shot conversion refuses."""
    tried = {}

    class LooseEnd(ModelSpace):  # NASNet's loose-end cell output
        def __init__(self):
            super().__init__()
            self.cell = Cell([nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(3, 1, 1)], 2, merge_op="loose_end",
                             label="cell")

        def forward(self, x):
            return self.cell(x)

    class Depth(MutableModule):  # a module whose forward reads a choice of its own (a depth)
        def __init__(self):
            super().__init__()
            self.depth = self.add_mutable(nni.choice("depth", [1, 2, 3]))
            self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(3))

        def forward(self, x):
            for conv in self.convs[:self.depth.freeze(self.arch) if hasattr(self, "arch") else 3]:
                x = conv(x)
            return x

    class Dangling(ModelSpace):
        def __init__(self):
            super().__init__()
            self.block = Depth()

        def forward(self, x):
            return self.block(x)

    class Dilated(ModelSpace):  # a choice in an argument that NNI's mixed conv does not take
        def __init__(self):
            super().__init__()
            from nni.nas.nn.pytorch import MutableConv2d

            self.conv = MutableConv2d(4, 4, 3, padding=2, dilation=nni.choice("dilation", [1, 2]))

        def forward(self, x):
            return self.conv(x)

    for name, space in (("cell_loose_end", LooseEnd), ("dangling_mutable", Dangling), ("conv_dilation", Dilated)):
        try:
            RandomOneShot().mutate_model(space())
            tried[name] = "converted"
        except Exception as e:
            tried[name] = error(e)
    report("unsupported", **tried)


PROBES = {"weights": probe_weights, "filter": probe_filter, "seed": probe_seed, "topk": probe_topk,
          "resume": probe_resume, "unsupported": probe_unsupported}

if __name__ == "__main__":
    if sys.argv[1:2] == ["resume-child"]:
        resume_child(*sys.argv[2:4])
        sys.exit(0)
    names = sys.argv[1:] or ["all"]
    WORKDIR = tempfile.mkdtemp(prefix="nni-probes-")
    # registered before any experiment exists, so it runs after NNI's own exit handlers, which
    # stop the experiments and write their checkpoints into this folder
    atexit.register(shutil.rmtree, WORKDIR, True)
    for name in PROBES if names == ["all"] else names:
        try:
            PROBES[name]()
        except Exception as e:
            report(name, probe_failed=error(e))
