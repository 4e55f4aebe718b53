"""Benchmark of lesson 04's character-level LSTM: train for a fixed wall-clock budget, then score.

Trains the lesson's own model (``CharRNN``, ``get_batches`` and ``train_step`` are loaded from
the solution notebook, so there is one definition of each) with the lesson's training helper and
default configuration, on the first 90 % of a corpus, and reports the validation loss on the last
10 % two ways (nats per character):

* ``val_stream``: the whole validation text as contiguous streams, hidden state carried;
* ``val_win64``: independent 64-character windows from a zero state (nanoGPT's protocol).

Usage (``make bench ARGS="..."`` runs the same)::

    python benchmarks/char_lstm.py --corpus tinyshakespeare --budget-seconds 180
    python benchmarks/char_lstm.py --corpus anna --budget-seconds 600
    python benchmarks/char_lstm.py --preset udacity --budget-seconds 300   # Udacity's notebook
    python benchmarks/char_lstm.py --max-steps 2000 --save m.pt --half  # like `make checkpoint`

The last line printed is one JSON object: ``corpus``, ``budget_s``, ``steps``, ``chars_per_s``,
``val_stream``, ``val_win64`` and more. It is also written to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import io
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import helpers
from helpers import course
from helpers.char_training import (
    MODEL_CONFIG,
    TrainConfig,
    bits_per_char,
    config_dict,
    evaluate,
    make_optimizer,
    save_checkpoint,
    train,
)
from helpers.precision import PRECISIONS, cpu_info, precision_context, resolve_precision
from helpers.text import CORPORA, load_corpus

SOLUTION = course.notebook_path("source", course.CHECKPOINT_LESSON)
RESULTS = course.ROOT / "benchmarks" / "results"

#: The settings of the char-RNN notebook of Udacity's RNN lesson,
#: ``Character_Level_RNN_Exercise.ipynb`` (``--preset udacity``): 2 x 512 LSTM, dropout 0.5,
#: batch 128 x 100, Adam 1e-3 constant, gradient norm clipped at 5.
UDACITY_MODEL = {"hidden_size": 512, "num_layers": 2, "dropout": 0.5}
UDACITY_TRAINING = {
    "batch_size": 128,
    "seq_length": 100,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "warmup_steps": 0,
    "final_lr_fraction": 1.0,
    "clip_norm": 5.0,
}


#: The model for a time budget (``--model budget``, the default with ``--preset course``):
#: ``(fewest passes, model)`` pairs, the largest first; a run that the lesson's model would
#: read fewer passes over the training text in than every threshold keeps ``MODEL_CONFIG``.
#: Passes = budget x the lesson model's measured bare-step rate x characters per batch / training
#: characters. Derived from this script's runs on both ends (benchmarks/README.md, "A model
#: for the budget"):
#: at about 5 passes the 1 x 384 model is limited by its updates and a bigger one, slower per
#: update, is no better; at 18-22 it over-fits, and a wider model with more dropout wins.
BUDGET_MODELS = ((12.0, {"hidden_size": 512, "num_layers": 1, "dropout": 0.5}),)


def expected_passes(budget_s: float, step_ms: float, config: TrainConfig, train_chars: int):
    """Passes over ``train_chars`` characters that ``budget_s`` seconds of ``step_ms`` steps of
    ``config.batch_size x config.seq_length`` characters read."""
    if not (budget_s > 0 and step_ms > 0 and train_chars > 0):
        raise ValueError(
            "expected_passes needs a positive budget, step time and training length, got "
            f"{budget_s}, {step_ms}, {train_chars}"
        )
    steps = budget_s * 1000 / step_ms
    return steps * config.batch_size * config.seq_length / train_chars


def model_for_budget(passes: float) -> dict:
    """The model (``CharRNN``'s keyword arguments) for a run of ``passes`` passes of the
    lesson's model over the training text: ``BUDGET_MODELS``' first whose threshold it reaches,
    else ``MODEL_CONFIG``."""
    if not passes >= 0:
        raise ValueError(f"passes must be a number >= 0, got {passes!r}")
    for fewest, model in BUDGET_MODELS:
        if passes >= fewest:
            return dict(model)
    return dict(MODEL_CONFIG)


#: What the benchmark takes from the solution notebook.
DEFINITIONS = ("CharRNN", "get_batches", "train_step")


@functools.cache  # --compare's two runs load the notebook once
def lesson_definitions(path: Path = SOLUTION):
    """``CharRNN``, ``get_batches`` and ``train_step`` from the solution notebook (its training
    cells skipped).

    What the notebook's cells print while they load is kept out of the benchmark's report.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        namespace = helpers.load_notebook(path)
    missing = [name for name in DEFINITIONS if name not in namespace]
    if missing:
        errors = "\n".join(str(e) for e in namespace.errors)
        raise SystemExit(f"{path} does not define {missing}; errors while loading:\n{errors}")
    return tuple(namespace[name] for name in DEFINITIONS)


def bare_step_ms(
    model, get_batches, train_step, data, config, precision, steps: int = 60, seconds: float = 10.0
) -> float:
    """Median milliseconds of one bare ``train_step`` of a copy of ``model`` on a fixed batch.

    Forward, loss, backward, clipping and the AdamW step, in ``precision``; no data loading,
    schedule, checks or logging. Untimed warm-up steps come first (``min(5, steps)``, fewer if
    they take over 2 s); then ``steps`` timed ones, stopping early after ``seconds`` (at least
    3, or ``steps`` if fewer), so a big model's measurement stays short. ``model`` itself and
    torch's random state are left as they were (a deep copy is trained).
    """
    if steps < 1 or not seconds > 0:
        raise ValueError(f"steps must be >= 1 and seconds > 0, got {steps} and {seconds}")
    clone = copy.deepcopy(model).train()
    optimizer = make_optimizer(clone, config)
    x, y = next(iter(get_batches(data, config.batch_size, config.seq_length)))
    device = next(clone.parameters()).device
    x = torch.as_tensor(x, dtype=torch.long, device=device)
    y = torch.as_tensor(y, dtype=torch.long, device=device)
    hidden = clone.init_hidden(config.batch_size)
    forked = [device] if device.type == "cuda" else []

    def step() -> float:
        nonlocal hidden
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        # One autocast region per step, as in train: leaving it drops autocast's cache of bf16
        # weight copies, which would otherwise go stale after the optimizer's step.
        with precision_context(precision, device):
            _, hidden = train_step(clone, optimizer, x, y, hidden, config.clip_norm)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    times = []
    with torch.random.fork_rng(devices=forked):
        warmup = 0.0
        for _ in range(min(5, steps)):
            warmup += step()
            if warmup > 2.0:
                break
        while len(times) < steps and (sum(times) < seconds or len(times) < min(3, steps)):
            times.append(step())
    return 1000 * float(np.median(times))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="tinyshakespeare")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=180.0,
        help="training time (validation excluded); default 180",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many steps instead (then the budget is ignored)",
    )
    parser.add_argument(
        "--preset",
        choices=("course", "udacity"),
        default="course",
        help="course: the lesson's configuration; udacity: that of the char-RNN notebook of "
        "Udacity's RNN lesson",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        choices=("budget", "lesson"),
        default="budget",
        help="with --preset course and a time budget: budget (default) picks the model from the "
        "budget and the measured step rate (BUDGET_MODELS); lesson always trains MODEL_CONFIG",
    )
    parser.add_argument("--hidden-size", type=int, default=None, help="override the preset's")
    parser.add_argument("--num-layers", type=int, default=None, help="override the preset's")
    parser.add_argument("--dropout", type=float, default=None, help="override the preset's")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): bf16 where the CPU/GPU computes it natively, else fp32",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run the lesson's configuration and --preset udacity for the same budget, one "
        "after the other, and print both and their ratio",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)"
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="validate on 50k characters every N steps (default: only at the end)",
    )
    parser.add_argument(
        "--val-chars",
        type=int,
        default=None,
        help="score only the first N validation characters (quick smoke tests; default: all)",
    )
    parser.add_argument("--save", type=Path, default=None, help="write a checkpoint here")
    parser.add_argument("--half", action="store_true", help="store the checkpoint in float16")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON result file (default: benchmarks/results/char_lstm-...json)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--bare-steps",
        type=int,
        default=60,
        help="timed steps of the bare-step measurement (median; default 60)",
    )
    args = parser.parse_args(argv)
    if args.max_steps is None and not args.budget_seconds > 0:
        parser.error("--budget-seconds must be positive")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.compare:
        return compare(args)
    return run(args)


def compare(args: argparse.Namespace) -> dict:
    """The lesson's configuration, then Udacity's, for the same budget; both and their ratio."""
    if args.save:
        raise SystemExit("--compare does not write a checkpoint (drop --save)")
    results = {}
    for preset in ("course", "udacity"):
        out = args.out.with_name(f"{args.out.stem}-{preset}{args.out.suffix}") if args.out else None
        results[preset] = run(argparse.Namespace(**{**vars(args), "preset": preset, "out": out}))
    course_, udacity = results["course"], results["udacity"]
    ratio = {
        key: round(course_[key] / udacity[key], 3) if udacity[key] else None
        for key in ("val_stream", "steps", "chars_per_s")
    }
    print("\n             course    udacity   course/udacity")
    for key in ratio:
        print(f"{key:<12} {course_[key]:>9} {udacity[key]:>9}   {ratio[key]}")
    summary = {"compare": True, "course": course_, "udacity": udacity, "ratio": ratio}
    print(json.dumps(summary), flush=True)
    return summary


def run(args: argparse.Namespace) -> dict:
    """One benchmark run: the bare step, training for the budget, validation; the result."""
    CharRNN, get_batches, train_step = lesson_definitions()
    corpus = load_corpus(args.corpus)
    overrides = {
        name: getattr(args, name)
        for name in ("hidden_size", "num_layers", "dropout")
        if getattr(args, name) is not None
    }
    model_config = {**(MODEL_CONFIG if args.preset == "course" else UDACITY_MODEL), **overrides}
    training = {} if args.preset == "course" else dict(UDACITY_TRAINING)
    budget = None if args.max_steps else args.budget_seconds
    config = replace(
        TrainConfig(budget_seconds=1.0),
        **training,
        budget_seconds=budget,
        max_steps=args.max_steps,
        seed=args.seed,
        eval_every=args.eval_every,
        precision=args.precision,
    )

    if args.threads:
        torch.set_num_threads(args.threads)  # for training and evaluation alike
    device = helpers.get_device()
    precision = resolve_precision(config.precision, device)

    def build(model_config):
        helpers.seed_everything(args.seed)  # the same model and draws as a run without the rule
        model = CharRNN(len(corpus.vocab), **model_config).to(device)
        step_ms = bare_step_ms(
            model, get_batches, train_step, corpus.train, config, precision, args.bare_steps
        )
        print(f"model {model_config}: bare step ({precision}) {step_ms:.2f} ms", flush=True)
        return model, step_ms

    load_before = os.getloadavg()
    model, step_ms_bare = build(model_config)
    rule = None
    if args.preset == "course" and budget and args.model == "budget" and not overrides:
        passes = expected_passes(budget, step_ms_bare, config, len(corpus.train))
        chosen = model_for_budget(passes)
        rule = {"passes_expected": round(passes, 2), "scaled": chosen != model_config}
        print(f"budget rule: {passes:.1f} passes of the lesson's model -> {chosen}", flush=True)
        if chosen != model_config:
            model_config = chosen
            model, step_ms_bare = build(model_config)
    print(
        f"char_lstm benchmark: {args.corpus} ({len(corpus.train):,} train / "
        f"{len(corpus.val):,} validation characters), preset {args.preset}, model "
        f"{model_config}, device {device}, {torch.get_num_threads()} threads, load average "
        f"{load_before[0]:.2f}",
        flush=True,
    )
    print(f"config: {config}", flush=True)
    history = train(
        model,
        corpus.train,
        corpus.val,
        get_batches,
        train_step,
        config,
        progress=not args.no_progress,
        desc=f"{args.corpus} {args.preset}",
    )
    load_after = os.getloadavg()
    started = time.perf_counter()
    val_stream = evaluate(model, corpus.val, "stream", max_chars=args.val_chars)
    val_win64 = evaluate(model, corpus.val, "win64", max_chars=args.val_chars)
    eval_seconds = time.perf_counter() - started
    # The bare step again, on the trained model: a machine's speed drifts over minutes, so the
    # loop is compared with the mean of the two.
    step_ms_bare_before = step_ms_bare
    step_ms_bare_after = bare_step_ms(
        model, get_batches, train_step, corpus.train, config, precision, args.bare_steps
    )
    step_ms_bare = (step_ms_bare_before + step_ms_bare_after) / 2
    step_ms_loop = 1000 * history.loop_seconds / max(history.steps, 1)

    result = {
        "corpus": args.corpus,
        "preset": args.preset,
        "budget_s": budget,
        "max_steps": args.max_steps,
        "steps": history.steps,
        "epochs": round(
            history.steps * config.batch_size * config.seq_length / len(corpus.train), 3
        ),
        "train_s": round(history.train_seconds, 1),
        "chars_per_s": round(history.chars_per_s),
        "steps_per_s": round(history.steps / max(history.train_seconds, 1e-9), 2),
        "final_train_loss": round(history.final_train_loss, 4),
        "val_stream": round(val_stream, 4),
        "val_stream_bits": round(bits_per_char(val_stream), 4),
        "val_win64": round(val_win64, 4),
        "val_win64_bits": round(bits_per_char(val_win64), 4),
        "val_chars": args.val_chars or len(corpus.val),
        "eval_s": round(eval_seconds, 1),
        "precision": history.precision,
        "step_ms_bare": round(step_ms_bare, 2),
        "step_ms_bare_before_after": [round(step_ms_bare_before, 2), round(step_ms_bare_after, 2)],
        "step_ms_loop": round(step_ms_loop, 2),
        "loop_vs_bare": round(step_ms_bare / step_ms_loop, 3),
        "model": model_config,
        "budget_rule": rule,
        "config": config_dict(config),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_before": round(load_before[0], 2),
        "load_avg_after": round(load_after[0], 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
        **cpu_info(),
    }
    if args.save:
        trained = (
            f"{history.steps} steps of batch {config.batch_size} x {config.seq_length} on "
            f"{args.corpus} ({result['epochs']} epochs, seed {args.seed})"
        )
        path = save_checkpoint(
            args.save,
            model,
            corpus.vocab,
            model_config,
            half=args.half,
            extra={
                "trained": trained,
                "val_stream": result["val_stream"],
                "val_win64": result["val_win64"],
                "config": config_dict(config),
                "corpus": args.corpus,
            },
        )
        result["checkpoint"] = str(path)
        result["checkpoint_bytes"] = path.stat().st_size

    print(
        f"{args.corpus}: {history.steps} steps in {history.train_seconds:.0f} s "
        f"({history.chars_per_s:,.0f} characters/s), validation loss: stream "
        f"{val_stream:.4f} nats/char ({bits_per_char(val_stream):.3f} bits), win64 "
        f"{val_win64:.4f} nats/char ({bits_per_char(val_win64):.3f} bits)",
        flush=True,
    )
    out = args.out
    if out is None:
        length = f"{args.max_steps}steps" if args.max_steps else f"{budget:g}s"
        out = RESULTS / f"char_lstm-{args.corpus}-{args.preset}-{length}-{history.precision}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
