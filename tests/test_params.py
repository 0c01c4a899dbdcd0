"""Bad space parameters are named as such.

A `require` of `network` that reads only space parameters is a condition on the
parameters: it is checked when the space is bound (`load`, `loads`, `bind`, the
CLI's `--param`, a preset's parameters), and a failure says which parameters,
with their values, and points at the `require`. Each row below is one shipped
space, one bad value, and the `require` it breaks.
"""

import subprocess
import sys
from pathlib import Path

import pytest

import nasdsl
from nasdsl import NasError
from nasdsl.cli.commands import main

SPACES = Path(__file__).resolve().parent.parent / "spaces"
LOADED = {}  # file name -> the space with its defaults, loaded once


def shipped(name):
    if name not in LOADED:
        LOADED[name] = nasdsl.load(SPACES / name)
    return LOADED[name]


def row(space, param, value, shown, require):
    return pytest.param(space, param, value, shown, require, id=f"{space[:-4]}-{param}={value}")


ROWS = [
    row("nb201.nas", "C", 0, "0", "C >= 1"),
    row("nb201.nas", "N", 0, "0", "N >= 1"),
    row("nb201.nas", "num_classes", 0, "0", "num_classes >= 1"),
    row("tutorial.nas", "num_classes", 0, "0", "num_classes >= 1"),
    row("tutorial.nas", "in_channels", 0, "0", "in_channels >= 1"),
    row("mobilenetv3.nas", "variant", "medium", '"medium"', 'variant == "large" or variant == "small"'),
    row("mobilenetv3.nas", "width", 0.0, "0.0", "width > 0"),
    row("mobilenetv3.nas", "num_classes", 0, "0", "num_classes >= 1"),
    row("mobilenetv3.nas", "in_channels", -3, "-3", "in_channels >= 1"),
    row("mobilenetv3.nas", "resolution", 0, "0", "resolution >= 1"),
    row("mobilenetv3.nas", "dropout", 1.5, "1.5", "dropout >= 0 and dropout <= 1"),
    row("resnet.nas", "unit", "foo", '"foo"', 'unit == "basic" or unit == "bottleneck"'),
    row("resnet.nas", "num_classes", 0, "0", "num_classes >= 1"),
    row("resnet.nas", "in_channels", 0, "0", "in_channels >= 1"),
    row("resnet.nas", "resolution", 0, "0", "resolution >= 1"),
    row("darts.nas", "C", 0, "0", "C >= 1"),
    row("darts.nas", "layers", 2, "2", "layers >= 3"),
    row("darts.nas", "num_classes", 0, "0", "num_classes >= 1"),
    row("darts.nas", "in_channels", 0, "0", "in_channels >= 1"),
    row("darts.nas", "resolution", 30, "30", "resolution >= 4 and resolution % 4 == 0"),
    row("darts.nas", "resolution", 0, "0", "resolution >= 4 and resolution % 4 == 0"),
]


def where(space, require):
    """`LINE:COL` of the `require` line's expression in the shipped file."""
    lines = (SPACES / space).read_text().split("\n")
    for number, line in enumerate(lines, 1):
        if line.strip() == f"require {require}":
            return f"{number}:{line.index(require) + 1}", line
    raise AssertionError(f"no `require {require}` in {space}")


def expected_message(param, shown, require):
    return f"parameter `{param}` = {shown} is not allowed: `require {require}` fails"


@pytest.mark.parametrize("space, param, value, shown, require", ROWS)
def test_cli_names_the_bad_parameter(capsys, monkeypatch, space, param, value, shown, require):
    monkeypatch.chdir(SPACES.parent)  # errors name files relative to the working directory
    path = f"spaces/{space}"
    assert main(["count", path, "--param", f"{param}={value}"]) == 1
    err = capsys.readouterr().err.splitlines()
    position, line = where(space, require)
    column = int(position.split(":")[1])
    assert err[0] == f"{path}:{position}: error: {expected_message(param, shown, require)}"
    assert err[1:3] == ["    " + line, "    " + " " * (column - 1) + "^"]
    assert err[3].startswith("hint: it holds for") and f"--param {param}=VALUE" in err[3]


@pytest.mark.parametrize("space, param, value, shown, require", ROWS)
def test_api_names_the_bad_parameter(space, param, value, shown, require):
    position = where(space, require)[0]
    for make in (lambda: nasdsl.load(SPACES / space, params={param: value}),
                 lambda: shipped(space).bind(**{param: value})):
        with pytest.raises(NasError) as info:
            make()
        assert info.value.message == expected_message(param, shown, require)
        assert f"{info.value.pos}".endswith(f"{space}:{position}")


def test_hint_lists_values_that_pass():
    with pytest.raises(NasError) as info:
        shipped("resnet.nas").bind(unit="foo")
    assert info.value.hint == ('it holds for `unit` = "basic" (the default), "bottleneck"; '
                               "set it with --param unit=VALUE")
    with pytest.raises(NasError) as info:
        shipped("darts.nas").bind(resolution=30)
    assert info.value.hint.startswith("it holds for `resolution` = 32 (the default), 4;")


def test_the_real_command_exits_1_without_a_traceback():
    done = subprocess.run([sys.executable, "-m", "nasdsl", "count", str(SPACES / "resnet.nas"),
                           "--param", "num_classes=0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert "error: parameter `num_classes` = 0 is not allowed" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("space, params, preset", [
    ("resnet.nas", {"resolution": 1}, "resnet18"),
    ("mobilenetv3.nas", {"resolution": 1, "width": 0.1}, "mobilenet_v3_small"),
    ("darts.nas", {"resolution": 4, "layers": 3, "C": 1}, "darts_v1"),
])
def test_the_smallest_allowed_values_compile(space, params, preset):
    """The requires' bounds are the real limits: at them the networks still build."""
    s = shipped(space).bind(**params).preset_space(preset)
    graph = s.graph(s.preset(preset))
    assert graph.graph["input_shape"][1] == params["resolution"]


def test_darts_resolution_below_a_multiple_of_4_breaks_the_graph():
    """Why the darts require asks for a multiple of 4: a FactorizedReduce needs even sides."""
    s = shipped("darts.nas")
    with pytest.raises(NasError, match="fact_reduce"):
        s.graph(s.preset("darts_v1"), (3, 30, 30))


# ---- the rule itself, on small files
H = "space t(a: int = 2, b: int = 3)\n"


def test_several_parameters_are_all_named():
    text = H + "network = linear(e)\n    where e = a * b\n    require e <= 10\n"
    with pytest.raises(NasError) as info:
        nasdsl.loads(text, params={"a": 4})
    err = info.value
    assert err.message == "parameters `a` = 4, `b` = 3 are not allowed: `require e <= 10` fails"
    assert (err.pos.line, err.pos.column) == (4, 13)
    assert err.hint == "it holds for the defaults (a=2, b=3); set them with --param a=VALUE --param b=VALUE"


def test_defaults_that_fail_point_at_the_header():
    with pytest.raises(NasError) as info:
        nasdsl.loads("space t(n: int = 0)\nnetwork = linear(8)\n    require n >= 1\n")
    assert "parameter `n` = 0 is not allowed" in info.value.message
    assert "the file's defaults fail it" in info.value.hint


def test_a_preset_with_bad_parameters_is_named():
    text = H + "network = linear(a)\n    require a <= 5\npreset big(a=9) = ()\n"
    space = nasdsl.loads(text)
    with pytest.raises(NasError) as info:
        space.check()
    err = info.value
    assert err.message == "preset `big`: parameter `a` = 9 is not allowed: `require a <= 5` fails"
    assert (err.pos.line, err.hint) == (4, "see <string>:3:13")


def test_a_require_on_choices_still_filters():
    """A require that reads a choice is no parameter check: it removes derivations."""
    text = H + "network = conv(out=8, kernel=k)\n    where k = {1, 3, 5}\n    require k >= a\n"
    assert nasdsl.loads(text, params={"a": 3}).count == 2
    with pytest.raises(NasError, match="is empty"):
        _ = nasdsl.loads(text, params={"a": 7}).count


def test_a_parameter_require_outside_network_still_filters():
    """Another rule may be reached only under an alternative: its requires stay filters."""
    text = H + "network = relu | deep\ndeep = relu relu\n    require a > 2\n"
    assert nasdsl.loads(text).count == 1
    assert nasdsl.loads(text, params={"a": 3}).count == 2


def test_a_require_that_is_not_true_or_false():
    with pytest.raises(NasError, match="`require` must be true or false, got `2`"):
        nasdsl.loads(H + "network = linear(8)\n    require a\n")
