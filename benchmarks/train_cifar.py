"""Train a preset on real CIFAR-10 and print test accuracy per epoch and the wall time.

The harness's training path end to end (bench.train.training.train_cell): data
from DATA_ROOT/cifar-10-batches-py, on-device augmentation, the recipe below
(or --set overrides), evaluation every epoch off the training clock.

    python benchmarks/train_cifar.py --preset resnet20 --data-root data --epochs 5
    python benchmarks/train_cifar.py --preset resnet20 --set lr=0.4 --set ema=0.99 --target 0.8

Default recipe: the CPU recipe (CPU_RECIPE) on a CPU, the harness's defaults
(bench/train/recipe.py) on a GPU. Prints one line per epoch: epoch, training time
so far (evaluation excluded), wall time so far, training images/s so far, test top-1.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from typing import Any, Dict, List

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.run.environment import cpu_model  # noqa: E402
from bench.errors import UserError  # noqa: E402
from bench.train.recipe import resolve  # noqa: E402
from bench.train.training import EvalPoint, train_cell  # noqa: E402
from models import build_model, get_preset  # noqa: E402

# Tuned for resnet20 in 5 epochs on a 2-core CPU (docs/training.md has the
# 2-epoch comparisons behind it): batch 128 (more steps per epoch than the
# GPU default cost little throughput here), a higher peak lr, and a lighter
# translation (2 px) than the usual 4 px, which over-regularises a small
# network trained this briefly. bf16 autocast is added where the CPU has
# native bf16 kernels.
CPU_RECIPE: Dict[str, Any] = {
    "batch_size": 128,
    "lr": 0.4,
    "warmup_epochs": 1.0,
    "label_smoothing": 0.1,
    "weight_decay": 5e-4,
    "crop_padding": 2,
    "tta_flip": True,
}


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def parse_sets(items: List[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: expected KEY=VALUE, e.g. --set lr=0.4")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = {"true": True, "false": False, "null": None}.get(text, text)
    return out


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="resnet20", help="model preset (python benchmark.py presets)")
    ap.add_argument("--data-root", default="data", help="folder holding cifar-10-batches-py/")
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--target", type=float, default=None, help="report the training time to this test accuracy")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override (bench/train/recipe.py field), repeatable")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = dict(CPU_RECIPE) if device == "cpu" else {}
    if device == "cpu" and _cpu_has_bf16():
        settings["precision"] = "bf16"  # about 1.5-2x the fp32 speed where oneDNN has bf16 kernels
    settings.update({"dataset": "cifar10", "data_root": args.data_root, "epochs": args.epochs,
                     "target_acc": args.target})
    settings.update(parse_sets(args.set))
    try:
        config = resolve(settings)
    except ValueError as e:
        raise UserError(f"--set: {e}") from None
    try:
        model_config = get_preset(args.preset, num_classes=10, input_size=config.resize or 32)
    except KeyError as e:
        raise UserError(e.args[0]) from None

    hardware = torch.cuda.get_device_name() if device == "cuda" else f"{cpu_model()}, {torch.get_num_threads()} threads"
    print(f"# {args.preset} on CIFAR-10 from {os.path.join(args.data_root, 'cifar-10-batches-py')}")
    print(f"# {device}: {hardware}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"# command: python benchmarks/train_cifar.py {' '.join(sys.argv[1:])}")
    recipe = config.to_dict()
    changed = {k: v for k, v in recipe.items() if v != resolve(None).to_dict()[k]}
    print(f"# recipe changes from bench/train/recipe.py defaults: {changed}")
    print(f"# full recipe: {recipe}")
    # img/s: training images per second of training time so far (evaluation excluded)
    print(f"{'epoch':>6} {'train_s':>9} {'wall_s':>9} {'img/s':>8} {'test_top1':>10}", flush=True)
    started = time.perf_counter()

    def report(seed: int, point: EvalPoint) -> None:
        print(f"{point.epoch:6.2f} {point.train_time_s:9.1f} {time.perf_counter() - started:9.1f} "
              f"{point.images / point.train_time_s:8.1f} {point.test_acc:10.4f}", flush=True)

    result = train_cell(lambda: build_model(model_config), config.to_dict(), device=device,
                        num_classes=10, input_size=model_config.input_size, on_eval=report)
    wall = time.perf_counter() - started
    if result["status"] != "ok":
        print(f"# {result['status']}: {result['error']}")
        return 1
    print(f"# dataset {result['dataset']}: test top-1 {result['top1_acc']:.4f} after {config.epochs:g} epochs; "
          f"training {result['train_time_s']:.1f} s ({result['train_img_s']:.1f} img/s), "
          f"wall {wall:.1f} s (data loading and evaluation included)")
    if config.target_acc is not None:
        reached = result["time_to_target_s"]
        print(f"# time to {config.target_acc:.0%} test top-1: "
              + (f"{reached:.1f} s of training" if reached is not None else "not reached"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
