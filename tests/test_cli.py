"""The `nasdsl` command: output, exit codes, and no traceback on bad input.

Most cases call `main(argv)` in-process; a few run the real entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nasdsl
from nasdsl.cli.commands import main

SPACES = Path(__file__).resolve().parents[1] / "spaces"
NB201 = str(SPACES / "nb201.nas")
TUTORIAL = str(SPACES / "tutorial.nas")

SYNTAX_ERROR = "space bad()\n\nnetwork = conv(out=8 bn\n"
UNKNOWN_PRIMITIVE = "space bad()\n\nnetwork = conv(out=8) fooo(3) bn\n"
LIBRARY = "library blocks\n\nblock(c) = conv(out=c) bn relu\n"


def run_json(capsys, *argv):
    """main(argv + --json): (exit code, the parsed JSON object)."""
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Bad and good space files in a temporary working directory, by short name."""
    monkeypatch.chdir(tmp_path)
    for name, text in {"syntax.nas": SYNTAX_ERROR, "prim.nas": UNKNOWN_PRIMITIVE, "lib.nas": LIBRARY}.items():
        (tmp_path / name).write_text(text)
    return tmp_path


# ---- check
def test_check_ok(capsys):
    assert main(["check", NB201, TUTORIAL]) == 0
    out = capsys.readouterr().out
    assert f"ok {NB201} (count 15625)" in out
    assert f"ok {TUTORIAL} (count {nasdsl.load(TUTORIAL).count})" in out


def test_check_reports_every_bad_file(files, capsys):
    assert main(["check", "syntax.nas", "prim.nas", "lib.nas", "missing.nas", NB201]) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert "syntax.nas:3:22: error: unexpected `bn`" in err
    assert "    network = conv(out=8 bn\n" + " " * 25 + "^" in err  # the line and a caret under `bn`
    assert "prim.nas:3:23: error: unknown rule or primitive `fooo`" in err
    assert "\n" + " " * 26 + "^" in err
    assert "missing.nas: error: cannot read" in err
    assert "ok lib.nas (library)" in captured.out
    assert f"ok {NB201} (count 15625)" in captured.out
    assert "Traceback" not in err


def test_check_json(files, capsys):
    code, data = run_json(capsys, "check", "syntax.nas", "lib.nas", NB201)
    assert code == 1
    bad, lib, nb = data["files"]
    assert bad["file"] == "syntax.nas" and bad["ok"] is False and bad["count"] is None
    assert bad["error"].startswith("syntax.nas:3:22: error:")
    assert lib == {"file": "lib.nas", "ok": True, "count": None, "error": None}
    assert nb == {"file": NB201, "ok": True, "count": 15625, "error": None}


# ---- count
def test_count(capsys):
    assert main(["count", NB201]) == 0
    assert capsys.readouterr().out == "nb201: 15625 (10^4.19)\n"
    code, data = run_json(capsys, "count", TUTORIAL)
    assert code == 0 and data == {"space": "tutorial", "count": nasdsl.load(TUTORIAL).count}


def test_count_huge_is_an_exact_json_integer(tmp_path, capsys):
    path = tmp_path / "huge.nas"
    path.write_text("space huge(n: int = 3)\n\nnetwork = conv(out={8, 16, 32, 64}, kernel={1, 3, 5, 7}) * n\n")
    code, data = run_json(capsys, "count", str(path), "--param", "n=40")
    assert code == 0 and data["count"] == 16 ** 40  # beyond a float's exact range


def test_param_changes_a_count(tmp_path, capsys):
    path = tmp_path / "rep.nas"
    path.write_text("space rep(n: int = 2)\n\nnetwork = conv(out=8, kernel={3, 5}) * n\n")
    assert run_json(capsys, "count", str(path))[1]["count"] == 4
    assert run_json(capsys, "count", str(path), "--param", "n=5")[1]["count"] == 32
    assert run_json(capsys, "show", str(path), "--param", "n=5")[1]["params"] == {"n": 5}


def test_unknown_param_is_bad_input_with_a_hint(capsys):
    assert main(["count", NB201, "--param", "num_class=8"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error: space `nb201` has no parameter `num_class`" in captured.err
    assert "hint: did you mean `num_classes`?" in captured.err


def test_badly_typed_param_is_bad_input(capsys):
    assert main(["count", NB201, "--param", "C=wide"]) == 1
    assert "parameter `C` is int; `wide` is not" in capsys.readouterr().err


# ---- sample
def test_sample_is_deterministic_per_seed(capsys):
    first = run_json(capsys, "sample", TUTORIAL, "-n", "5", "--seed", "7")
    again = run_json(capsys, "sample", TUTORIAL, "-n", "5", "--seed", "7")
    other = run_json(capsys, "sample", TUTORIAL, "-n", "5", "--seed", "8")
    assert first == again and first[0] == 0
    assert first[1] != other[1]
    space = nasdsl.load(TUTORIAL)
    assert first[1]["derivations"] == [d.text for d in space.samples(5, seed=7)]


def test_sample_human_is_one_line_each(capsys):
    assert main(["sample", TUTORIAL, "-n", "3", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    space = nasdsl.load(TUTORIAL)
    assert lines == [d.text for d in space.samples(3, seed=1)]  # long lines are not wrapped


def test_sample_per_choice(capsys):
    code, data = run_json(capsys, "sample", NB201, "-n", "4", "--seed", "3", "--method", "per-choice")
    space = nasdsl.load(NB201)
    assert code == 0
    assert data["derivations"] == [d.text for d in space.samples(4, seed=3, method="per-choice")]
    assert all(space.parse(text) in space for text in data["derivations"])


# ---- show
def test_show_json(capsys):
    code, data = run_json(capsys, "show", NB201)
    assert code == 0
    assert data["space"] == "nb201" and data["count"] == 15625
    assert data["params"] == {"C": 16, "N": 5, "num_classes": 10}
    assert data["presets"] == ["best_cifar10"]
    rules = {r["name"]: r for r in data["rules"]}
    assert rules["cell"]["shared"] is True and rules["cell"]["params"] == ["c"]
    assert rules["cell"]["counts"] == [{"args": [None], "count": 15625}]  # shared: parameters unbound
    assert rules["stage"]["counts"] == [{"args": [c], "count": 1} for c in (16, 32, 64)]
    assert Path(rules["op"]["file"]).resolve() == Path(NB201) and rules["op"]["line"] == 30
    assert rules["network"]["params"] == [] and rules["network"]["shared"] is False


def test_show_human(capsys):
    assert main(["show", TUTORIAL]) == 0
    out = capsys.readouterr().out
    assert "space tutorial(num_classes=10, in_channels=1, resolution=28)" in out
    assert "mbconv" in out and "(16, 24, 2) 8" in out and "presets: smallest" in out


def test_show_primitives(capsys):
    code, data = run_json(capsys, "show", "--primitives")
    conv = next(p for p in data["primitives"] if p["name"] == "conv")
    none = {"allowed": None, "low": None, "high": None}
    assert conv["args"][0] == {"name": "out", "type": "int", "required": True, "default": None, **none}
    assert {"name": "kernel", "type": "int", "required": False, "default": 3, **none} in conv["args"]
    dropout = next(p for p in data["primitives"] if p["name"] == "dropout")
    assert (dropout["args"][0]["low"], dropout["args"][0]["high"]) == (0, 1)
    assert main(["show", "--primitives"]) == 0
    assert "sepconv" in capsys.readouterr().out


# ---- mutate
@pytest.mark.parametrize("kind", ["choice", "subtree"])
def test_mutate_json(capsys, kind):
    code, data = run_json(capsys, "mutate", TUTORIAL, "--seed-sample", "2", "-n", "4", "--seed", "5",
                          "--kind", kind)
    space = nasdsl.load(TUTORIAL)
    assert code == 0
    assert data["parent"] == space.sample(seed=2).text
    assert len(data["children"]) == len(data["distances"]) == 4
    parent = space.parse(data["parent"])
    for text, dist in zip(data["children"], data["distances"]):
        child = space.parse(text)  # valid in the space
        assert dist == nasdsl.distance(parent, child) >= 1
    assert run_json(capsys, "mutate", TUTORIAL, "--seed-sample", "2", "-n", "4", "--seed", "5",
                    "--kind", kind)[1] == data


def test_mutate_from_preset_and_text(capsys):
    space = nasdsl.load(NB201)
    best = space.preset("best_cifar10").text
    from_preset = run_json(capsys, "mutate", NB201, "--preset", "best_cifar10", "-n", "2")[1]
    from_text = run_json(capsys, "mutate", NB201, "--derivation", best, "-n", "2")[1]
    assert from_preset == from_text and from_preset["parent"] == best


def test_mutate_bad_derivation_names_the_path(capsys):
    assert main(["mutate", NB201, "--derivation", "(cell=(x1=(op=none)))"]) == 1
    err = capsys.readouterr().err
    assert "error: `cell.x2`" in err and "^" in err


# ---- usage errors and the entry point
@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["count"],
    ["count", NB201, "--param", "C"],  # no `=`
    ["sample", NB201, "-n", "0"],
    ["sample", NB201, "--method", "greedy"],
    ["show"],
    ["show", NB201, "--primitives"],
    ["mutate", NB201],  # no parent
    ["mutate", NB201, "--preset", "best_cifar10", "--seed-sample", "1"],
    ["mutate", NB201, "--seed-sample", "1", "--kind", "swap"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().out == ""


def test_debug_shows_the_traceback(capsys):
    assert main(["--debug", "count", NB201, "--param", "X=1"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["count", NB201, "--param", "X=1", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def _nasdsl(*argv, timeout=60, **kwargs):
    return subprocess.run([sys.executable, "-m", "nasdsl", *argv], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def test_entry_point_json():
    result = _nasdsl("count", NB201, "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == {"space": "nb201", "count": 15625}


def test_entry_point_bad_input_has_no_traceback(files):
    result = _nasdsl("check", "prim.nas", "missing.nas", cwd=files)
    assert result.returncode == 1 and result.stdout == ""
    assert "prim.nas:3:23: error:" in result.stderr and "Traceback" not in result.stderr
    result = _nasdsl("sample", NB201, "--param", "nope=1")
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_entry_point_closed_pipe_is_quiet():
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: the first write fails
    with os.fdopen(writer, "w") as out:
        result = subprocess.run([sys.executable, "-m", "nasdsl", "sample", NB201, "-n", "50"],
                                stdout=out, stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 141 and result.stderr == ""


def test_internal_error_is_one_line_and_exit_3(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("nasdsl.cli.common.load", broken)
    assert main(["count", NB201]) == 3
    err = capsys.readouterr().err
    assert err == "nasdsl: internal error: RuntimeError: boom (rerun with --debug)\n"


# ---- restrict ---------------------------------------------------------------------
def test_restrict_writes_a_space_that_counts_what_it_keeps(tmp_path, capsys):
    out = tmp_path / "sub.nas"
    code, data = run_json(capsys, "restrict", NB201, "--keep", "cell.x1.op=none,skip_connect",
                          "--keep", "cell.x3.op3=nor_conv_3x3", "-o", str(out))
    assert code == 0 and data["count"] == 15625 * 2 // 25 and data["original_count"] == 15625
    assert nasdsl.load(out).count == data["count"]


def test_restrict_reads_numbers_and_reports_bad_values(capsys):
    code, data = run_json(capsys, "restrict", TUTORIAL, "--keep", "stage1.rest=0")
    assert code == 0 and nasdsl.loads(data["text"]).count == data["count"] < data["original_count"]
    assert main(["restrict", TUTORIAL, "--keep", "stage1.rest=7"]) == 1
    assert "stage1.rest" in capsys.readouterr().err
    assert main(["restrict", TUTORIAL, "--keep", "stage1.rest"]) == 2


@pytest.mark.parametrize("argv, code, where", [
    (["count", "bad.nas", "--json"], 1, ("bad.nas", 2, 11)),
    (["sample", "missing.nas", "--json"], 1, (None, None, None)),
    (["trials", "--store", "missing.db", "--json"], 1, (None, None, None)),
])
def test_a_failing_command_prints_its_error_as_json(tmp_path, monkeypatch, capsys, argv, code, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.nas").write_text("space t\nnetwork = ) relu\n")
    assert main(argv) == code
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["message"] and (error["file"], error["line"], error["column"]) == where


def test_sample_streams_its_lines_and_bounds_what_one_json_object_holds(capsys):
    process = subprocess.Popen([sys.executable, "-m", "nasdsl", "sample", NB201, "-n", str(10**12)],
                               stdout=subprocess.PIPE, text=True)
    try:
        first = [process.stdout.readline() for _ in range(3)]  # arrive while the rest is still being drawn
    finally:
        process.kill()
        process.wait()
    assert [line.strip() for line in first] == [d.text for d in nasdsl.load(NB201).samples(3, seed=0)]
    assert main(["sample", NB201, "-n", str(10**12), "--json"]) == 2
    assert "at most 100000 derivations" in json.loads(capsys.readouterr().out)["error"]["message"]


def test_the_primitive_list_in_docs_is_the_registry():
    """docs/primitives.md is written by `nasdsl show --primitives --markdown`; it cannot drift."""
    result = _nasdsl("show", "--primitives", "--markdown")
    assert result.returncode == 0
    assert (Path(__file__).resolve().parent.parent / "docs" / "primitives.md").read_text() == result.stdout


PLUGIN = """
import nasdsl
from torch import nn
nasdsl.register(nasdsl.Primitive("plugin_double", doc="twice the input", shape=lambda a, s: s[0],
                                 module=lambda a, s: nn.Identity(), channels=nasdsl.Channels("pass")))
"""


def test_a_plugin_registers_primitives_for_one_command(tmp_path):
    plugin = tmp_path / "myprims.py"
    plugin.write_text(PLUGIN)
    space = tmp_path / "p.nas"
    space.write_text("space p\nnetwork = conv(out=8) plugin_double gap flatten linear(10)\n")
    assert "unknown rule or primitive `plugin_double`" in _nasdsl("count", str(space)).stderr
    for argv in (["count", str(space), "--plugin", str(plugin)], ["--plugin", str(plugin), "count", str(space)]):
        result = _nasdsl(*argv, "--json")
        assert result.returncode == 0 and json.loads(result.stdout)["count"] == 1, result.stderr
    (tmp_path / "labprims.py").write_text(PLUGIN)  # by module name, from the working folder
    assert _nasdsl("compile", str(space), "--seed", "0", "--plugin", "labprims", cwd=tmp_path).returncode == 0
    bad = _nasdsl("count", str(space), "--plugin", "no_such_module_here")
    assert bad.returncode == 1 and "--plugin no_such_module_here: cannot import it" in bad.stderr


def test_a_searchs_workers_import_its_plugins(tmp_path):
    plugin = tmp_path / "myprims.py"
    plugin.write_text(PLUGIN)
    space = tmp_path / "p.nas"
    space.write_text("space p(in_channels: int = 1, num_classes: int = 10)\n"
                     "network = conv(out=8) plugin_double gap flatten linear(num_classes)\n")
    result = _nasdsl("search", str(space), "--plugin", str(plugin), "--dataset", "digits", "--epochs", "1",
                     "--limit", "200", "--trials", "1", "--algorithm", "random", "--store", str(tmp_path / "s.db"),
                     "--json", timeout=240)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["finished"] == 1
