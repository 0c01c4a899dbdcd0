"""A plain (non-editable) install carries the grammars and the shipped spaces, and
the runtime is `nasdsl.runtime`, never a bare top-level `runtime`."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib.util, pathlib, sys
import nasdsl, nasdsl.runtime
from nasdsl.check import shipped_spaces_dir
assert not nasdsl.__file__.startswith(sys.argv[1]), nasdsl.__file__   # not the source tree
assert importlib.util.find_spec("runtime") is None
print(nasdsl.load(shipped_spaces_dir() / "nb201.nas").count)
main = pathlib.Path("main.nas")
main.write_text('space m\\nfrom "nb201.nas" import op\\nnetwork = op(8) op(8)\\n')
print(nasdsl.load(main).count)
"""


def test_a_wheel_carries_grammars_and_spaces(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheels.glob("nasdsl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("nasdsl/grammars/nas.lark", "nasdsl/grammars/derivation.lark", "nasdsl/grammars/tokens.lark",
                   "nasdsl/spaces/nb201.nas", "nasdsl/spaces/tutorial.nas", "nasdsl/runtime/__init__.py"):
        assert needed in names
    assert not any(n.startswith(("runtime/", "grammars/", "spaces/")) for n in names)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    # the installed copy comes first on the path; dependencies still come from this environment
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], cwd=work, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["15625", "25"]
