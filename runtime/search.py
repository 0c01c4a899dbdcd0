"""A search: propose derivations, train them on workers, record them in the store.

    config ──> Search.open ──> (space bound to the data set, store, proposer)
                   │
                   └─ run(executor): keep every worker busy with `run_trial`,
                      record each result in its own transaction, and at the end
                      evaluate the best trials on the test set.

The loop is the only writer of the store. Everything an algorithm needs is in
the store, so `--resume` re-opens it, re-queues the trials that were running,
and carries on proposing from where the budget stopped.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
from pathlib import Path

import attrs

from nasdsl import load
from nasdsl.compiler.graph import output_shape
from nasdsl.compiler.module import build_module
from nasdsl.language.errors import NasError
from nasdsl.space.space import convert_param

from . import data as datasets
from .algorithms import absent_settings, create, lookup
from .oneshot import Ranks
from .propose import END, WAIT, Proposer, trial_rng
from .store import Store, Trial, checkpoint_dir
from .train import TrainConfig, accuracy
from .trial import TrialJob, TrialOutcome, _dataset

# settings that may change when a search resumes: how much budget, and where it runs
RESUMABLE = ("trials", "workers", "executor", "address", "space_path")


@attrs.frozen
class SearchConfig:
    """Everything that defines a search; all but RESUMABLE must match to resume it."""

    space: str  # path of the .nas file
    dataset: str = "fashion-mnist"
    algorithm: str = "evolution"
    trials: int = 20
    params: dict = attrs.Factory(dict)  # --param values given by the user
    train: TrainConfig = TrainConfig()
    seed: int = 0  # proposals and training
    data_seed: int = 0  # the train/validation split and --limit's subset: fixed while seeds vary
    max_params: int | None = None
    max_macs: int | None = None
    settings: dict = attrs.Factory(dict)  # the algorithm's settings given (its config class has the rest)
    limit: int | None = None  # training images used per trial (None: all)
    val_fraction: float = 0.1
    test_top: int = 5  # how many of the best trials the final evaluation tests
    workers: int = 1
    executor: str = "local"
    address: str | None = None

    def identity(self, space_text: str, algorithm) -> dict:
        """The config as the store records it (JSON), with the space file's digest and
        every setting of the algorithm, defaults included (so they are compared too);
        `space_path` is where the file was, for `--resume` without a SPACE."""
        record = attrs.asdict(self, recurse=True)
        record["space"] = {"file": Path(self.space).name, "sha256": hashlib.sha256(space_text.encode()).hexdigest()}
        record["space_path"] = str(Path(self.space).resolve())
        record["settings"] = algorithm.settings()
        return record

    @classmethod
    def from_record(cls, record: dict) -> "SearchConfig":
        """The config a store recorded (the inverse of `identity`)."""
        not_a_sparsify_run(record)
        if "space_path" not in record:
            raise NasError("this store does not record where its space file is (it predates that)",
                           hint="give the SPACE file and the search's flags with --resume")
        record = implied(record)
        names = {f.name for f in attrs.fields(cls)} - {"space", "train"}
        return cls(space=record["space_path"], train=TrainConfig(**record["train"]),
                   **{k: v for k, v in record.items() if k in names})


# ---- the search ---------------------------------------------------------------------
def implied(record: dict) -> dict:
    """A stored config with what a store written before a setting or a training option
    existed implies for it (`setting(absent=...)`; a training option's default), so
    that a search started by an earlier version resumes as it ran."""
    settings = {**absent_settings(lookup(record["algorithm"])), **record.get("settings", {})}
    train = {**attrs.asdict(TrainConfig()), **record.get("train", {})}
    return {**record, "settings": settings, "train": train}


def bind_to_data(space, data: datasets.Dataset, given: dict):
    """The space with `num_classes`, `in_channels` and `resolution` set from the data
    set where it declares them; refuses a conflicting --param and a space whose
    derivations cannot take the data's images or give its classes."""
    channels, height, width = data.input_shape
    wanted = {"num_classes": data.num_classes, "in_channels": channels}
    if height == width:
        wanted["resolution"] = height
    declared = {p.name: p for p in space.header.params}
    for name, value in wanted.items():
        # `given` holds what the user wrote (`--param num_classes=10` is the text "10"): compare as typed
        if name in declared and name in given and convert_param(declared[name], given[name]) != value:
            raise NasError(f"--param {name}={given[name]} does not fit data set `{data.name}` ({name} = {value})",
                           hint=f"drop --param {name}; it is set from the data set")
    space = space.bind(**{k: v for k, v in wanted.items() if k in declared})
    probe = space.sample(seed=0)
    try:
        graph = space.graph(probe, data.input_shape)
    except NasError as err:
        raise NasError(f"space `{space.name}` cannot take data set `{data.name}`'s images "
                       f"{data.input_shape}: {err.message}", hint="choose a space for this input size, "
                       "or set its input parameters with --param") from None
    if output_shape(graph) != (data.num_classes,):
        raise NasError(f"space `{space.name}` outputs shape {output_shape(graph)}, but data set `{data.name}` "
                       f"has {data.num_classes} classes", hint="give the space a `num_classes` parameter")
    return space


class Search:
    """An open search: its config, bound space, data, store and algorithm; `ranks`, the
    processes a one-shot algorithm trains its supernet on (torchrun), of which only the
    lead has the store."""

    def __init__(self, config: SearchConfig, store: Store | None, space, data, algorithm, *,
                 store_path=None, ranks: Ranks = Ranks()):
        self.config, self.store, self.space, self.data, self.algorithm = config, store, space, data, algorithm
        self.proposer = Proposer(space, data.input_shape, config.max_params, config.max_macs)
        self.ranks = ranks
        self.checkpoint_dir = checkpoint_dir(Path(store_path) if store_path is not None else store.path)

    @classmethod
    def open(cls, config: SearchConfig, store_path, resume: bool = False, ranks: Ranks = Ranks()) -> "Search":
        """Check everything, then create (or, with `resume`, reopen) the store: bad
        input is refused before any file is written. A rank other than the lead opens
        no store."""
        if config.trials < 1:
            raise NasError(f"--trials must be at least 1, got {config.trials}")
        if config.train.epochs < 1:
            raise NasError(f"--epochs must be at least 1, got {config.train.epochs}")
        path = Path(config.space)
        try:
            text = path.read_text()
        except OSError as err:
            raise NasError(f"{path}: cannot read the space file ({err.strerror})") from None
        algorithm = create(config.algorithm, config.settings)
        data = _dataset(config.dataset, config.val_fraction, config.data_seed, config.limit)
        space = bind_to_data(load(path, config.params), data, config.params)
        if not ranks.lead:
            return cls(config, None, space, data, algorithm, store_path=store_path, ranks=ranks)
        identity = config.identity(text, algorithm)
        store = (Store.resume(store_path, identity, ignore=RESUMABLE, implied=implied) if resume
                 else Store.create(store_path, identity))
        return cls(config, store, space, data, algorithm, ranks=ranks)

    def job(self, trial: Trial) -> TrialJob:
        checkpoint = self.store.checkpoint_dir() / f"trial-{trial.id}.pt"
        return TrialJob(trial.id, str(Path(self.config.space).resolve()), tuple(sorted(self.space.params.items())),
                        trial.derivation, trial.seed, self.config.dataset, self.config.val_fraction,
                        self.config.data_seed, self.config.limit, self.algorithm.trial_train(self.config.train),
                        str(checkpoint), self.algorithm.job_settings(self, trial))

    def propose(self, index: int):
        """The `index`-th trial (0-based), proposed by the algorithm and queued in the
        store; or WAIT or END, as the algorithm says."""
        proposal = self.algorithm.propose(self.proposer, self.store, index, self.config.seed)
        if proposal in (WAIT, END):
            return proposal
        d = proposal.derivation
        cost = self.proposer.cost(d)
        seed = trial_rng(self.config.seed, index, "train").randrange(2**31)
        extra = {**proposal.extra, "index": index, "proposed_params": cost.params, "proposed_macs": cost.macs}
        return self.store.trial(self.store.add(d.text, d.hash, seed, proposal.parents, extra))

    def run(self, make_executor, reporter=None) -> None:
        """Run until the store holds `config.trials` finished (done or failed) trials.
        `make_executor()` gives a fresh executor (again if a worker process dies)."""
        self.algorithm.prepare(self, reporter)
        workers = self.config.workers
        queue = [self.store.trial(i) for i in self.store.requeue_unfinished()]
        proposed = sum("index" in t.extra for t in self.store.trials())  # linked trials were not proposed
        pending: dict = {}
        ended = False
        executor = make_executor()
        if reporter:
            reporter.start(self)
        try:
            while True:
                while len(pending) < workers and (queue or (proposed < self.config.trials and not ended)):
                    if queue:
                        trial = queue.pop(0)
                    else:
                        trial = self.propose(proposed)
                        if trial == WAIT and not pending:
                            raise NasError(f"--algorithm {self.algorithm.name} waits for trials, but none is running")
                        if trial in (WAIT, END):
                            ended = trial == END
                            break
                        proposed += 1
                    self.store.start(trial.id)
                    pending[executor.submit(self.algorithm.trial_function, self.job(trial))] = trial.id
                if not pending:
                    break
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                broken = False
                for future in done:
                    trial_id = pending.pop(future)
                    outcome, died = _outcome(future, trial_id)
                    broken |= died
                    self.record(outcome)
                    if reporter:
                        reporter.finished(self, self.store.trial(trial_id))
                if broken:  # a dead worker breaks the whole pool: start a new one
                    executor.shutdown(wait=False, cancel_futures=True)
                    executor = make_executor()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            if reporter:
                reporter.stop()

    def record(self, outcome: TrialOutcome) -> None:
        if outcome.fatal:  # the trial stays `running`, so --resume runs it again
            raise NasError(f"the search stopped at trial {outcome.trial_id}: {outcome.reason}",
                           hint="free disk space (or make the folder writable), then run the same command with "
                                "--resume: finished trials are kept and this one runs again")
        if outcome.ok:
            checkpoint = f"{self.store.checkpoint_dir().name}/trial-{outcome.trial_id}.pt"
            self.store.finish(outcome.trial_id, val_acc=outcome.val_acc, params=outcome.params, macs=outcome.macs,
                              train_time=outcome.train_time, epochs=outcome.epochs, checkpoint=checkpoint,
                              extra=outcome.extra)
            for linked in outcome.linked:
                self.store.add_done(**{**linked, "parents": (outcome.trial_id,),
                                       "checkpoint": f"{self.store.checkpoint_dir().name}/{linked['checkpoint']}"})
        else:
            self.store.fail(outcome.trial_id, outcome.reason, outcome.extra)

    def test_best(self) -> list[Trial]:
        """The final evaluation: the `test_top` best trials by validation accuracy and the
        accuracy/MACs Pareto front, on the test set (the only time it is touched)."""
        done = self.store.trials("done")
        chosen = {t.id: t for t in sorted(done, key=lambda t: -t.val_acc)[:self.config.test_top]}
        chosen.update({t.id: t for t in pareto_front(done, "macs")})
        self.untested = []  # why a chosen trial has no test accuracy (its checkpoint is gone, say)
        for trial in chosen.values():
            if trial.test_acc is None:
                try:
                    module = self.load_module(trial)
                except NasError as err:  # one lost checkpoint must not keep every other trial untested
                    self.untested.append(err.message)
                    continue
                self.store.set_test_acc(trial.id, accuracy(module, self.data.test))
        return [self.store.trial(i) for i in sorted(chosen, key=lambda i: -chosen[i].val_acc)]

    def load_module(self, trial: Trial):
        """The trained module of a done trial, from its checkpoint."""
        return trained_module(self.store, trial, self.space, self.data.input_shape)


def trained_module(store: Store, trial: Trial, space, input_shape: tuple):
    """The trained module of `trial`: its derivation's module in `space` (as the search
    bound it), with the weights of its checkpoint."""
    import torch

    if trial.status != "done" or trial.checkpoint is None:
        state = {"done": "was recorded without a checkpoint", "failed": f"failed ({trial.reason})",
                 "running": "is still running"}.get(trial.status, f"is {trial.status}")
        raise NasError(f"{store.path}: trial {trial.id} {state}: it has no trained weights",
                       hint="`nasdsl trials --store STORE` lists the trials and which are done")
    path = store.path.parent / trial.checkpoint
    graph = space.graph(space.parse(trial.derivation), input_shape)
    module = build_module(graph, seed=trial.seed)
    try:
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError) as err:
        raise NasError(f"{path}: cannot load trial {trial.id}'s checkpoint ({err})") from None
    return module


def not_a_sparsify_run(record: dict) -> None:
    """A `nasdsl sparsify` store is refused by the commands of a search, saying so."""
    if record.get("command") == "sparsify":
        raise NasError("this store holds a `nasdsl sparsify` run, not a search",
                       hint="continue it with `nasdsl sparsify --store PATH --resume`; `nasdsl trials` and "
                            "`nasdsl report` show it")


def stored_space(store: Store, space_file=None) -> tuple:
    """(space, input shape) of the search a store holds, bound as it was: the space file
    it read (`space_file` where it has moved; its digest must be the store's) and the
    data set it trained on, read again for its classes and image shape."""
    record = dict(store.config)
    not_a_sparsify_run(record)
    if space_file is not None:
        record["space_path"] = str(Path(space_file).resolve())
    elif "space_path" not in record:
        raise NasError(f"{store.path}: this store does not record where its space file is (it predates that)",
                       hint="give the space file the search read with --space FILE")
    config = SearchConfig.from_record(record)
    path = Path(config.space)
    try:
        text = path.read_text()
    except OSError as err:
        raise NasError(f"{path}: cannot read the search's space file ({err.strerror})",
                       hint="give the space file the search read with --space FILE") from None
    if hashlib.sha256(text.encode()).hexdigest() != store.config["space"]["sha256"]:
        raise NasError(f"{path} is not the space file this search read (it has changed since)",
                       hint="give the space file the search read with --space FILE")
    data = _dataset(config.dataset, config.val_fraction, config.data_seed, config.limit)
    return bind_to_data(load(path, config.params), data, config.params), data.input_shape


def _outcome(future, trial_id: int) -> tuple[TrialOutcome, bool]:
    """The trial's outcome, and whether its worker process died."""
    try:
        return future.result(), False
    except concurrent.futures.process.BrokenProcessPool:
        return TrialOutcome(trial_id, False, "its worker process died (killed, or out of memory)"), True
    except Exception as err:  # e.g. a Ray task error
        return TrialOutcome(trial_id, False, f"{type(err).__name__}: {err}"), False


def pareto_front(trials, cost: str = "macs") -> list[Trial]:
    """The done trials no other trial beats on both validation accuracy and `cost`
    (params or MACs), cheapest first."""
    front, best = [], -1.0
    for trial in sorted(trials, key=lambda t: (getattr(t, cost), -t.val_acc)):
        if trial.val_acc > best:
            front.append(trial)
            best = trial.val_acc
    return front
