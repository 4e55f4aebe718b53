"""Long-memory benchmark: nn.RNN vs nn.GRU vs nn.LSTM on the adding problem (lesson 03).

Runs the same race as the full mode of solutions/03_time_series_rnn (same settings, same seed)
and prints one row per model: parameters, steps, training seconds, final and best test MSE and
the final MSE relative to the trivial baseline (always answering 1.0 scores 1/6). The expected
result: the LSTM and the GRU end far below the baseline, the plain RNN stays at it.

It also measures, on 256 held-out sequences, how much each trained model's answer moves with the
first and the second marked value (``marker_sensitivity``: 1 for a model that answers a + b, 0
for one that answers the mean), and, unless ``--capacity-hidden 0``, races one more plain RNN
with a larger hidden size (66: 4,687 parameters, more than the LSTM's 4,641) to see whether the
RNN merely lacks capacity.

    .venv/bin/python benchmarks/long_memory.py            # full race, T=100 (minutes)
    .venv/bin/python benchmarks/long_memory.py --fast     # the notebook's fast mode, seconds
    .venv/bin/python benchmarks/long_memory.py --plot benchmarks/results/long_memory.png
    .venv/bin/python benchmarks/long_memory.py --json data/long_memory_race.json

``--json`` writes the measurement lesson 03 shows after its race (``data/long_memory_race.json``,
shipped with the course: the full race, seed 0).

Exit status 0 when the result holds (LSTM and GRU below ``--solved`` times the baseline, RNN
above ``--unsolved`` times it), 1 otherwise; ``--fast`` only reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from helpers.runtime import get_device
from helpers.timeseries import (
    ADDING_BASELINE_MSE,
    adding_problem,
    long_memory_race,
    plot_race,
    race_table,
)
from helpers.training import model_device

#: The full-mode settings the lesson uses (and states in its markdown).
FULL = {"seq_length": 100, "hidden_size": 32, "n_steps": 1500, "batch_size": 64, "lr": 0.01}
FAST = {"seq_length": 20, "hidden_size": 32, "n_steps": 100, "batch_size": 64, "lr": 0.01}
#: Hidden size of the extra plain RNN that has more parameters than the LSTM of hidden size 32.
CAPACITY_HIDDEN = 66
#: Held-out sequences the marker sensitivity is measured on.
SENSITIVITY_SEQUENCES = 256


def marker_sensitivity(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """How much a trained adding-problem model's answer moves with each marked value.

    For every sequence of ``x`` ``(batch, seq, 2)`` (from ``adding_problem``), the derivative of
    the model's answer with respect to the first and to the second marked value, averaged over
    the batch. A model that has solved the task answers ``a + b``: both are 1. A model that
    answers the mean whatever it reads: both are 0.

    Returns:
        ``(first, second)`` as Python floats. The model is left in the mode it was in.
    """
    if x.dim() != 3 or x.shape[2] != 2:
        raise ValueError(f"x should be (batch, seq, 2) from adding_problem, got {tuple(x.shape)}")
    markers = x[:, :, 1]
    if not torch.equal(markers.sum(dim=1), torch.full_like(markers[:, 0], 2.0)):
        raise ValueError("every sequence of x should have exactly two markers")
    was_training = model.training
    model.eval()
    try:
        device = model_device(model)
        x = x.detach().to(device).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model(x).sum(), x)
    finally:
        model.train(was_training)
    grad = grad[:, :, 0].cpu()
    positions = markers.cpu().nonzero()  # (2 * batch, 2) rows (sequence, step), in order
    first, second = positions[0::2], positions[1::2]
    return (
        float(grad[first[:, 0], first[:, 1]].mean()),
        float(grad[second[:, 0], second[:, 1]].mean()),
    )


def _summary(history, hidden_size: int, sensitivity: tuple[float, float]) -> dict:
    return {
        "hidden_size": hidden_size,
        "n_parameters": history.n_parameters,
        "steps": history.steps[-1],
        "training_seconds": round(history.seconds[-1], 1),
        "final_test_mse": history.final_test_loss,
        "best_test_mse": history.best_test_loss,
        "final_over_baseline": history.final_test_loss / ADDING_BASELINE_MSE,
        "marker_sensitivity": list(sensitivity),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="the notebook's fast-mode settings")
    parser.add_argument("--seq-length", type=int, help="sequence length T of the adding problem")
    parser.add_argument("--hidden-size", type=int, help="hidden size of every model")
    parser.add_argument("--steps", type=int, help="training steps per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="stop a model after this many seconds of training",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument(
        "--solved",
        type=float,
        default=0.1,
        help="LSTM/GRU must end below this fraction of the baseline",
    )
    parser.add_argument(
        "--unsolved",
        type=float,
        default=0.5,
        help="the RNN must end above this fraction of the baseline",
    )
    parser.add_argument(
        "--capacity-hidden",
        type=int,
        default=CAPACITY_HIDDEN,
        help="also race a plain RNN of this hidden size (0: don't)",
    )
    parser.add_argument("--plot", type=Path, help="save the loss-vs-time plot to this PNG")
    parser.add_argument("--json", type=Path, help="write the measurement to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    settings = dict(FAST if args.fast else FULL)
    for key, value in (
        ("seq_length", args.seq_length),
        ("hidden_size", args.hidden_size),
        ("n_steps", args.steps),
    ):
        if value is not None:
            settings[key] = value
    device = get_device()
    print(
        f"adding problem: T={settings['seq_length']}, hidden_size={settings['hidden_size']}, "
        f"{settings['n_steps']} steps of {settings['batch_size']} sequences, "
        f"lr={settings['lr']}, seed={args.seed}, device={device}, "
        f"threads={args.threads}, torch {torch.__version__}",
        flush=True,
    )
    started = time.perf_counter()
    histories = long_memory_race(
        **settings,
        seed=args.seed,
        device=device,
        time_budget_s=args.time_budget,
        threads=args.threads,
        progress=not args.quiet,
    )
    capacity = {}
    if args.capacity_hidden:
        bigger = {**settings, "hidden_size": args.capacity_hidden}
        capacity = long_memory_race(
            **bigger,
            kinds=("RNN",),
            seed=args.seed,
            device=device,
            time_budget_s=args.time_budget,
            threads=args.threads,
            progress=not args.quiet,
        )
    wall = time.perf_counter() - started
    print(race_table(histories))
    probe = adding_problem(
        SENSITIVITY_SEQUENCES,
        settings["seq_length"],
        generator=torch.Generator().manual_seed(20_000 + args.seed),
    )[0]
    sensitivity = {name: marker_sensitivity(h.model, probe) for name, h in histories.items()}
    for name, (first, second) in sensitivity.items():
        print(f"{name:<6} d answer / d first marked value {first:6.3f}, second {second:6.3f}")
    for name, h in capacity.items():
        print(
            f"{name} with hidden_size {args.capacity_hidden}: {h.n_parameters} parameters, "
            f"final MSE {h.final_test_loss:.4f} ({h.final_test_loss / ADDING_BASELINE_MSE:.3f} "
            "x baseline)"
        )
    print(f"wall-clock time of the whole race (evaluations included): {wall:.1f} s")

    if args.json:
        record = {
            # --quiet only hides the progress bars: it is not part of the measurement
            "command": " ".join(
                ["python benchmarks/long_memory.py"]
                + [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quiet"]
            ),
            "settings": settings,
            "seed": args.seed,
            "torch": torch.__version__,
            "device": str(device),
            "baseline_mse": ADDING_BASELINE_MSE,
            "models": {
                name: _summary(h, settings["hidden_size"], sensitivity[name])
                for name, h in histories.items()
            },
            "capacity": {
                name: _summary(h, args.capacity_hidden, marker_sensitivity(h.model, probe))
                for name, h in capacity.items()
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"measurement written to {args.json}")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        ax = plot_race(histories, title=f"Adding problem, T={settings['seq_length']}")
        ax.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"plot saved to {args.plot}")

    if args.fast:
        return 0
    ratio = {name: h.final_test_loss / ADDING_BASELINE_MSE for name, h in histories.items()}
    ok = (
        ratio.get("LSTM", 0) < args.solved
        and ratio.get("GRU", 0) < args.solved
        and ratio.get("RNN", 1) > args.unsolved
    )
    verdict = "holds" if ok else "DOES NOT HOLD"
    print(
        f"result {verdict}: LSTM and GRU below {args.solved:g} x baseline, RNN above "
        f"{args.unsolved:g} x baseline"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
