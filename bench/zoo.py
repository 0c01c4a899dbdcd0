"""Tracing, channel groups and pruning on torchvision's classification models and 60
timm models (issue 14), side by side with torch-pruning's DepGraph in the same run.

Per model (random weights, eval mode, batch of 2 at a small input: 64x64, 96x96 for
inception_v3, the model's own size where it fixes one): whether `trace` succeeds; its
parameters against `model.parameters()` and its MACs against torch's
`FlopCounterMode` / 2 (attention on the math kernel: `nasdsl.compiler.flops`); channel groups and how many are prunable, against
torch-pruning's groups (Conv2d and Linear roots, with and without the classifier);
whether a random pruning (half the groups cut to every other channel) computes what
the model computes with those channels zeroed (`prune` against `zero_removed`); and
the time of each step. vit_h_14 and regnet_y_128gf are left out for size. A timm
model is named `timm:NAME`.

    .venv/bin/python bench/zoo.py [--models resnet18,timm:mixnet_s,...] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import warnings
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
import torchvision

from nasdsl.compiler.flops import flop_counter
from nasdsl.compiler.groups import channel_groups, prune, zero_removed
from nasdsl.compiler.trace import trace
from nasdsl.language.errors import NasError

ROOT = Path(__file__).resolve().parent.parent
LEFT_OUT = ("vit_h_14", "regnet_y_128gf")
SIZES = {"inception_v3": 96, **{n: 224 for n in ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "maxvit_t")}}
AUX_HEADS = ("googlenet", "inception_v3")  # their auxiliary classifiers do not run in eval: by design
TIMM = tuple(f"timm:{n}" for n in """
    resnet18 resnet26d seresnext26d_32x4d resnetv2_50 ecaresnet26t efficientnet_b0 efficientnet_lite0
    tf_efficientnet_b0 efficientnetv2_rw_t mixnet_s mixnet_m ghostnet_100 ghostnetv2_100 convnext_atto
    regnetx_002 regnety_002 densenet121 dla34 dla46_c dpn68 hrnet_w18_small inception_v3 xception41
    res2net50_14w_8s res2net50_26w_4s resnest14d skresnet18 rexnet_100 selecsls42b tinynet_a tinynet_e
    vit_tiny_patch16_224 deit_tiny_patch16_224 swin_tiny_patch4_window7_224 mobilevit_xxs levit_128s
    cspresnet50 cspdarknet53 fbnetc_100 mnasnet_100 gernet_s repvgg_a0 eca_nfnet_l0 nf_resnet50
    coat_lite_tiny pit_ti_224 efficientvit_b0 tiny_vit_5m_224 vgg11 mobilenetv3_small_100
    mobilenetv3_large_100 lcnet_050 hardcorenas_a spnasnet_100 ese_vovnet19b_dw mixer_s16_224
    resmlp_12_224 poolformer_s12 edgenext_xx_small botnet26t_256""".split())


def models() -> list[str]:
    """torchvision's classification models (but LEFT_OUT), then TIMM where timm is installed."""
    names = [n for n in torchvision.models.list_models(module=torchvision.models) if n not in LEFT_OUT]
    try:
        import timm  # noqa: F401
    except ImportError:
        return names
    return names + list(TIMM)


def build(name: str, size: int = 64) -> tuple[torch.nn.Module, int]:
    """The model (random weights, eval mode) and the input size it is checked at: `size`
    (SIZES for torchvision's exceptions), or a timm model's own size where it fixes one
    (`size` fails to run)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not name.startswith("timm:"):
            return getattr(torchvision.models, name)(weights=None).eval(), SIZES.get(name, size)
        import timm

        model = timm.create_model(name.removeprefix("timm:"), pretrained=False).eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
        return model, size
    except Exception:
        return model, model.pretrained_cfg["input_size"][-1]


def check(name: str, seed: int = 0, torch_pruning: bool = True, size: int = 64) -> dict:
    """Every check on one model (at input `size`, see `build`); a failing step is
    recorded, not raised."""
    model, size = build(name, size)
    # no gradients: torch's module tracker (under FlopCounterMode) fails on a parameter passed
    # to a submodule as its input (timm's pit: "Expected gradient function to be set")
    model.requires_grad_(False)
    torch.manual_seed(seed)
    x = torch.randn(2, 3, size, size)
    row: dict = {"model": name, "input": size}
    start = time.perf_counter()
    try:
        graph = trace(model, x[:1])
    except NasError as err:
        row.update(traced=False, error=str(err).splitlines()[0])
        return row
    row["trace_s"] = time.perf_counter() - start
    row["traced"] = True
    row["params_equal"] = graph.graph["params"] == sum(p.numel() for p in model.parameters())
    with torch.no_grad(), flop_counter() as counter:
        model(x[:1])
    row["macs_equal"] = graph.graph["macs"] == counter.get_total_flops() // 2
    start = time.perf_counter()
    groups = channel_groups(graph)
    row["groups_s"] = time.perf_counter() - start
    row["groups"], row["prunable"] = len(groups), sum(g.prunable for g in groups)
    rng = random.Random(seed)
    keep = {g.name: list(range(0, g.channels, 2)) if rng.random() < 0.5 else list(range(g.channels))
            for g in groups if g.prunable and g.channels > 1}
    try:
        with torch.no_grad():
            small, reference = prune(graph, model, keep).eval()(x), zero_removed(graph, model, keep).eval()(x)
        scale = reference.abs().max().item() or 1.0
        row["prune_max_error"] = (small - reference).abs().max().item() / scale
        row["prune_equal"] = row["prune_max_error"] < 1e-4
    except Exception as err:  # a crash here is a defect to record
        row.update(prune_equal=False, prune_error=f"{type(err).__name__}: {str(err).splitlines()[0]}")
    if torch_pruning:
        row.update(_in_a_process(name, size))
    return row


_WORKER = None  # torch-pruning's process, reused from model to model until it fails


def _in_a_process(name: str, size: int, timeout: float = 120) -> dict:
    """torch-pruning's count in a process of its own, its memory capped: on some models
    (swin, maxvit) it grows past 16 GB, which must not end the benchmark. The process
    serves model after model (starting one costs seconds) and is replaced when it dies
    or hangs; a model that runs out of memory in it is tried once more in a new one (a
    process that served many models holds more of its capped address space)."""
    answer = _in_the_worker(name, size, timeout)
    if "alloc" in answer.get("tp_error", "") or answer.get("tp_error", "").startswith("MemoryError"):
        _retire()
        answer = _in_the_worker(name, size, timeout)
    return answer


def _retire() -> None:
    import multiprocessing

    global _WORKER
    for process in multiprocessing.active_children():
        process.kill()
    if _WORKER is not None:
        _WORKER.shutdown(wait=False, cancel_futures=True)
    _WORKER = None


def _in_the_worker(name: str, size: int, timeout: float) -> dict:
    import concurrent.futures
    import multiprocessing

    global _WORKER
    if _WORKER is None:
        _WORKER = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                         initializer=_capped)
    try:
        return _WORKER.submit(_torch_pruning, name, size).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        failed = {"tp_error": f"no answer in {timeout:.0f} s"}
    except concurrent.futures.process.BrokenProcessPool:
        failed = {"tp_error": "its process died (killed for memory)"}
    except MemoryError:
        return {"tp_error": "MemoryError under the worker's 6 GB cap"}
    except Exception as err:  # the worker's own failure, not the model's
        return {"tp_error": _said(err)}
    _retire()
    return failed


def _said(err: BaseException) -> str:
    """An error in one line: its class and its message's first line (which may be empty)."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"


def _capped(gigabytes: int = 6) -> None:
    """The worker's address space capped, so that a runaway fails there (MemoryError)
    instead of drawing the machine into its out-of-memory killer."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (gigabytes << 30, gigabytes << 30))


def _torch_pruning(name: str, size: int) -> dict:
    try:
        import torch_pruning as tp
    except ImportError:
        return {}
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    model, _ = build(name)
    x = torch.randn(1, 3, size, size)
    start = time.perf_counter()
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
        roots = [torch.nn.Conv2d, torch.nn.Linear]
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        groups = len(list(graph.get_all_groups(root_module_types=roots)))
        prunable = len(list(graph.get_all_groups(ignored_layers=linears[-1:], root_module_types=roots)))
    except Exception as err:
        return {"tp_error": _said(err)}
    return {"tp_s": time.perf_counter() - start, "tp_groups": groups, "tp_prunable": prunable}


def _version(package: str) -> str | None:
    try:
        return __import__(package).__version__
    except ImportError:
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "zoo.json")
    parser.add_argument("--models", default=None, help="comma-separated (default: all but " + ", ".join(LEFT_OUT) + ")")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out, check the rest")
    parser.add_argument("--again", default=None, help="comma-separated: check these again, keeping --out's other rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else models()
    result = {"benchmark": "zoo", "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": {**record.machine(), "loadavg_before": list(os.getloadavg())},
              "torchvision": torchvision.__version__, "timm": _version("timm"), "rows": []}
    result["torch_pruning"] = _version("torch_pruning")
    if args.resume and args.out.exists():
        # rows torch-pruning answered, or that it cannot (a model error), are kept; others are checked again
        result["rows"] = [r for r in json.loads(args.out.read_text())["rows"] if r["model"] in names
                          and not any(k in r.get("tp_error", "") for k in ("alloc", "MemoryError", "no answer"))]
    if args.again:
        again = set(args.again.split(","))
        result["rows"] = [r for r in json.loads(args.out.read_text())["rows"] if r["model"] not in again]
        result["again"] = sorted(again)
    done = {r["model"] for r in result["rows"]}
    for name in [n for n in names if n not in done]:
        row = check(name)
        result["rows"].append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # so far: a killed run resumes (--resume)
        print(f"{name:<36} " + (f"trace {row['trace_s']:5.2f} s  groups {row['groups_s']:5.2f} s  "
                                f"{row['prunable']:>3}/{row['groups']:<3} prunable (torch-pruning "
                                f"{row.get('tp_prunable', '-')})  params {'ok' if row['params_equal'] else 'DIFF'}  "
                                f"MACs {'ok' if row['macs_equal'] else 'DIFF'}  prune "
                                f"{'ok' if row['prune_equal'] else row.get('prune_error', 'DIFF')}"
                                if row["traced"] else f"not traced: {row['error']}"), flush=True)
    rows = [r for r in result["rows"] if r["traced"]]
    with_tp = [r for r in rows if "tp_prunable" in r]
    result["summary"] = {
        "models": len(result["rows"]), "traced": len(rows),
        "params_equal": sum(r["params_equal"] for r in rows),
        "params_differ_by_design": [r["model"] for r in rows if not r["params_equal"] and r["model"] in AUX_HEADS],
        "macs_equal": sum(r["macs_equal"] for r in rows),
        "prune_equal": sum(r["prune_equal"] for r in rows),
        "prunable_at_least_torch_pruning": sum(r["prunable"] >= r["tp_prunable"] for r in with_tp),
        "prunable_equal_torch_pruning": sum(r["prunable"] == r["tp_prunable"] for r in with_tp),
        "with_torch_pruning": len(with_tp),
        "groups_over_trace_time_max": max((r["groups_s"] / r["trace_s"] for r in rows), default=None),
    }
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    print(result["summary"])
    record.write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
