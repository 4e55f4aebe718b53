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
import io
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import helpers
from helpers import course
from helpers.char_training import (
    MODEL_CONFIG,
    TrainConfig,
    bits_per_char,
    config_dict,
    evaluate,
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
    args = parser.parse_args(argv)
    if args.max_steps is None and not args.budget_seconds > 0:
        parser.error("--budget-seconds must be positive")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    CharRNN, get_batches, train_step = lesson_definitions()
    corpus = load_corpus(args.corpus)
    model_config = dict(MODEL_CONFIG if args.preset == "course" else UDACITY_MODEL)
    training = {} if args.preset == "course" else dict(UDACITY_TRAINING)
    budget = None if args.max_steps else args.budget_seconds
    config = replace(
        TrainConfig(budget_seconds=1.0),
        **training,
        budget_seconds=budget,
        max_steps=args.max_steps,
        seed=args.seed,
        eval_every=args.eval_every,
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
        "model": model_config,
        "config": config_dict(config),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_before": round(load_before[0], 2),
        "load_avg_after": round(load_after[0], 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
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
        out = RESULTS / f"char_lstm-{args.corpus}-{args.preset}-{length}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
