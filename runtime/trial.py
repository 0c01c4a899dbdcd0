"""One trial on a worker: build the derivation's module, train it, save it.

Everything here runs in the worker process: a `TrialJob` is small and picklable, a
`TrialOutcome` comes back to the search loop, which alone writes the store.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import attrs

from nasdsl import load
from nasdsl.compiler.module import build_module
from nasdsl.language.errors import NasError

from . import data as datasets
from .train import TrainConfig, TrialFailed, train


@attrs.frozen
class TrialJob:
    """What a worker needs to run one trial; small and picklable."""

    trial_id: int
    space: str
    params: tuple  # the bound parameters as sorted (name, value) pairs
    derivation: str
    seed: int
    dataset: str
    val_fraction: float
    split_seed: int
    limit: int | None
    train: TrainConfig
    checkpoint: str
    settings: dict = attrs.Factory(dict)  # what the algorithm's trial function needs besides (e.g. a parent)


@attrs.frozen
class TrialOutcome:
    trial_id: int
    ok: bool
    reason: str | None = None
    val_acc: float | None = None
    params: int | None = None
    macs: int | None = None
    train_time: float | None = None
    epochs: int | None = None
    extra: dict = attrs.Factory(dict)
    # trials trained inside this one (a lottery ticket): dicts of Store.add_done's arguments
    linked: tuple = ()
    fatal: bool = False  # the search cannot go on (checkpoints cannot be written): stop it, rerun on resume


class CheckpointError(Exception):
    """A checkpoint could not be written (a full disk, a folder gone). Every later trial
    would fail the same way, so the search stops instead of recording failures."""


def save_checkpoint(state: dict, path) -> None:
    """`torch.save` to a temporary name, fsync, then rename: a checkpoint file is whole
    or absent, even after a power cut."""
    import torch

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError ("enforce fail")
        partial.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {err}") from None


@functools.lru_cache(maxsize=4)
def _space(path: str, params: tuple):
    return load(path, dict(params))


@functools.lru_cache(maxsize=2)
def _dataset(spec: str, val_fraction: float, seed: int, limit: int | None):
    return datasets.load(spec, val_fraction=val_fraction, seed=seed, limit=limit)


@attrs.frozen
class Prepared:
    """A trial's inputs, built in the worker: the space, data, graph and fresh module."""

    space: object
    data: datasets.Dataset
    derivation: object
    graph: object
    module: object


def prepare(job: TrialJob) -> Prepared:
    space = _space(job.space, job.params)
    data = _dataset(job.dataset, job.val_fraction, job.split_seed, job.limit)
    d = space.parse(job.derivation)
    graph = space.graph(d, data.input_shape)
    return Prepared(space, data, d, graph, build_module(graph, seed=job.seed))


def trained(job: TrialJob, graph, result, extra: dict | None = None, linked: tuple = ()) -> TrialOutcome:
    """Save the trained weights and describe the trial's success."""
    save_checkpoint(result.state_dict, job.checkpoint)
    extra = {**(extra or {}), "history": [attrs.asdict(e) for e in result.epochs],
             "best_epoch": result.best_epoch, "images_per_s": round(result.images_per_s, 1)}
    return TrialOutcome(job.trial_id, True, None, result.val_acc, graph.graph["params"], graph.graph["macs"],
                        result.train_time, len(result.epochs), extra, linked)


def never_raises(trial_function):
    """A trial function whose every failure is a failed outcome with a reason, so no
    trial can stop a search (a NaN loss, a bad checkpoint, a bug in a primitive)."""

    @functools.wraps(trial_function)
    def run(job: TrialJob) -> TrialOutcome:
        try:
            return trial_function(job)
        except CheckpointError as err:
            return TrialOutcome(job.trial_id, False, str(err), fatal=True)
        except (TrialFailed, NasError) as err:
            return TrialOutcome(job.trial_id, False, str(err))
        except Exception as err:
            return TrialOutcome(job.trial_id, False, f"{type(err).__name__}: {err}")

    return run


@never_raises
def run_trial(job: TrialJob) -> TrialOutcome:
    """Compile, train and validate one derivation; save its best weights."""
    trial = prepare(job)
    return trained(job, trial.graph, train(trial.module, trial.data, job.train, seed=job.seed, graph=trial.graph))
