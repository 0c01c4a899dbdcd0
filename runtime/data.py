"""Image data sets for the search runtime, loaded whole into memory as tensors.

The data sets a search uses are small enough to sit in memory, so a trial never
waits on disk and workers can share one copy. Nothing is ever downloaded and
nothing is cached on disk: every loader reads files the user already has (or the
digits that ship inside scikit-learn).

A spec is `NAME` or `NAME:PATH`:

- `fashion-mnist[:DIR]`: the four idx files (gzip or plain); DIR defaults to
  where the Debian package `dataset-fashion-mnist` puts them. Without that
  package (and without a DIR) it falls back to `digits` and says so in `note`.
- `mnist:DIR`: the same idx format.
- `digits`: scikit-learn's 8x8 digits; it has no official test split, so a
  seeded, stratified 20% is held out as the test set.
- `cifar10:DIR` / `cifar100:DIR`: the "python version" pickles. Unpickling runs
  whatever a pickle asks for, so only containers and numpy arrays are allowed;
  anything else is refused.
- `imagefolder:DIR`: one folder per class, either under `DIR/train` plus
  `DIR/test` (or `DIR/val`, the ImageNet habit) or in a single tree that is split
  by the seed like digits. Images become RGB, `image_size` square (scaled and
  centre-cropped, keeping the aspect ratio).

The validation part is always held out from the training set (stratified,
seeded); the test set is only for the final evaluation. All three parts are
normalised per channel with the mean and std of the training part.
"""

from __future__ import annotations

import codecs
import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path

import attrs
import numpy as np
import torch

from nasdsl.language.errors import NasError, did_you_mean

DATASETS = ("fashion-mnist", "mnist", "digits", "cifar10", "cifar100", "imagefolder")
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
HELD_OUT_TEST = 0.2  # test fraction for sets without an official test split
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


class DataError(NasError):
    """A data set that cannot be loaded: the message names the spec or file, the hint the fix."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)


@attrs.frozen(eq=False, repr=False)
class Split:
    """One part of a data set, in memory. Compared by identity: tensors have no single truth value."""

    x: torch.Tensor  # float32 (N, C, H, W), normalised
    y: torch.Tensor  # int64 (N,)

    def __attrs_post_init__(self):
        if self.x.dtype != torch.float32 or self.x.dim() != 4:
            raise ValueError(f"Split.x must be float32 (N, C, H, W), not {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.shape != self.x.shape[:1]:
            raise ValueError(f"Split.y must be int64 ({self.x.shape[0]},), not {self.y.dtype} {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return self.y.shape[0]

    def __repr__(self) -> str:
        return f"Split(x={tuple(self.x.shape)}, y={tuple(self.y.shape)})"


@attrs.frozen(eq=False)
class Dataset:
    """A loaded data set: train and val come from the training files, test from the test files."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    note: str = ""  # what the user should know, e.g. a fallback; the CLI shows it


def fitted(data: Dataset, input_shape) -> Dataset:
    """`data` shaped for a model that takes `input_shape` (C, H, W): images resized
    (bilinear) to H x W, a one-channel set repeated to C channels (torchvision's
    models on Fashion-MNIST: 3 x 32 x 32). The same data set when it already fits."""
    c, h, w = (int(d) for d in input_shape)
    if (c, h, w) == tuple(data.input_shape):
        return data
    if c != data.input_shape[0] and data.input_shape[0] != 1:
        raise DataError(f"{data.name} has {data.input_shape[0]} channels; the model takes {c}",
                        "give --input-shape with the data's channel count")

    def fit(split: Split) -> Split:
        x = split.x
        if (h, w) != tuple(x.shape[2:]):
            x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return Split(x.expand(-1, c, -1, -1).contiguous(), split.y)

    return attrs.evolve(data, train=fit(data.train), val=fit(data.val), test=fit(data.test), input_shape=(c, h, w))


@attrs.frozen(eq=False)
class _Raw:
    """What a loader reads: uint8 (N, C, H, W) images and int64 labels."""

    name: str
    x: np.ndarray
    y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    note: str = ""


def load(spec: str, *, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None,
         image_size: int = 32) -> Dataset:
    """Load the data set `spec` names, hold out `val_fraction` of its training set, normalise.

    `limit` caps the training part at that many images (a seeded, stratified subset)
    and the validation part in proportion, so quick runs keep the usual train/val
    ratio; the test set is never cut, so test numbers stay comparable.
    """
    if not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), not {val_fraction!r}")
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, not {seed!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive number of training images, not {limit!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image size must be a positive integer, not {image_size!r}")
    raw = _read(spec, seed, image_size)
    return _assemble(raw, val_fraction, seed, limit)


def _read(spec: str, seed: int, image_size: int) -> _Raw:
    name, _, path = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in DATASETS:
        hint = did_you_mean(name, DATASETS)
        known = "data sets: " + ", ".join(DATASETS)
        raise DataError(f"unknown data set `{name}`", f"{hint} ({known})" if hint else known)
    if name == "digits":
        if path:
            raise DataError("`digits` ships with scikit-learn and takes no path", "write just `digits`")
        return _digits(seed)
    if name == "fashion-mnist" and not path:
        if not FASHION_MNIST_ROOT.exists():
            digits = _digits(seed)
            note = (f"Fashion-MNIST is not installed (no {FASHION_MNIST_ROOT}); using scikit-learn digits "
                    f"instead. Install it with `apt-get install dataset-fashion-mnist`. {digits.note}")
            return attrs.evolve(digits, note=note)
        return _idx_set(name, FASHION_MNIST_ROOT)
    if not path:
        raise DataError(f"`{name}` needs the folder that holds it", f"write `{name}:PATH`")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (data set `{name}`)", "nothing is downloaded: point at a local copy")
    if name in ("fashion-mnist", "mnist"):
        return _idx_set(name, root)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, root)
    return _image_folder(root, image_size, seed)


def _assemble(raw: _Raw, val_fraction: float, seed: int, limit: int | None) -> Dataset:
    """Hold out the validation part, apply `limit`, normalise with the training part's statistics."""
    order = _stratified_order(raw.y, np.random.default_rng([seed, 1]))
    n_val = round(val_fraction * len(order))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if limit is not None and limit < len(train_idx):
        keep = _stratified_order(raw.y[train_idx], np.random.default_rng([seed, 2]))[:limit]
        train_idx = train_idx[keep]
        n_val = math.ceil(limit * val_fraction / (1 - val_fraction))
        keep = _stratified_order(raw.y[val_idx], np.random.default_rng([seed, 3]))[:n_val]
        val_idx = val_idx[keep]
    if len(train_idx) == 0:
        raise DataError(f"`{raw.name}` leaves no training images after holding out {val_fraction:.0%} for validation",
                        "lower the validation fraction or add images")
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)

    train_x = raw.x[train_idx]
    mean, std = _channel_stats(train_x)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        normalised = torch.from_numpy(x.astype(np.float32)).sub_(mean).div_(std)
        return Split(normalised, torch.from_numpy(y.astype(np.int64)))

    return Dataset(
        name=raw.name,
        train=split(train_x, raw.y[train_idx]),
        val=split(raw.x[val_idx], raw.y[val_idx]),
        test=split(raw.test_x, raw.test_y),
        num_classes=raw.num_classes,
        input_shape=tuple(int(d) for d in raw.x.shape[1:]),
        note=raw.note,
    )


def _channel_stats(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, as (1, C, 1, 1) float32.

    Summed in integers, so they are exact and need no float copy of the images
    (a float reduction over 42M pixels was a third of the Fashion-MNIST load time).
    """
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean, std = [], []
    for c in range(x.shape[1]):
        channel = x[:, c]
        m = int(channel.sum(dtype=np.int64)) / n
        square = int(np.square(channel, dtype=np.uint16).sum(dtype=np.int64)) / n
        s = max(square - m * m, 0.0) ** 0.5
        mean.append(m)
        std.append(s if s > 0 else 1.0)  # a constant channel stays finite
    shape = (1, x.shape[1], 1, 1)
    return torch.tensor(mean).view(shape), torch.tensor(std).view(shape)


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded order of the indices in which every prefix holds each class in about its share.

    Each item is placed at the middle of its slot within its class, (rank + 0.5) / size,
    so taking the first k items takes from every class in proportion; ties fall back to
    the random order.
    """
    perm = rng.permutation(len(labels))
    shuffled = labels[perm]
    by_class = np.argsort(shuffled, kind="stable")
    sorted_labels = shuffled[by_class]
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_class] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels)
    _, inverse, counts = np.unique(shuffled, return_inverse=True, return_counts=True)
    position = (rank + 0.5) / counts[inverse]
    return perm[np.argsort(position, kind="stable")]


def _held_out(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, seed: int, note: str) -> _Raw:
    """Split a set without an official test split: a seeded, stratified share becomes the test set."""
    order = _stratified_order(y, np.random.default_rng([seed, 0]))
    n_test = round(HELD_OUT_TEST * len(order))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return _Raw(name, x[train], y[train], x[test], y[test], num_classes, note)


# --- digits ------------------------------------------------------------------------------

def _digits(seed: int) -> _Raw:
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes a second to import

    digits = load_digits()
    x = digits.images.astype(np.uint8)[:, None]  # grey levels 0..16
    y = digits.target.astype(np.int64)
    note = (f"scikit-learn digits has no official test split: {HELD_OUT_TEST:.0%} of its "
            f"{len(y)} images (seed {seed}) are held out as the test set.")
    return _held_out("digits", x, y, 10, seed, note)


# --- idx (MNIST, Fashion-MNIST) ---------------------------------------------------------

_IDX_UBYTE = 0x08


def _idx_set(name: str, root: Path) -> _Raw:
    train_x = _read_idx(_idx_file(root, "train-images-idx3-ubyte"), 3)
    train_y = _read_idx(_idx_file(root, "train-labels-idx1-ubyte"), 1)
    test_x = _read_idx(_idx_file(root, "t10k-images-idx3-ubyte"), 3)
    test_y = _read_idx(_idx_file(root, "t10k-labels-idx1-ubyte"), 1)
    for images, labels, part in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if len(images) != len(labels):
            raise DataError(f"{root}: {len(images)} {part} images but {len(labels)} labels")
        if len(labels) and labels.max() >= 10:
            raise DataError(f"{root}: {part} label {labels.max()} is not a class 0..9")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{root}: train images are {train_x.shape[1:]}, test images {test_x.shape[1:]}")
    return _Raw(name, train_x[:, None], train_y.astype(np.int64), test_x[:, None], test_y.astype(np.int64), 10)


def _idx_file(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root / stem}.gz: no such file", f"{root} should hold the four idx files (gzip or plain)")


MAX_IDX_BYTES = 2**31  # what an idx header may declare (Fashion-MNIST's largest file holds 47 MB)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes: magic 00 00 08 ndim, ndim big-endian sizes, then
    the data. The header is read first and the data only up to the size it declares
    (itself bounded), so a small file that decompresses to gigabytes cannot fill memory."""
    header = 4 + 4 * ndim
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
            head = f.read(header)
            if len(head) < header or head[:4] != bytes([0, 0, _IDX_UBYTE, ndim]):
                raise DataError(f"{path}: not an idx file of bytes with {ndim} dimension(s) "
                                f"(starts with {head[:4].hex() or 'nothing'}, expected 000008{ndim:02x})")
            dims = struct.unpack(f">{ndim}I", head[4:header])
            size = math.prod(dims)
            if size > MAX_IDX_BYTES:
                raise DataError(f"{path}: its header {dims} declares {size:,} bytes; at most {MAX_IDX_BYTES:,} "
                                "are read", "the file is damaged; reinstall or copy it again")
            data = f.read(size + 1)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read: {e}", "the file is damaged; reinstall or copy it again") from None
    if len(data) != size:
        what = f"truncated: {header + len(data)} bytes" if len(data) < size else "longer than its header says"
        raise DataError(f"{path}: {what}, its header {dims} needs {header + size}",
                        "the file is damaged; reinstall or copy it again")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


# --- CIFAR ------------------------------------------------------------------------------

def _cifar(name: str, root: Path) -> _Raw:
    if name == "cifar10":
        folder, classes, key = "cifar-10-batches-py", 10, "labels"
        train_files, test_file = [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
    else:
        folder, classes, key = "cifar-100-python", 100, "fine_labels"
        train_files, test_file = ["train"], "test"
    if (root / folder).is_dir():  # the folder the archive unpacks to, or its parent
        root = root / folder
    parts = [_cifar_file(root / f, key, classes) for f in train_files]
    test_x, test_y = _cifar_file(root / test_file, key, classes)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return _Raw(name, x, y, test_x, test_y, classes)


def _cifar_file(path: Path, key: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: no such file", "point at the unpacked `python version` folder of the data set")
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        x, y = batch["data"], batch[key]
        # check the types before converting: a small pickle of shared references (one list
        # referenced a million times) would otherwise expand to gigabytes in np.asarray
        if not isinstance(x, np.ndarray) or not isinstance(y, (list, np.ndarray)) or len(y) != len(x) or \
                (isinstance(y, list) and not all(type(v) is int for v in y)):
            raise ValueError("`data` must be an array and the labels one int per image")
        y = np.asarray(y, dtype=np.int64)
    except Exception as e:  # a damaged pickle can fail in many ways; all mean the same to the user
        raise DataError(f"{path}: not a CIFAR batch: {type(e).__name__}: {e}",
                        "expected a pickled dict with `data` and labels") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),):
        raise DataError(f"{path}: expected uint8 data (N, 3072) and N labels, "
                        f"found {x.dtype} {x.shape} and {y.shape[0]} labels")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"{path}: a label is outside 0..{classes - 1}")
    return x.reshape(-1, 3, 32, 32), y


def _numpy_globals() -> dict:
    """The callables a pickled numpy array refers to, under the module names old and new numpy use."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    found = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        found[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        found[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        found[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return found


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers and numpy arrays only, which is all a CIFAR batch holds;
    refusing every other global keeps a hostile file from running code."""

    allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refusing to load `{module}.{name}`")
        return self.allowed[(module, name)]


# --- image folders ----------------------------------------------------------------------

def _image_folder(root: Path, size: int, seed: int) -> _Raw:
    name = f"imagefolder:{root}"
    train_dir = root / "train"
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if train_dir.is_dir() and test_dir is not None:
        classes = _classes(train_dir)
        x, y = _read_tree(train_dir, classes, size)
        test_x, test_y = _read_tree(test_dir, classes, size)
        return _Raw(name, x, y, test_x, test_y, len(classes), f"test set: {test_dir}")
    tree = train_dir if train_dir.is_dir() else root
    classes = _classes(tree)
    x, y = _read_tree(tree, classes, size)
    note = (f"{tree} has no test/ or val/ folder beside it: {HELD_OUT_TEST:.0%} of its images "
            f"(seed {seed}) are held out as the test set.")
    return _held_out(name, x, y, len(classes), seed, note)


def _classes(tree: Path) -> list[str]:
    classes = sorted(d.name for d in tree.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{tree}: no class folders", "put each class's images in a folder named after the class")
    return classes


def _read_tree(tree: Path, classes: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, ImageOps  # comes with torchvision; only image folders need it

    known = set(classes)
    images, labels = [], []
    for folder in sorted(d for d in tree.iterdir() if d.is_dir() and not d.name.startswith(".")):
        if folder.name not in known:
            raise DataError(f"{folder}: class `{folder.name}` is not among the training classes",
                            f"training classes: {', '.join(classes)}")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        for path in files:
            try:
                with Image.open(path) as image:
                    image = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
                    images.append(np.asarray(image).transpose(2, 0, 1))
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise DataError(f"{path}: cannot read image: {e}") from None
            labels.append(classes.index(folder.name))
    if not images:
        raise DataError(f"{tree}: no images", f"image files end in {', '.join(sorted(IMAGE_SUFFIXES))}")
    return np.stack(images), np.asarray(labels, dtype=np.int64)
