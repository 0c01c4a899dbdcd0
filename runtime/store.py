"""The trial store: one SQLite file per search.

It holds the search's config (what must not change when it resumes), every
trial (derivation, lineage, status, metrics, checkpoint) and whatever state an
algorithm needs to continue. SQLite in WAL mode with one transaction per state
change means a search killed at any instant -- `kill -9` included -- leaves a
consistent file: a trial is either recorded as done with all its metrics or it
is not, and `--resume` re-runs exactly the trials that had not finished.

Only the search's main process writes; workers return results to it. A write the
disk refuses (full, read-only) is a StoreError that says so: every trial finished
before it was committed, so the search resumes once the disk takes writes again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path

import attrs

from nasdsl.language.errors import NasError

SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "done", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id          INTEGER PRIMARY KEY,
    derivation  TEXT NOT NULL,
    hash        TEXT NOT NULL,
    parents     TEXT NOT NULL DEFAULT '[]',
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    reason      TEXT,
    seed        INTEGER NOT NULL,
    val_acc     REAL,
    test_acc    REAL,
    params      INTEGER,
    macs        INTEGER,
    train_time  REAL,
    epochs      INTEGER,
    checkpoint  TEXT,
    extra       TEXT NOT NULL DEFAULT '{}',
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    id          INTEGER PRIMARY KEY,
    derivation  TEXT NOT NULL,
    hash        TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    method      TEXT NOT NULL,
    shared_acc  REAL NOT NULL,
    params      INTEGER NOT NULL,
    macs        INTEGER NOT NULL,
    created     REAL NOT NULL,
    UNIQUE (hash, epoch, method)
);
"""


class StoreError(NasError):
    """A store that cannot be used: unreadable, unwritable, corrupt, or from another search."""


@attrs.frozen
class Evaluation:
    """A one-shot search's measurement of one derivation on the supernet's shared
    weights after `epoch` supernet epochs (`method`: how batch norm was treated)."""

    id: int
    derivation: str
    hash: str
    epoch: int
    method: str
    shared_acc: float
    params: int
    macs: int
    created: float

    def to_json(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen
class Trial:
    """One row of the store."""

    id: int
    derivation: str
    hash: str
    parents: tuple[int, ...]
    status: str
    reason: str | None
    seed: int
    val_acc: float | None
    test_acc: float | None
    params: int | None
    macs: int | None
    train_time: float | None
    epochs: int | None
    checkpoint: str | None
    extra: dict
    created: float
    started: float | None
    finished: float | None

    @property
    def parent(self) -> int | None:
        return self.parents[0] if self.parents else None

    def to_json(self) -> dict:
        """The row as `nasdsl trials --json` prints it; algorithm fields from `extra` join it."""
        row = {"id": self.id, "derivation": self.derivation, "hash": self.hash, "status": self.status,
               "reason": self.reason, "parent": self.parent, "parents": list(self.parents),
               "val_acc": self.val_acc, "test_acc": self.test_acc, "params": self.params, "macs": self.macs,
               "train_time": self.train_time, "epochs": self.epochs, "seed": self.seed}
        row.update({k: v for k, v in self.extra.items() if k not in row and k != "history"})
        return row


class Store:
    """A search's SQLite file. `Store.create` starts one and `Store.resume` continues
    one, each holding the store's lock (a search is its only writer); `Store.open`
    reads one, read-only, while a search may be writing it."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock=None):
        self.path = path
        self._db = db
        self._lock = lock  # the open lock file of a writer (released on close, or when the process dies)

    # ---- opening
    @classmethod
    def create(cls, path, config: dict) -> "Store":
        """A new, empty store for a search with `config`; refuses to overwrite a store.
        The schema and config are written to a temporary file that is then renamed, so
        a store file, once there, is always a complete (empty) store."""
        path = Path(path)
        lock = _lock(path, new=True)
        partial = path.with_name(f".{path.name}.creating")
        try:
            if path.exists() and path.stat().st_size > 0:
                raise StoreError(f"{path}: a store already exists here",
                                 hint="add --resume to continue that search, or choose another --store")
            with _refused(path, new=True):
                partial.unlink(missing_ok=True)
                db = _connect(partial)
                with db:
                    db.executescript(SCHEMA)
                    db.executemany("INSERT INTO meta VALUES (?, ?)",
                                   [("schema", json.dumps(SCHEMA_VERSION)), ("config", json.dumps(config))])
                db.close()  # the last connection checkpoints the WAL into the file
                partial.replace(path)
                store = cls(path, _connect(path), lock)
        except BaseException:
            for leftover in (partial, *(partial.with_name(partial.name + end) for end in ("-wal", "-shm"))):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)  # give back what a full disk took
            lock.close()
            raise
        store.config = json.loads(json.dumps(config))  # as `open` reads it back
        return store

    @classmethod
    def resume(cls, path, config: dict, *, ignore: tuple = (), implied=None) -> "Store":
        """An existing store, to continue its search: refused unless it was made by the
        same search (keys in `ignore`, such as the trial budget, may differ) and no
        other process is writing it. `implied(stored) -> config` fills in what an older
        store does not record (a setting added since, with the value it ran with)."""
        path = Path(path)
        _exists(path)
        _writable(path)
        lock, store = _lock(path), None
        try:
            with _refused(path):
                store = cls(path, _connect(path), lock)
            store._read_meta()
            with store._writing():  # a disk that refuses writes is refused now, not at the first trial
                store._db.execute("UPDATE meta SET value = value WHERE key = 'schema'")
                store._db.executescript(SCHEMA)  # tables added since the store was made (evaluations)
        except BaseException:
            if store is not None:
                store.close()
            lock.close()
            raise
        config = json.loads(json.dumps(config))  # as the store has it: tuples are lists
        differ = _differences(implied(store.config) if implied else store.config, config, ignore)
        if differ:
            store.close()
            shown = "; ".join(f"{k}: store has {json.dumps(was)}, now {json.dumps(now)}"
                              for k, (was, now) in differ.items())
            raise StoreError(f"{path}: this store belongs to a different search ({shown})",
                             hint="resume with the same space, data set and settings, or start a new --store")
        return store

    @classmethod
    def open(cls, path) -> "Store":
        """An existing store, read-only (`nasdsl trials`, `report`): no lock is taken, and
        a store in a folder this process cannot write is read as it is."""
        path = Path(path)
        _exists(path)
        try:
            store = cls(path, _connect(path, read_only=True))
        except (OSError, sqlite3.OperationalError) as err:
            raise StoreError(f"{path}: cannot open the store ({err})") from None
        store._read_meta()
        return store

    def _read_meta(self) -> None:
        try:
            rows = dict(self._db.execute("SELECT key, value FROM meta"))
            self._db.execute("SELECT id, derivation, status, extra FROM trials LIMIT 1").fetchall()
        except sqlite3.DatabaseError as err:
            self.close()
            raise StoreError(f"{self.path}: not a nasdsl trial store, or corrupt ({err})",
                             hint="point --store at a store written by `nasdsl search`") from None
        if json.loads(rows.get("schema", "0")) != SCHEMA_VERSION or "config" not in rows:
            self.close()
            raise StoreError(f"{self.path}: written by another version of nasdsl (schema {rows.get('schema')})")
        self.config = _upgraded(json.loads(rows["config"]))

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def _writing(self):
        """One transaction. A write the disk refuses stops the search with a StoreError
        saying why; the transactions before it are kept."""
        with _refused(self.path, fallback=False):
            with self._db:
                yield

    # ---- trials: one transaction per state change
    def add(self, derivation: str, hash: str, seed: int, parents=(), extra: dict | None = None) -> int:
        with self._writing():
            cursor = self._db.execute(
                "INSERT INTO trials (derivation, hash, parents, status, seed, extra, created) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (derivation, hash, json.dumps(list(parents)), seed, json.dumps(extra or {}), time.time()))
        return cursor.lastrowid

    def add_done(self, derivation: str, hash: str, seed: int, parents=(), extra: dict | None = None, *,
                 val_acc: float, params: int, macs: int, train_time: float, epochs: int,
                 checkpoint: str | None) -> int:
        """A trial that was trained inside another one (e.g. a lottery ticket), recorded
        done in one transaction, so a crash never leaves it half-written."""
        now = time.time()
        with self._writing():
            cursor = self._db.execute(
                "INSERT INTO trials (derivation, hash, parents, status, seed, extra, created, started, finished, "
                "val_acc, params, macs, train_time, epochs, checkpoint) "
                "VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (derivation, hash, json.dumps(list(parents)), seed, json.dumps(extra or {}), now, now, now,
                 val_acc, params, macs, train_time, epochs, checkpoint))
        return cursor.lastrowid

    def start(self, trial_id: int) -> None:
        self._set(trial_id, status="running", started=time.time())

    def finish(self, trial_id: int, *, val_acc: float, params: int, macs: int, train_time: float,
               epochs: int, checkpoint: str | None, extra: dict | None = None) -> None:
        self._set(trial_id, status="done", reason=None, val_acc=val_acc, params=params, macs=macs,
                  train_time=train_time, epochs=epochs, checkpoint=checkpoint, finished=time.time(),
                  extra=self._merged_extra(trial_id, extra))

    def fail(self, trial_id: int, reason: str, extra: dict | None = None) -> None:
        self._set(trial_id, status="failed", reason=reason, finished=time.time(),
                  extra=self._merged_extra(trial_id, extra))

    def set_test_acc(self, trial_id: int, test_acc: float) -> None:
        self._set(trial_id, test_acc=test_acc)

    def requeue_unfinished(self) -> list[int]:
        """Trials that were queued or running when the search stopped, back in the queue."""
        with self._writing():
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM trials WHERE status IN ('queued', 'running') ORDER BY id")]
            self._db.execute("UPDATE trials SET status = 'queued', started = NULL WHERE status = 'running'")
        return ids

    def _merged_extra(self, trial_id: int, extra: dict | None) -> str:
        old = json.loads(self._db.execute("SELECT extra FROM trials WHERE id = ?", (trial_id,)).fetchone()[0])
        return json.dumps({**old, **(extra or {})})

    def _set(self, trial_id: int, **columns) -> None:
        names = ", ".join(f"{k} = ?" for k in columns)
        with self._writing():
            self._db.execute(f"UPDATE trials SET {names} WHERE id = ?", (*columns.values(), trial_id))

    # ---- reading
    def trials(self, status: str | None = None) -> list[Trial]:
        """All trials (or those with `status`), in the order they were proposed."""
        query, args = "SELECT * FROM trials", ()
        if status:
            query, args = query + " WHERE status = ?", (status,)
        return [_trial(row) for row in self._db.execute(query + " ORDER BY id", args)]

    def trial(self, trial_id: int) -> Trial:
        row = self._db.execute("SELECT * FROM trials WHERE id = ?", (trial_id,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no trial {trial_id}")
        return _trial(row)

    def finished_in_order(self) -> list[Trial]:
        """Done trials in the order they finished (aging evolution's population order)."""
        return [_trial(r) for r in self._db.execute(
            "SELECT * FROM trials WHERE status = 'done' ORDER BY finished, id")]

    # ---- shared-weight evaluations (one-shot searches)
    def add_evaluation(self, derivation: str, hash: str, *, epoch: int, method: str, shared_acc: float,
                       params: int, macs: int) -> int:
        with self._writing():
            cursor = self._db.execute(
                "INSERT INTO evaluations (derivation, hash, epoch, method, shared_acc, params, macs, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (derivation, hash, epoch, method, shared_acc, params, macs, time.time()))
        return cursor.lastrowid

    def evaluations(self, *, hash: str | None = None, epoch: int | None = None,
                    method: str | None = None) -> list[Evaluation]:
        """The shared-weight evaluations (those matching the arguments given), in the
        order they were made; none in a store older than them."""
        where = [(f"{k} = ?", v) for k, v in (("hash", hash), ("epoch", epoch), ("method", method)) if v is not None]
        query = "SELECT * FROM evaluations" + (" WHERE " + " AND ".join(c for c, _ in where) if where else "")
        try:
            rows = self._db.execute(query + " ORDER BY id", [v for _, v in where]).fetchall()
        except sqlite3.OperationalError:  # a read-only store from before evaluations: it has none
            return []
        return [Evaluation(**dict(row)) for row in rows]

    # ---- algorithm state
    def get_state(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_state(self, key: str, value) -> None:
        with self._writing():
            self._db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, json.dumps(value)))

    def checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.path)


def checkpoint_dir(store_path: Path) -> Path:
    """Where a search's weights go: a folder beside its store, named after it."""
    return store_path.with_name(store_path.name + ".ckpt")


def _differences(stored: dict, given: dict, ignore: tuple, prefix: str = "") -> dict:
    """{key: (stored value, given value)} for each key that differs; a key of a dict
    that is in both is named inside it (`settings.population`), so every difference
    is named by itself."""
    found = {}
    for key in sorted((set(stored) | set(given)) - set(ignore)):
        was, now = stored.get(key), given.get(key)
        if isinstance(was, dict) and isinstance(now, dict):
            found.update(_differences(was, now, (), f"{prefix}{key}."))
        elif was != now:
            found[prefix + key] = (was, now)
    return found


def _upgraded(config: dict) -> dict:
    """A stored config as the current search writes it. Stores written before the
    algorithms registered themselves kept evolution's `population` and `sample_size`
    and MENAS's `options` as keys of their own, and every setting again under
    `algorithm_settings`; today that last one is `settings`, and the rest is gone."""
    if "settings" in config or "algorithm_settings" not in config:
        return config
    old = ("population", "sample_size", "options", "algorithm_settings")
    return {**{k: v for k, v in config.items() if k not in old}, "settings": config["algorithm_settings"]}


def _exists(path: Path) -> None:
    if not path.is_file():
        raise StoreError(f"{path}: no store here", hint="`nasdsl search ... --store PATH` writes one")


def _writable(path: Path) -> None:
    """Refuse a store this process cannot write before SQLite opens it: SQLite would open
    it read-only and leave -wal and -shm files beside it with its read-only mode, which
    keep it unwritable once the store itself is made writable again."""
    files = [path, path.parent] + [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
    for file in files:
        if not os.access(file, os.W_OK):
            raise refused_error(path, PermissionError(errno.EACCES, "Permission denied", str(file)))


def _lock(path: Path, new: bool = False):
    """The store's writer lock: an exclusive `flock` on `PATH.lock`, which the OS
    releases when the holder dies, so a killed search can be resumed at once. The
    file records the holder's pid, for the error a second writer gets."""
    with _refused(path, new):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StoreError(f"{path}: store in use by process {holder}",
                         hint="wait for that search to finish (or stop it), then --resume") from None
    try:
        with _refused(path, new):
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
    except StoreError:
        handle.close()
        raise
    return handle


# how the disk refuses a write: by SQLite's message (fixed for these codes) or by errno
SQLITE_REFUSALS = {"database or disk is full": "full", "attempt to write a readonly database": "read-only",
                   "disk I/O error": "failed"}  # a file past its size limit (EFBIG) reaches SQLite as this
OS_REFUSALS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EFBIG: "full",
               errno.EROFS: "read-only", errno.EACCES: "read-only", errno.EPERM: "read-only"}
WHY = {"full": "the disk is full", "failed": "the disk failed a write; is it full?",
       "read-only": "it is read-only"}
FREE_SPACE = {True: "free disk space (or choose a --store on another disk), then run the search again",
              False: "the trials finished so far are kept in the store: free disk space, then run the "
                     "same command with --resume"}
WRITABLE = {True: "choose a --store path in a folder you can write to",
            False: "make the store and its folder writable, then run the same command with --resume "
                   "(`nasdsl trials` and `report` read it as it is)"}


def refusal(err: BaseException) -> str | None:
    """How the disk refused a write ("full", "failed" or "read-only"), when `err`
    (SQLite's or the OS's) is that; None for anything else (a damaged store, a bug)."""
    if isinstance(err, sqlite3.OperationalError):
        return SQLITE_REFUSALS.get(str(err))
    if isinstance(err, OSError):
        return OS_REFUSALS.get(err.errno)
    return None


def refused_error(path: Path, err: BaseException, new: bool = False) -> StoreError | None:
    """The StoreError for a write to the store at `path` that the disk refused, or None
    when `err` is not that. `new`: the store was being created (no trials to keep)."""
    kind = refusal(err)
    if kind is None:
        return None
    detail = str(err)
    if isinstance(err, OSError) and err.strerror:
        detail = err.strerror + (f": {err.filename}" if err.filename else "")
    hint = (WRITABLE if kind == "read-only" else FREE_SPACE)[new]
    return StoreError(f"{path}: cannot {'create' if new else 'write'} the store: {WHY[kind]} ({detail})", hint=hint)


@contextlib.contextmanager
def _refused(path: Path, new: bool = False, fallback: bool = True):
    """Turn OS and SQLite errors inside into StoreErrors: a refused write says why;
    with `fallback`, any other says the store cannot be opened (else it propagates)."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as err:
        refused = refused_error(path, err, new)
        if refused is None and not fallback:
            raise
        raise refused or StoreError(f"{path}: cannot open the store ({err})",
                                    hint="choose a --store path in a folder you can write to") from None


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the store file. OS and SQLite errors are the caller's to name (it
    knows whether the store is new); a file that is not SQLite is a StoreError here."""
    try:
        if read_only:
            # a WAL store needs its -shm file: where the folder is not writable, read the file as it stands;
            # so too a store that is not, or SQLite leaves -wal and -shm files as read-only as it is
            writable = os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)
            flags = "mode=ro" if writable else "mode=ro&immutable=1"
            db = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True, timeout=30)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=30)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
        db.row_factory = sqlite3.Row
    except (OSError, sqlite3.OperationalError):
        raise  # the caller names these (OperationalError is a DatabaseError too)
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path}: not a nasdsl trial store, or corrupt ({err})",
                         hint="point --store at a store written by `nasdsl search`") from None
    return db


def _trial(row: sqlite3.Row) -> Trial:
    data = dict(row)
    data["parents"] = tuple(json.loads(data["parents"]))
    data["extra"] = json.loads(data["extra"])
    return Trial(**data)
