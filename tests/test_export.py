"""Exporting what a search finds: `nasdsl compile --onnx/--export` and `nasdsl export`,
whose ONNX runs in onnxruntime, whose torch.export program loads back, and whose
standalone Python loads in a Python that cannot import nasdsl, each giving the
network's own logits; and failed exports as clear errors that leave no file."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from nasdsl.runtime.search import Search, SearchConfig, stored_space, trained_module
from nasdsl.runtime.store import Store
from nasdsl.runtime.train import TrainConfig
from support import SMALL, SPACES, look_trained
from test_runtime import Inline
from torch import nn

import nasdsl
from nasdsl.cli.commands import main
from nasdsl.compiler.export import write_module
from nasdsl.language import primitives as registry

NB201 = ["--param", "C=4", "--param", "N=1"]
TOLERANCE = 1e-5


def run(capsys, *argv) -> tuple[int, dict]:
    """(exit code, the JSON object printed) of `nasdsl ARGV --json`."""
    code = main([str(a) for a in argv] + ["--json"])
    return code, json.loads(capsys.readouterr().out)


def onnx_logits(path, x) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def close(a, b) -> bool:
    return np.abs(np.asarray(a) - np.asarray(b)).max() <= TOLERANCE


# ---- nasdsl compile --------------------------------------------------------------------
def test_compile_writes_onnx_and_a_program_that_give_the_modules_logits(tmp_path, capsys):
    code, data = run(capsys, "compile", SPACES / "nb201.nas", *NB201, "--seed", 3,
                     "--onnx", tmp_path / "m.onnx", "--export", tmp_path / "m.pt2")
    assert code == 0 and data["space"] == "nb201"
    space = nasdsl.load(SPACES / "nb201.nas").bind(C=4, N=1)
    module = space.compile(space.sample(seed=3)).eval()  # the same seed: the same weights
    x = torch.randn(3, 3, 32, 32)  # exported with a batch of 2: the batch size is free
    with torch.no_grad():
        expected = module(x)
    assert close(onnx_logits(tmp_path / "m.onnx", x), expected)
    assert close(torch.export.load(tmp_path / "m.pt2").module()(x).detach(), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt2"]  # no partial files left


# ---- standalone Python ---------------------------------------------------------------
PROBE = """
import sys
sys.path[:0] = sys.argv[1:3]  # the exported files' folder, torch's site-packages
try:
    import nasdsl
except ImportError:
    pass
else:
    raise SystemExit("nasdsl is importable here")
import importlib, torch
for name in sys.argv[3:]:
    network = importlib.import_module(name).load()
    x, expected = torch.load(f"{sys.argv[1]}/{name}.check.pt")
    with torch.no_grad():
        print(name, float((network(x) - expected).abs().max()))
"""


def test_standalone_python_needs_only_torch_and_gives_the_modules_logits(tmp_path):
    """SE blocks, FactorizedReduce, sepconv's Sequential, zero ops, in-place
    activations, attention and tokens: the classes nasdsl adds to torch's are in the
    file, written as source."""
    names = ["nb201", "mobilenetv3", "darts", "tutorial", "vit", "unet"]
    for name in names:
        space = nasdsl.load(SPACES / f"{name}.nas").bind(**SMALL.get(name, {}))
        d = space.sample(seed=2)  # nb201's has a `none` edge: a zero op
        graph = space.graph(d)
        module = look_trained(space.compile(d))
        write_module(module, graph.graph["input_shape"],
                     {"py": tmp_path / f"{name}.py", "state_dict": tmp_path / f"{name}.state_dict.pt"})
        x = torch.randn(2, *graph.graph["input_shape"])
        with torch.no_grad():
            torch.save((x, module(x)), tmp_path / f"{name}.check.pt")
        assert "nasdsl" not in "".join(line for line in (tmp_path / f"{name}.py").read_text().splitlines()
                                       if line.startswith(("import", "from")))
    written = "".join((tmp_path / f"{name}.py").read_text() for name in names)
    for used in ("class Zero(", "class SqueezeExcitation(", "class FactorizedReduce(", "nn.Sequential(",
                 "class Attention(", "class PatchEmbed(", "nn.ConvTranspose2d("):
        assert used in written
    site_packages = str(Path(torch.__file__).parent.parent)
    # -I -S: no environment, no user or site folders (so no editable install of nasdsl)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, str(tmp_path), site_packages, *names],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    differences = dict(line.split() for line in result.stdout.splitlines())
    assert sorted(differences) == sorted(names) and all(float(v) <= TOLERANCE for v in differences.values())


# ---- nasdsl export ---------------------------------------------------------------------
TINY = """space tiny(num_classes: int = 10, in_channels: int = 1, resolution: int = 8)
network = conv(out={4, 8}, kernel=3) bn act(kind={relu, hswish}) conv(out=8, kernel=1) bn relu
          gap flatten linear(num_classes)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished search of two trained trials on digits, and a third trial still queued."""
    folder = tmp_path_factory.mktemp("search")
    (folder / "tiny.nas").write_text(TINY)
    config = SearchConfig(space=str(folder / "tiny.nas"), dataset="digits", algorithm="random", trials=2,
                          train=TrainConfig(epochs=1), limit=200, test_top=1)
    search = Search.open(config, folder / "s.db")
    search.run(Inline)
    search.store.add("(queued)", "0", 0)
    search.store.close()
    return folder / "s.db"


def test_export_writes_a_trials_trained_network_in_each_form(store, tmp_path, capsys):
    code, data = run(capsys, "export", "--store", store, "--trial", 2, "--out", tmp_path / "out")
    assert code == 0 and data["trial"] == 2 and data["input_shape"] == [1, 8, 8]
    files = {form: Path(path) for form, path in data["files"].items()}
    assert {form: path.name for form, path in files.items()} == {
        "onnx": "trial_2.onnx", "pt2": "trial_2.pt2", "py": "trial_2.py", "state_dict": "trial_2.state_dict.pt"}
    with Store.open(store) as opened:
        space, shape = stored_space(opened)
        trial = opened.trial(2)
        module = trained_module(opened, trial, space, shape).eval()
    x = torch.randn(5, *shape)
    with torch.no_grad():
        expected = module(x)
    assert close(onnx_logits(files["onnx"], x), expected)
    assert close(torch.export.load(files["pt2"]).module()(x).detach(), expected)
    spec = importlib.util.spec_from_file_location("trial_2", files["py"])
    exported = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exported)
    with torch.no_grad():
        assert close(exported.load()(x), expected)  # the trained weights, not fresh ones
    assert trial.derivation in files["py"].read_text()


def test_export_writes_only_the_forms_asked_for_and_finds_a_moved_space(store, tmp_path, capsys):
    moved = tmp_path / "moved.nas"
    moved.write_text(TINY)
    code, data = run(capsys, "export", "--store", store, "--trial", 1, "--out", tmp_path, "--formats", "py",
                     "--space", moved)
    assert code == 0 and sorted(data["files"]) == ["py", "state_dict"]
    changed = tmp_path / "changed.nas"
    changed.write_text(TINY.replace("{4, 8}", "{4, 16}"))
    code, data = run(capsys, "export", "--store", store, "--trial", 1, "--out", tmp_path, "--space", changed)
    assert code == 1 and "is not the space file this search read" in data["error"]["message"]


def test_export_of_a_trial_without_weights_is_a_clear_error(store, tmp_path, capsys):
    for trial, message in ((3, "trial 3 is queued: it has no trained weights"), (9, "no trial 9")):
        code, data = run(capsys, "export", "--store", store, "--trial", trial, "--out", tmp_path / "out")
        assert code == 1 and message in data["error"]["message"]
        assert "Traceback" not in capsys.readouterr().err
    lost = tmp_path / "lost"
    shutil.copytree(store.parent, lost)
    (lost / "s.db.ckpt" / "trial-1.pt").unlink()
    code, data = run(capsys, "export", "--store", lost / "s.db", "--trial", 1, "--out", tmp_path / "out")
    assert code == 1 and "cannot load trial 1's checkpoint" in data["error"]["message"]
    assert not (tmp_path / "out").exists()


def test_without_the_onnx_extra_onnx_is_a_clear_error(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    for argv in (["export", "--store", store, "--trial", 1, "--out", tmp_path],
                 ["compile", SPACES / "nb201.nas", *NB201, "--onnx", tmp_path / "m.onnx"]):
        code, data = run(capsys, *argv)
        assert code == 1 and "needs the `onnx` extra (onnxscript is not installed)" in data["error"]["message"]
        assert data["error"]["hint"] == "pip install 'nasdsl[onnx]'"
    assert list(tmp_path.iterdir()) == []


# ---- what cannot be exported -------------------------------------------------------------
class Bessel(nn.Module):
    """An op that torch.export takes and ONNX has no function for."""

    def forward(self, x):
        return torch.special.bessel_j0(x)


class Hidden(nn.Module):
    """A module that keeps no attribute for its constructor's argument."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1)


@pytest.fixture
def plugins(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    nasdsl.register(nasdsl.Primitive("bessel", module=lambda a, s: Bessel(), channels=nasdsl.Channels("pass")))
    nasdsl.register(nasdsl.Primitive("hidden", params=lambda a, s: s[0][0], module=lambda a, s: Hidden(s[0][0]),
                                     channels=nasdsl.Channels("pass")))


def test_a_primitive_onnx_cannot_take_is_a_clear_error_and_writes_nothing(plugins, tmp_path, capsys):
    space = tmp_path / "b.nas"
    space.write_text("space b\nnetwork = conv(out=4) bessel gap flatten linear(3)\n")
    code, data = run(capsys, "compile", space, "--input-shape", "3,8,8",
                     "--export", tmp_path / "m.pt2", "--onnx", tmp_path / "m.onnx")
    message = data["error"]["message"]
    assert code == 1 and message.startswith("cannot export this network as ONNX: ") and "bessel_j0" in message
    assert "\x1b" not in message and list(tmp_path.iterdir()) == [space]  # not even the program, which could be
    assert "Traceback" not in capsys.readouterr().err
    # the plugin's class is written as source: its Python needs only torch
    module = nasdsl.loads(space.read_text()).compile(nasdsl.loads(space.read_text()).sample(), (3, 8, 8))
    write_module(module, (3, 8, 8), {"py": tmp_path / "b.py", "state_dict": tmp_path / "b.state_dict.pt"})
    assert "class Bessel(nn.Module):" in (tmp_path / "b.py").read_text()


def test_a_module_that_hides_its_constructor_arguments_is_a_clear_error(plugins, tmp_path, capsys):
    space = tmp_path / "h.nas"
    space.write_text("space h\nnetwork = conv(out=4) hidden gap flatten linear(3)\n")
    module = nasdsl.loads(space.read_text()).compile(nasdsl.loads(space.read_text()).sample(), (3, 8, 8))
    with pytest.raises(nasdsl.NasError, match="cannot write `Hidden` as Python: it keeps no attribute `channels`"):
        write_module(module, (3, 8, 8), {"py": tmp_path / "h.py", "state_dict": tmp_path / "h.state_dict.pt"})
    assert list(tmp_path.iterdir()) == [space]
