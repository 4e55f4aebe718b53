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
    PRECISIONS,
    TrainConfig,
    bits_per_char,
    config_dict,
    cpu_info,
    evaluate,
    make_optimizer,
    precision_context,
    resolve_precision,
    save_checkpoint,
    train,
)
from helpers.text import CORPORA, load_corpus

SOLUTION = course.notebook_path("solutions", course.CHECKPOINT_LESSON)
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


#: What the benchmark takes from the solution notebook.
DEFINITIONS = ("CharRNN", "get_batches", "train_step")


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


def bare_step_ms(model, get_batches, train_step, data, config, precision, steps: int = 60) -> float:
    """Median milliseconds of one bare ``train_step`` of a copy of ``model`` on a fixed batch.

    Forward, loss, backward, clipping and the AdamW step, in ``precision``; no data loading,
    schedule, checks or logging. ``min(5, steps)`` untimed warm-up steps come first. ``model``
    itself and torch's random state are left as they were (a deep copy is trained).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    warmup = min(5, steps)
    clone = copy.deepcopy(model).train()
    optimizer = make_optimizer(clone, config)
    x, y = next(iter(get_batches(data, config.batch_size, config.seq_length)))
    device = next(clone.parameters()).device
    x = torch.as_tensor(x, dtype=torch.long, device=device)
    y = torch.as_tensor(y, dtype=torch.long, device=device)
    hidden = clone.init_hidden(config.batch_size)
    rng_state = torch.get_rng_state()
    times = []
    with precision_context(precision, device):
        for i in range(warmup + steps):
            started = time.perf_counter()
            _, hidden = train_step(clone, optimizer, x, y, hidden, config.clip_norm)
            if i >= warmup:
                times.append(time.perf_counter() - started)
    torch.set_rng_state(rng_state)
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
    model_config = dict(MODEL_CONFIG if args.preset == "course" else UDACITY_MODEL)
    for name in ("hidden_size", "num_layers", "dropout"):
        if getattr(args, name) is not None:
            model_config[name] = getattr(args, name)
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
    helpers.seed_everything(args.seed)
    device = helpers.get_device()
    model = CharRNN(len(corpus.vocab), **model_config).to(device)
    load_before = os.getloadavg()
    print(
        f"char_lstm benchmark: {args.corpus} ({len(corpus.train):,} train / "
        f"{len(corpus.val):,} validation characters), preset {args.preset}, model "
        f"{model_config}, device {device}, {torch.get_num_threads()} threads, load average "
        f"{load_before[0]:.2f}",
        flush=True,
    )
    print(f"config: {config}", flush=True)
    precision = resolve_precision(config.precision, device)
    step_ms_bare = bare_step_ms(
        model, get_batches, train_step, corpus.train, config, precision, args.bare_steps
    )
    print(f"bare step ({precision}): {step_ms_bare:.2f} ms", flush=True)
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
        "step_ms_loop": round(step_ms_loop, 2),
        "loop_vs_bare": round(step_ms_bare / step_ms_loop, 3),
        "model": model_config,
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
