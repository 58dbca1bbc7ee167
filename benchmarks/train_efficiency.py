"""How much of the model's own training speed the full training loop keeps.

Two throughputs for the same model, recipe and batch size on the CPU:

* loop: one full epoch through ``bench.train.training.train_seed`` -- per-epoch
  permutation, on-device crop + flip + normalisation, the schedule, the
  divergence check -- timed by the training clock (evaluation excluded);
* model only: the same number of ``Trainer.step`` calls on one fixed,
  pre-made, already normalised batch (no data pipeline at all).

efficiency = loop img/s / model-only img/s; the target is >= 95%. Each is
measured ``--rounds`` times, alternating, and the fastest of each is kept
(the least disturbed by other processes on a shared machine). As an
independent check of the model-only figure, torch.utils.benchmark times the
same step too.

    python benchmarks/train_efficiency.py [--preset resnet20] [--batch-size 128] [--images 10000] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils import benchmark as tbench  # noqa: E402

from bench.train.augment import normalization, normalize  # noqa: E402
from bench.train.data import prepare_data  # noqa: E402
from bench.run.environment import cpu_model  # noqa: E402
from bench.train.recipe import resolve  # noqa: E402
from bench.train.training import DeviceData, Trainer, isolated_state, train_seed  # noqa: E402
from models import build_model, get_preset  # noqa: E402

TARGET = 0.95


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="resnet20")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=10000, help="synthetic training images (one epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--reference-s", type=float, default=10.0,
                    help="seconds torch.utils.benchmark spends on the reference timing")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = "cpu"
    config = resolve({"dataset": "synthetic", "train_subset": args.images, "test_subset": 100,
                      "batch_size": args.batch_size, "epochs": 1, "precision": args.precision})
    model_config = get_preset(args.preset, num_classes=10, input_size=32)
    data = DeviceData.from_data(prepare_data(config), device)
    steps = len(data.train) // args.batch_size
    print(f"# {args.preset}, batch {args.batch_size}, {steps} steps ({steps * args.batch_size} images), "
          f"{args.precision}, {device}: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    def loop_img_s() -> float:
        result = train_seed(lambda: build_model(model_config), data, config, device, seed=0)
        return result.images / result.train_time_s

    scale, shift = normalization(*config.normalize)
    x = normalize(data.train.images[:args.batch_size], scale, shift)  # pre-made, reused every step
    y = data.train.labels[:args.batch_size]

    def fresh_trainer() -> Trainer:
        torch.manual_seed(0)
        return Trainer(build_model(model_config), config, device, total_steps=steps, steps_per_epoch=steps)

    def model_only_img_s() -> float:
        trainer = fresh_trainer()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step(x, y)
        return steps * args.batch_size / (time.perf_counter() - start)

    def reference_img_s() -> float:
        """The model-only step timed independently by torch.utils.benchmark (median of blocks)."""
        trainer = fresh_trainer()
        timer = tbench.Timer("trainer.step(x, y)", globals={"trainer": trainer, "x": x, "y": y},
                             num_threads=torch.get_num_threads())
        return args.batch_size / timer.blocked_autorange(min_run_time=args.reference_s).median

    loops, models = [], []
    with isolated_state(device, config.deterministic):
        for r in range(args.rounds):
            # alternate the order so a drift in machine speed hits both alike
            pair = (loop_img_s, model_only_img_s) if r % 2 == 0 else (model_only_img_s, loop_img_s)
            for fn in pair:
                (loops if fn is loop_img_s else models).append(fn())
            print(f"round {r + 1}: loop {loops[-1]:.1f} img/s, model only {models[-1]:.1f} img/s", flush=True)
        reference = reference_img_s()
    loop, model = max(loops), max(models)
    ratio = loop / model
    print(f"training loop (full epoch, augmentation included): {loop:.1f} img/s")
    print(f"model-only steps (fixed pre-made batch):           {model:.1f} img/s")
    print(f"model-only, torch.utils.benchmark (reference):     {reference:.1f} img/s "
          f"({reference / model - 1:+.1%} vs the model-only figure)")
    print(f"efficiency: {ratio:.1%} (target >= {TARGET:.0%}): {'PASS' if ratio >= TARGET else 'FAIL'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
