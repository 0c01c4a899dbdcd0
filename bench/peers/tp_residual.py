"""Whether torch-pruning's largest group on a model is a valid pruning: every other
channel of it pruned by torch-pruning 1.6.1 against the model whose channels of that
group are zeroed at every layer of it (as nasdsl's `zero_removed`). On LayerNorm
residual streams they differ, which is why tests/test_zoo.py's FEWER has those models;
a BatchNorm network (resnet18) is the control.

torch-pruning is not a dependency: put it on PYTHONPATH, outside the project's venv,

    .venv/bin/pip install --target /tmp/tp --no-deps torch-pruning
    PYTHONPATH=/tmp/tp .venv/bin/python bench/peers/tp_residual.py   # -> bench/results/tp_residual.json
"""

import argparse
import copy
import json
import sys
import warnings
from pathlib import Path

import torch
import torch_pruning as tp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import record  # noqa: E402
import zoo  # noqa: E402

MODELS = ["timm:resnet18", "timm:convnext_atto", "timm:vit_tiny_patch16_224", "timm:poolformer_s12",
          "timm:swin_tiny_patch4_window7_224"]


def check(name: str) -> dict:
    model, size = zoo.build(name, 64)
    model.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    groups = list(graph.get_all_groups(ignored_layers=linears[-1:], root_module_types=[torch.nn.Conv2d, torch.nn.Linear]))
    group = max(groups, key=len)  # the residual stream, where there is one
    root = group[0].dep.target.module
    conv = isinstance(root, torch.nn.Conv2d)
    idxs = list(range(1, root.out_channels if conv else root.out_features, 2))
    handler = tp.prune_conv_out_channels if conv else tp.prune_linear_out_channels
    names = {m: n for n, m in model.named_modules()}
    zeroed = copy.deepcopy(model)
    theirs = dict(zeroed.named_modules())
    with torch.no_grad():
        for item in graph.get_pruning_group(root, handler, idxs=idxs):
            module, gone = item.dep.target.module, item.idxs
            if module not in names or not gone or "out" not in getattr(item.dep.handler, "__name__", ""):
                continue
            for tensor in (getattr(theirs[names[module]], p, None) for p in ("weight", "bias")):
                if isinstance(tensor, torch.Tensor) and tensor.dim() >= 1 and tensor.shape[0] > max(gone):
                    tensor[torch.as_tensor(gone)] = 0
    row = {"model": name, "group_dependencies": len(group), "root": names.get(root), "pruned": len(idxs)}
    try:
        graph.get_pruning_group(root, handler, idxs=idxs).prune()
        with torch.no_grad():
            pruned, reference = model(x), zeroed(x)
        row["max_relative_difference"] = ((pruned - reference).abs().max() / reference.abs().max()).item()
    except Exception as err:  # noqa: BLE001  the pruned model not running is the answer
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tp_residual.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    rows = [check(name) for name in args.models.split(",")]
    for row in rows:
        print(row)
    args.out.write_text(json.dumps({"benchmark": "tp_residual", "torch_pruning": tp.__version__,
                                    "machine": record.machine(), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
