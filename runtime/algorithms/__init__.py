"""Search algorithms, found by name: each module of this package defines one and
registers it with `@register("name")`, so adding an algorithm is one new file here.

An algorithm is a frozen attrs class whose fields are its settings (made with
`setting`, whose metadata gives the `nasdsl search` flag and its help), and which
proposes the next derivation to train from what the store already knows:
`propose(proposer, store, index, seed) -> Proposal` (see `runtime/propose.py`).
It keeps no state of its own between proposals: the population, the history and
the random stream are all read back from the store and the trial's index, so a
resumed search continues exactly where it stopped.
"""

from __future__ import annotations

import importlib
import pkgutil

import attrs

from nasdsl.language.errors import NasError, did_you_mean

from ..trial import run_trial

_REGISTERED: dict[str, type] = {}


def register(name: str):
    """Class decorator: make the algorithm class available as `--algorithm name`."""

    def add(cls: type) -> type:
        if _REGISTERED.get(name, cls) is not cls:
            raise NasError(f"two algorithms are registered as `{name}`: {_REGISTERED[name].__qualname__} "
                           f"and {cls.__qualname__}")
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return add


def setting(default, help: str, *, flag: str | None = None, metavar: str | None = None,
            choices: tuple | None = None, converter=None, minimum: int = 1, absent=attrs.NOTHING):
    """A field of an algorithm's config class; `flag` defaults to `--field-name`, and a
    bool setting's flag stores the opposite of its default (`--no-inherit`); a count's
    flag takes `minimum` or more (1 unless said). `absent` is what a store written
    before the setting existed ran with (its default unless said), so that it resumes."""
    metadata = {"help": help, "flag": flag, "metavar": metavar, "choices": choices, "minimum": minimum,
                "absent": default if absent is attrs.NOTHING else absent}
    return attrs.field(default=default, converter=converter, metadata=metadata)


def flag(field: attrs.Attribute) -> str:
    """The `nasdsl search` flag of a setting: `--field-name`, or `--no-field-name` for a
    bool that defaults to True (the flag turns it off)."""
    name = field.name.replace("_", "-")
    return field.metadata.get("flag") or (f"--no-{name}" if field.default is True else f"--{name}")


def absent_settings(cls: type) -> dict:
    """What each setting of `cls` was before it existed (see `setting`)."""
    return {f.name: f.metadata.get("absent", f.default) for f in attrs.fields(cls)}


def algorithms() -> dict[str, type]:
    """Every algorithm by name: the package's modules are imported first, so each has
    registered itself."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(_REGISTERED.items()))


def lookup(name: str) -> type:
    known = algorithms()
    if name not in known:
        suggestion = did_you_mean(name, known)
        raise NasError(f"unknown algorithm `{name}`" + (f"; {suggestion}" if suggestion else ""),
                       hint=f"choose one of: {', '.join(known)}")
    return known[name]


def create(name: str, settings: dict | None = None) -> "Algorithm":
    """The algorithm `name` with `settings` (field names; the rest keep their defaults)."""
    cls = lookup(name)
    fields = [f.name for f in attrs.fields(cls)]
    unknown = sorted(set(settings or {}) - set(fields))
    if unknown:
        raise NasError(f"algorithm `{name}` has no setting `{unknown[0]}`",
                       hint=f"its settings: {', '.join(fields) or 'none'}")
    return cls(**(settings or {}))


class Algorithm:
    """What every algorithm shares: its settings as JSON (the store's record of them),
    and trials trained by `run_trial` with nothing beyond the derivation. MENAS
    overrides the last two (it inherits and prunes)."""

    name: str  # set by `register`

    def settings(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.asdict(self).items()}

    @property
    def trial_function(self):
        return run_trial

    def job_settings(self, search, trial) -> dict:
        return {}

    def trial_train(self, train):
        """How a trial trains (`--epochs` and the rest); a one-shot algorithm retrains
        for its own `--retrain-epochs`, since its `--epochs` train the supernet."""
        return train

    def prepare(self, search, reporter=None) -> None:
        """Work before the first proposal (a one-shot algorithm's supernet); nothing here."""

    def follow(self, search) -> None:
        """A torchrun rank other than the lead: only a one-shot algorithm's supernet
        training runs on several processes."""
        raise NasError(f"--algorithm {self.name} trains each trial in one process; only one-shot algorithms "
                       "train under torchrun", hint="run it without torchrun (--workers trains trials in parallel)")

    def notes(self, search) -> list[str]:
        """What a user should know before this search starts (said once, at the start):
        settings that make it something other than what its name says."""
        return []


def first_generation_note(name: str, population: int, trials: int) -> list[str]:
    """Evolution's first `population` trials are uniform samples: a budget no larger
    is random search, which the user should hear rather than discover."""
    if trials > population:
        return []
    return [f"{name}: the first --population {population} trials are random samples and --trials is {trials}, "
            f"so this search is random search; give a --population below {trials} to evolve"]
