"""Data loading: real Fashion-MNIST when installed, and small synthetic sets written
to tmp_path for the idx, CIFAR and image-folder formats and their failures."""

import gzip
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from nasdsl.runtime import data
from nasdsl.runtime.data import DataError, load

FASHION = data.FASHION_MNIST_ROOT
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")

TRAIN_LEVELS = np.arange(16, dtype=np.uint8) * 10  # every synthetic train image is a permutation of these


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(root: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny 4x4 MNIST-format set. Train images are distinct permutations of TRAIN_LEVELS, so the
    training statistics are known whichever images land in train; test images are much brighter."""
    rng = np.random.default_rng(seed)
    train = np.stack([rng.permutation(TRAIN_LEVELS) for _ in range(n_train)]).reshape(n_train, 4, 4)
    assert len({im.tobytes() for im in train}) == n_train
    test = rng.integers(200, 256, size=(n_test, 4, 4), dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": train,
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": test,
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, array in files.items():
        (root / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    return train, test


def rows(split: data.Split) -> set[bytes]:
    return {image.numpy().tobytes() for image in split.x}


@pytest.fixture(scope="module")
def fashion():
    if not FASHION.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    return load("fashion-mnist")


@needs_fashion
def test_fashion_mnist_shapes_and_sizes(fashion):
    assert fashion.name == "fashion-mnist" and fashion.note == ""
    assert fashion.num_classes == 10 and fashion.input_shape == (1, 28, 28)
    assert len(fashion.train) == 54000 and len(fashion.val) == 6000 and len(fashion.test) == 10000
    for split in (fashion.train, fashion.val, fashion.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 28, 28)
    # stratified: Fashion-MNIST has 6000 training images per class, so 600 of each are held out
    assert torch.bincount(fashion.val.y).tolist() == [600] * 10
    assert torch.bincount(fashion.test.y).tolist() == [1000] * 10
    assert abs(fashion.train.x.mean().item()) < 1e-4 and abs(fashion.train.x.std().item() - 1) < 1e-3


@needs_fashion
def test_fashion_mnist_limit():
    small = load("fashion-mnist", limit=1000, seed=3)
    assert len(small.train) == 1000 and len(small.val) == 112 and len(small.test) == 10000
    assert torch.bincount(small.train.y).tolist() == [100] * 10


def test_split_is_disjoint_stratified_and_reproducible(tmp_path):
    write_idx_set(tmp_path)
    a = load(f"mnist:{tmp_path}", val_fraction=0.2, seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (160, 40, 50)
    assert a.input_shape == (1, 4, 4) and a.num_classes == 10
    train, val = rows(a.train), rows(a.val)
    assert len(train) == 160 and len(val) == 40 and not train & val
    assert torch.bincount(a.val.y).tolist() == [4] * 10

    b = load(f"mnist:{tmp_path}", val_fraction=0.2, seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    c = load(f"mnist:{tmp_path}", val_fraction=0.2, seed=2)
    assert rows(c.val) != val and len(rows(c.val) | rows(c.train)) == 200


def test_normalisation_uses_training_statistics(tmp_path):
    _, test = write_idx_set(tmp_path)
    d = load(f"mnist:{tmp_path}")
    mean, std = TRAIN_LEVELS.mean(), TRAIN_LEVELS.std()
    assert torch.allclose(d.train.x.mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(d.train.x.std(correction=0), torch.tensor(1.0), atol=1e-5)
    expected = torch.from_numpy((test[:, None].astype(np.float64) - mean) / std).float()
    assert torch.allclose(d.test.x, expected, atol=1e-5)
    assert d.test.x.mean() > 2  # the brighter test set is not normalised with its own statistics


def test_val_fraction_zero_keeps_everything_for_training(tmp_path):
    write_idx_set(tmp_path)
    d = load(f"mnist:{tmp_path}", val_fraction=0)
    assert len(d.train) == 200 and len(d.val) == 0 and d.val.x.shape == (0, 1, 4, 4)


def test_limit_caps_train_and_val_in_proportion(tmp_path):
    write_idx_set(tmp_path)
    full = load(f"mnist:{tmp_path}", val_fraction=0.2)
    d = load(f"mnist:{tmp_path}", val_fraction=0.2, limit=50)
    assert len(d.train) == 50 and len(d.val) == 13 and len(d.test) == 50
    assert torch.bincount(d.train.y).tolist() == [5] * 10
    assert rows(d.train) <= rows(full.train) and rows(d.val) <= rows(full.val)
    assert len(load(f"mnist:{tmp_path}", val_fraction=0.2, limit=10_000).train) == 160
    with pytest.raises(DataError, match="limit"):
        load(f"mnist:{tmp_path}", limit=0)


def test_digits(tmp_path):
    d = load("digits", seed=0)
    assert d.name == "digits" and d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.test) == 359 and len(d.train) + len(d.val) == 1797 - 359
    assert "no official test split" in d.note
    # the statistics come from the training part alone, not from the whole training file
    assert abs(d.train.x.mean().item()) < 1e-5 and abs(d.train.x.std(correction=0).item() - 1) < 1e-5
    assert torch.equal(load("digits", seed=0).test.x, d.test.x)
    assert not torch.equal(load("digits", seed=1).test.y, d.test.y)


def test_missing_fashion_mnist_falls_back_to_digits(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_ROOT", tmp_path / "absent")
    d = load("fashion-mnist")
    assert d.name == "digits" and d.input_shape == (1, 8, 8)
    assert "Fashion-MNIST is not installed" in d.note
    assert "apt-get install dataset-fashion-mnist" in d.note


def test_explicit_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load(f"fashion-mnist:{tmp_path / 'absent'}")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        write_idx_set(tmp_path)
        (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
        load(f"fashion-mnist:{tmp_path}")


def test_truncated_idx_file_names_the_file(tmp_path):
    write_idx_set(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    whole = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(whole[:-5]))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: truncated") as error:
        load(f"mnist:{tmp_path}")
    assert "Traceback" not in error.value.render()


def test_damaged_gzip_and_bad_magic_name_the_file(tmp_path):
    write_idx_set(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:20])  # the gzip stream ends early
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: cannot read"):
        load(f"mnist:{tmp_path}")
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(100)))  # an image header on the labels
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: not an idx file"):
        load(f"mnist:{tmp_path}")


def test_plain_idx_files_are_read_too(tmp_path):
    train, _ = write_idx_set(tmp_path)
    for gz in tmp_path.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert len(load(f"mnist:{tmp_path}").test) == 50


def write_cifar(root: Path, per_batch: int = 12, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in np.arange(n) % 10], b"batch_label": name.encode()}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_from_python_batches(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    d = load(f"cifar10:{tmp_path}", val_fraction=0.1)  # the parent folder works as well
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert len(d.train) + len(d.val) == 60 and len(d.val) == 6 and len(d.test) == 10
    means = d.train.x.mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.zeros(3), atol=1e-5)


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return Path.touch, (marker,)

    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Hostile()}))
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR batch.*refusing"):
        load(f"cifar10:{tmp_path}")
    assert not marker.exists()


def test_a_pickle_of_shared_references_is_refused_before_it_expands(tmp_path):
    """531 KB of pickle can hold one list referenced a million times; np.asarray would
    make it gigabytes. The batch's types are checked first."""
    write_cifar(tmp_path)
    row = list(range(3072))
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps({b"data": [row] * 100_000, b"labels": [0] * 100_000}))
    start = time.process_time()
    with pytest.raises(DataError, match="data_batch_2: not a CIFAR batch.*must be an array"):
        load(f"cifar10:{tmp_path}")
    assert time.process_time() - start < 10


def test_an_idx_file_is_read_only_as_far_as_its_header_declares(tmp_path):
    """A small gzip of a huge stream (a zip bomb): reading stops one byte past what the
    header declares, and a header that declares too much is refused unread."""
    write_idx_set(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    header = b"\x00\x00\x08\x01" + (200).to_bytes(4, "big")
    with gzip.open(labels, "wb") as f:
        f.write(header + bytes(200))
        for _ in range(64):  # 1 GiB of zeros after the data, a 1 MB file
            f.write(bytes(2**24))
    start = time.process_time()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: longer than its header says"):
        load(f"mnist:{tmp_path}")
    assert time.process_time() - start < 10
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (2**32 - 1).to_bytes(4, "big")))
    with pytest.raises(DataError, match="declares 4,294,967,295 bytes; at most"):
        load(f"mnist:{tmp_path}")


def test_cifar_missing_batch(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch: no such file"):
        load(f"cifar10:{tmp_path}")


def write_pngs(folder: Path, count: int, colour: tuple[int, int, int], size=(10, 6)) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", size, tuple(min(255, c + 3 * i) for c in colour)).save(folder / f"{i}.png")


def test_image_folder_with_train_and_test(tmp_path):
    for part, count in (("train", 10), ("test", 3)):
        write_pngs(tmp_path / part / "cat", count, (200, 20, 20))
        write_pngs(tmp_path / part / "dog", count, (20, 20, 200))
    d = load(f"imagefolder:{tmp_path}", image_size=8, val_fraction=0.2)
    assert d.name == f"imagefolder:{tmp_path}" and d.num_classes == 2 and d.input_shape == (3, 8, 8)
    assert (len(d.train), len(d.val), len(d.test)) == (16, 4, 6)
    red_minus_blue = d.test.x[:, 0].mean(dim=(1, 2)) - d.test.x[:, 2].mean(dim=(1, 2))
    assert ((red_minus_blue > 0) == (d.test.y == 0)).all()  # class 0 = cat = red, in RGB order


def test_image_folder_single_tree_is_split_by_seed(tmp_path):
    write_pngs(tmp_path / "a", 10, (0, 0, 0))
    write_pngs(tmp_path / "b", 10, (250, 250, 250), size=(5, 5))
    d = load(f"imagefolder:{tmp_path}")
    assert d.input_shape == (3, 32, 32) and len(d.test) == 4
    assert torch.bincount(d.test.y).tolist() == [2, 2]
    assert "held out as the test set" in d.note


def test_image_folder_errors(tmp_path):
    write_pngs(tmp_path / "train" / "cat", 2, (0, 0, 0))
    write_pngs(tmp_path / "val" / "cow", 2, (0, 0, 0))
    with pytest.raises(DataError, match="class `cow` is not among the training classes"):
        load(f"imagefolder:{tmp_path}")
    broken = tmp_path / "train" / "cat" / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: cannot read image"):
        load(f"imagefolder:{tmp_path / 'train'}")
    with pytest.raises(DataError, match="no class folders"):
        load(f"imagefolder:{tmp_path / 'train' / 'cat'}")


def test_unknown_name_suggests_the_closest(tmp_path):
    with pytest.raises(DataError, match="unknown data set `fashion-mnst`") as error:
        load("fashion-mnst")
    assert "did you mean `fashion-mnist`?" in error.value.hint
    assert "cifar10" in error.value.hint and error.value.pos is None
    assert all(name in error.value.hint for name in data.DATASETS)


@pytest.mark.parametrize("spec, message", [
    ("cifar10", "needs the folder"),
    ("digits:/tmp", "takes no path"),
    ("mnist:", "needs the folder"),
])
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message):
        load(spec)


@pytest.mark.parametrize("kwargs, message", [
    ({"val_fraction": 1.0}, "validation fraction"),
    ({"val_fraction": -0.1}, "validation fraction"),
    ({"seed": -1}, "seed"),
    ({"image_size": 0}, "image size"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(DataError, match=message):
        load("digits", **kwargs)
