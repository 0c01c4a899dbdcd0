"""Exporting a network: `nasdsl compile --onnx/--export`, whose ONNX runs in onnxruntime
and whose torch.export program loads back, and standalone Python that loads in a Python
that cannot import nasdsl, each giving the network's own logits; and failed exports as
clear errors that leave no file."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from support import SMALL, SPACES, look_trained
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
    """SE blocks, FactorizedReduce, sepconv's Sequential, zero ops and in-place
    activations: the classes nasdsl adds to torch's are in the file, written as source."""
    names = ["nb201", "mobilenetv3", "darts", "tutorial"]
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
    for used in ("class Zero(", "class SqueezeExcitation(", "class FactorizedReduce(", "nn.Sequential("):
        assert used in written
    site_packages = str(Path(torch.__file__).parent.parent)
    # -I -S: no environment, no user or site folders (so no editable install of nasdsl)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, str(tmp_path), site_packages, *names],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    differences = dict(line.split() for line in result.stdout.splitlines())
    assert sorted(differences) == sorted(names) and all(float(v) <= TOLERANCE for v in differences.values())


def test_without_the_onnx_extra_onnx_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    code, data = run(capsys, "compile", SPACES / "nb201.nas", *NB201, "--onnx", tmp_path / "m.onnx")
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
