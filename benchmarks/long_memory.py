"""The long-memory sweep (lesson 03): nn.RNN, nn.GRU and nn.LSTM on the adding problem, across
the distance to remember.

For every sequence length (the first marked value is up to T - 1 steps back), every model (the
three kinds at hidden size 32, and one more plain RNN large enough to have more parameters than
the LSTM) is trained on several seeds, with the learning rate it did best with on a short run of
a seed the measurement does not use (or a default, when no short run left the baseline: on a
plateau the candidates differ only by noise). Each run records its final and best test MSE and
how much the trained model's answer moves with the first and the second marked value (by
central differences in float64, on held-out sequences: 1 for a model that answers a + b, 0 for
one that answers the mean).

    .venv/bin/python benchmarks/long_memory.py --json helpers/data/long_memory_sweep.json  # shipped
    .venv/bin/python benchmarks/long_memory.py --fast                                      # seconds
    .venv/bin/python benchmarks/long_memory.py --plot benchmarks/results/long_memory.png

Runs are independent processes (``--jobs``, default 2, one CPU thread each). ``--json`` writes
the measurement lesson 03 plots (``helpers/data/long_memory_sweep.json``, shipped with the course).

Exit status 0 when the result holds (at the longest length the GRU and the LSTM end below
``--solved`` times the baseline on average and the plain RNNs above ``--unsolved`` times it; at
the shortest the plain RNN ends below ``--solved``), 1 otherwise; ``--fast`` only reports.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from helpers.checks.lesson03 import _central_difference, _marked_steps
from helpers.long_memory import (
    ADDING_BASELINE_MSE,
    LastStepRegressor,
    adding_problem,
    count_parameters,
    plot_sweep,
    sweep_summary,
    sweep_table,
    train_adding,
)
from helpers.training import cpu_threads

#: What a job hands to ``train_adding`` as it is.
TRAINING = ("hidden_size", "n_steps", "batch_size", "lr", "eval_every", "n_test", "seed")
#: A short run that ends above this fraction of the baseline has learned nothing yet.
PLATEAU = 0.9
#: The shipped sweep's settings.
FULL = {
    "lengths": [10, 25, 50, 100],
    "seeds": [0, 1, 2],
    "hidden_size": 32,
    "capacity_hidden": 66,  # a plain RNN with 4,687 parameters, more than the LSTM's 4,641
    "n_steps": 1500,
    "batch_size": 64,
    "eval_every": 50,
    "n_test": 1000,
    "lr_candidates": [0.003, 0.01, 0.03],
    "lr_default": 0.01,  # kept when no candidate's short run leaves the baseline
    "lr_steps": 500,
    "lr_seed": 100,
    "probe_sequences": 256,
}
FAST = FULL | {
    "lengths": [6, 12],
    "seeds": [0, 1],
    "n_steps": 20,
    "eval_every": 10,
    "n_test": 64,
    "lr_candidates": [0.01, 0.03],
    "lr_steps": 10,
    "probe_sequences": 16,
}


def _models(settings: dict) -> dict[str, dict]:
    models = {
        kind: {"kind": kind, "hidden_size": settings["hidden_size"]}
        for kind in ("RNN", "GRU", "LSTM")
    }
    if settings["capacity_hidden"]:
        name = f"RNN {settings['capacity_hidden']}"
        models[name] = {"kind": "RNN", "hidden_size": settings["capacity_hidden"]}
    for info in models.values():
        info["n_parameters"] = count_parameters(
            LastStepRegressor(info["kind"], 2, info["hidden_size"])
        )
    return models


def sensitivity(model, x: torch.Tensor) -> list[float]:
    """A trained model's mean derivative with respect to the first and the second marked value
    of the adding-problem sequences ``x``, by central differences on float64 copies (the check's
    reference for the lesson's exercise)."""
    if x.dim() != 3 or x.shape[2] != 2:
        raise ValueError(f"x should be (batch, seq, 2) from adding_problem, got {tuple(x.shape)}")
    if not torch.equal(x[:, :, 1].sum(dim=1), torch.full((x.shape[0],), 2.0, dtype=x.dtype)):
        raise ValueError("every sequence of x should have exactly two markers")
    model = copy.deepcopy(model).cpu().double().eval()
    x = x.detach().cpu().double()
    return [float(_central_difference(model, x, steps).mean()) for steps in _marked_steps(x)]


def _run(job: dict) -> dict:
    """One training run (in a worker process or in this one, on one CPU thread)."""
    settings = {key: job[key] for key in TRAINING}
    history = train_adding(job["kind"], job["seq_length"], **settings, device="cpu", progress=False)
    result = {
        "model": job["model"],
        "seq_length": job["seq_length"],
        "seed": job["seed"],
        "lr": job["lr"],
        "steps": history.steps[-1],
        "training_seconds": round(history.seconds[-1], 1),
        "final_test_mse": history.final_test_loss,
        "best_test_mse": history.best_test_loss,
    }
    if job["probe_sequences"]:
        generator = torch.Generator().manual_seed(20_000 + job["seed"])
        probe, _ = adding_problem(job["probe_sequences"], job["seq_length"], generator=generator)
        result["marker_sensitivity"] = sensitivity(history.model, probe)
    return result


def choose_learning_rate(trials: list[dict], default: float, plateau: float = PLATEAU) -> float:
    """The learning rate whose short run ended with the lowest test MSE; ``default`` when every
    short run ended at the baseline (above ``plateau`` times it): such runs differ only by noise,
    and the lowest of them would be a draw."""
    if not trials:
        raise ValueError("trials is empty: expected one short run per candidate learning rate")
    best = min(trials, key=lambda t: t["final_test_mse"])
    if best["final_test_mse"] > plateau * ADDING_BASELINE_MSE:
        return default
    return best["lr"]


def _cost(job: dict) -> float:
    """A rough relative cost, to start the longest runs first."""
    per_step = {"RNN": 1.0, "GRU": 2.5, "LSTM": 1.2}[job["kind"]] * (job["hidden_size"] / 32)
    return per_step * job["seq_length"] * job["n_steps"]


def _map(pool: ProcessPoolExecutor | None, jobs: list[dict], label: str) -> list[dict]:
    """Run the jobs (the costliest first; in this process when ``pool`` is None), in the order
    given back."""
    order = sorted(range(len(jobs)), key=lambda i: -_cost(jobs[i]))
    results: list[dict | None] = [None] * len(jobs)
    started = time.perf_counter()
    if pool is None:
        finished = ((i, _run(jobs[i])) for i in order)
    else:
        futures = {pool.submit(_run, jobs[i]): i for i in order}
        finished = ((futures[f], f.result()) for f in as_completed(futures))
    for done, (index, result) in enumerate(finished, 1):
        results[index] = result
        print(
            f"\r{label}: {done}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s",
            end="",
            flush=True,
        )
    print()
    return results  # type: ignore[return-value]


def sweep(settings: dict, n_jobs: int) -> dict:
    """Choose each model's learning rate on short runs, then run every model, length and seed."""
    if n_jobs == 1:
        with cpu_threads(1):
            return _sweep(None, settings)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        n_jobs, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)
    ) as pool:
        return _sweep(pool, settings)


def _sweep(pool: ProcessPoolExecutor | None, settings: dict) -> dict:
    models = _models(settings)
    common = {k: settings[k] for k in ("batch_size", "eval_every", "n_test")}
    trials = [
        {
            **common,
            **info,
            "model": model,
            "seq_length": length,
            "seed": settings["lr_seed"],
            "lr": lr,
            "n_steps": settings["lr_steps"],
            "probe_sequences": 0,
        }
        for model, info in models.items()
        for length in settings["lengths"]
        for lr in settings["lr_candidates"]
    ]
    tried = _map(pool, trials, "learning rates")
    chosen = {
        (model, length): choose_learning_rate(
            [t for t in tried if (t["model"], t["seq_length"]) == (model, length)],
            settings["lr_default"],
        )
        for model in models
        for length in settings["lengths"]
    }
    jobs = [
        {
            **common,
            **info,
            "model": model,
            "seq_length": length,
            "seed": seed,
            "lr": chosen[model, length],
            "n_steps": settings["n_steps"],
            "probe_sequences": settings["probe_sequences"],
        }
        for model, info in models.items()
        for length in settings["lengths"]
        for seed in settings["seeds"]
    ]
    runs = _map(pool, jobs, "sweep")
    return {
        "settings": settings,
        "baseline_mse": ADDING_BASELINE_MSE,
        "models": models,
        "learning_rate_trials": [
            {k: t[k] for k in ("model", "seq_length", "lr", "final_test_mse")} for t in tried
        ],
        "runs": runs,
    }


def verdict(record: dict, solved: float, unsolved: float) -> tuple[bool, str]:
    summary = sweep_summary(record)
    shortest, longest = min(record["settings"]["lengths"]), max(record["settings"]["lengths"])

    def mean(model: str, length: int) -> float:
        return statistics.fmean(summary[model][length]["ratio"])

    plain = [m for m, info in record["models"].items() if info["kind"] == "RNN"]
    gated = [m for m, info in record["models"].items() if info["kind"] != "RNN"]
    ok = (
        all(mean(m, longest) < solved for m in gated)
        and all(mean(m, longest) > unsolved for m in plain)
        and mean("RNN", shortest) < solved
    )
    claim = (
        f"at T = {longest} the gated models below {solved:g} x baseline and the plain RNNs above "
        f"{unsolved:g} x; at T = {shortest} the RNN below {solved:g} x"
    )
    return ok, claim


def _command(argv: list[str]) -> str:
    """The command that made the measurement, without ``--plot`` (a picture of it, not a part)."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--plot"):
            skip = arg == "--plot"
            continue
        kept.append(arg)
    return " ".join(["python benchmarks/long_memory.py", *kept])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a tiny sweep that only runs the code")
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs in parallel (default 2; 1: in this process)"
    )
    parser.add_argument("--solved", type=float, default=0.1)
    parser.add_argument("--unsolved", type=float, default=0.5)
    parser.add_argument("--plot", type=Path, help="save the sweep's plot to this PNG")
    parser.add_argument("--json", type=Path, help="write the measurement to this JSON file")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")

    settings = dict(FAST if args.fast else FULL)
    started = time.perf_counter()
    record = sweep(settings, args.jobs)
    wall = time.perf_counter() - started
    record = {
        "command": _command(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__,
        "jobs": args.jobs,
        "wall_seconds": round(wall, 1),
        **record,
    }
    print(sweep_table(record))
    print(f"wall-clock time of the whole sweep: {wall:.0f} s with {args.jobs} job(s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"measurement written to {args.json}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_sweep(record).figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"plot saved to {args.plot}")
    if args.fast:
        return 0
    ok, claim = verdict(record, args.solved, args.unsolved)
    print(f"result {'holds' if ok else 'DOES NOT HOLD'}: {claim}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
