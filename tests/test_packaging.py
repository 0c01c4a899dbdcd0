"""A plain (non-editable) install carries every module, the grammars and the shipped
spaces, and the runtime is `nasdsl.runtime`, never a bare top-level `runtime`."""

import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib.util, pathlib, sys
import nasdsl, nasdsl.runtime
from nasdsl.language.check import shipped_spaces_dir
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
                    "-w", str(wheels), str(_source_copy(tmp_path / "source"))], check=True, capture_output=True)
    (wheel,) = wheels.glob("nasdsl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("nasdsl/grammars/nas.lark", "nasdsl/grammars/derivation.lark", "nasdsl/grammars/tokens.lark",
                   "nasdsl/spaces/nb201.nas", "nasdsl/spaces/tutorial.nas", "nasdsl/runtime/__init__.py"):
        assert needed in names
    assert not any(n.startswith(("runtime/", "grammars/", "spaces/")) for n in names)

    python = _fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([python, "-c", PROBE, str(ROOT)], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["15625", "25"]

    # every module the wheel carries imports (a package left out of it would fail here)
    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py"))
    assert modules == _source_modules()
    out = subprocess.run([python, "-c", "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)",
                          *modules], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _source_copy(where: Path) -> Path:
    """The files git would check out, copied: the wheel is built as a fresh clone would
    build it (no stale build/ folder, no file that is not in the repository)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True, text=True).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, where / name)
    return where


def _source_modules() -> list[str]:
    """Every module of the source tree, named as installed (runtime/ is nasdsl.runtime)."""
    found = []
    for folder, package in (("nasdsl", "nasdsl"), ("runtime", "nasdsl.runtime")):
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            found.append(".".join((package, *parts)).removesuffix(".__init__"))
    return sorted(found + ["nasdsl.grammars", "nasdsl.spaces"])


def _fresh_venv(where: Path, wheel: Path) -> str:
    """A new venv with only the wheel installed in it; the dependencies (torch, ...) are
    this environment's, reached through a path file (which adds them, but not this
    environment's editable install of nasdsl)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = str(where / "bin" / "python")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python
