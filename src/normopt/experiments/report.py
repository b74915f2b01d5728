"""Reports: the terminal table, and a folder with summary.md, PNG plots, metrics.json and
config.json (the resolved config; ``normopt compare --config DIR/config.json`` repeats it)."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import normopt

# ----------------------------------------------------------------------------- environment


def environment(device: torch.device) -> dict[str, Any]:
    """Where and when the numbers were taken."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "normopt": normopt.__version__,
    }


# ----------------------------------------------------------------------------- formatting


def _g(x: float, digits: int = 4) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _pm(s: dict[str, float], digits: int = 4) -> str:
    if not math.isfinite(s["mean"]):
        return "diverged" if s["n"] else "—"
    return (
        f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
        if s["n"] > 1
        else f"{s['mean']:.{digits}f}"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(
        [fmt.format(*header), "-" * (sum(widths) + 2 * len(widths) - 2)]
        + [fmt.format(*r) for r in rows]
    )


def _pair(cpu: float, wall: float, digits: int) -> str:
    """CPU / wall: two times of one thing, CPU first."""
    return f"{_g(cpu, digits)} / {_g(wall, digits)}"


def compare_table(metrics: dict[str, Any], markdown: bool = False) -> str:
    ref = metrics["reference"]["optimizer"]
    seeds = metrics["config"]["seeds"]
    spread_note = " (mean ± std)" if seeds > 1 else ""
    lr = "lr (searched)" if metrics.get("tuning") else "lr"
    header = ["optimizer", lr, f"final val loss{spread_note}", "best val", "final train",
              "val acc", "ms/step CPU / wall", "train s CPU / wall"]  # fmt: skip
    if ref:
        header += [f"steps to {ref}", f"s to {ref} CPU / wall"]
    rows = []
    for s in metrics["summary"]:
        row = [
            s["optimizer"],
            f"{s['lr']:.3g}",
            _pm(s["final_val_loss"]),
            _g(s["best_val_loss"]["mean"]),
            _g(s["final_train_loss"]["mean"]),
            _g(s["final_val_acc"]["mean"], 3),
            _pair(s.get("median_step_cpu_ms", math.nan), s["median_step_ms"], 1),
            _pair(s.get("train_cpu_seconds", math.nan), s["train_seconds"], 1),
        ]
        if ref:
            reach = s.get("to_reference")
            partial = (
                f" ({reach['reached']}/{reach['seeds']})"
                if reach and 0 < reach["reached"] < reach["seeds"]
                else ""
            )
            row += [
                _g(s["steps_to_reference"], 0) + partial,
                _pair(s.get("cpu_seconds_to_reference", math.nan), s["seconds_to_reference"], 1),
            ]
        rows.append(row)
    return _table(header, rows, markdown)


def _mean_sd(s: dict[str, float], digits: int) -> str:
    if not s["n"] or not math.isfinite(s["mean"]):
        return "—"
    if s["n"] > 1:
        return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f}"


def load_warning(env: dict[str, Any]) -> str | None:
    """A sentence when the load average exceeded the CPUs while the runs trained."""
    load, cpus = env.get("load_average_max"), env.get("cpus_available")
    if load is None or cpus is None or not math.isfinite(load) or load <= cpus:
        return None
    return (
        f"The load average reached {load:.1f} on {cpus} CPU(s) while the runs trained (this "
        "job's own processes included): wall-clock times include time spent waiting for a "
        "CPU and are not comparable across runs; the CPU-time columns are."
    )


def verdict_text(metrics: dict[str, Any]) -> str:
    """One paragraph: the winner by final validation loss, every other optimizer's paired
    difference to it with a 95% interval and whether it is significant, steps and time to
    the reference optimizer's loss with their spread, and the warnings that apply."""
    v, cfg, env = metrics["verdict"], metrics["config"], metrics["environment"]
    seeds = v["seeds"]
    parts: list[str] = []
    if v["winner"] is None:
        parts.append(
            "**Verdict.** Every optimizer diverged on at least one seed: there is no winner."
        )
    else:
        w, wl = v["winner"], v["winner_loss"]
        over = f" ± {wl['std']:.4f} (mean ± sd over {seeds} seeds)" if seeds > 1 else " (1 seed)"
        parts.append(
            f"**Verdict.** {w} reached the lowest final validation loss, {wl['mean']:.4f}{over}."
        )
        items = []
        for o, d in v["pairs"].items():
            if d["n"] == 0:
                items.append(f"{o}: none (it diverged on {d['diverged']} of {seeds} seeds)")
                continue
            text = f"{o} {d['mean']:+.4f}"
            if d["n"] >= 2:
                sig = (
                    "significant"
                    if d["significant"]
                    else "not significant: the interval includes 0"
                )
                text += f" (95% interval {d['lo']:+.4f} to {d['hi']:+.4f}, {sig})"
            else:
                text += " (one seed: no interval)"
            if d["diverged"]:
                text += f", and it diverged on {d['diverged']} of {seeds} seeds"
            items.append(text)
        if items:
            parts.append(
                f"Each other optimizer's final validation loss minus {w}'s on the same seed "
                "(same init and batches), averaged over seeds: " + "; ".join(items) + "."
            )
    ref = metrics["reference"]["optimizer"]
    if ref:
        rows = []
        for s in metrics["summary"]:
            reach = s.get("to_reference")
            if s["optimizer"] == ref or not reach:
                continue
            if reach["reached"] == 0:
                rows.append(f"{s['optimizer']} never did")
                continue
            some = (
                ""
                if reach["reached"] == reach["seeds"]
                else f" on the {reach['reached']} of {reach['seeds']} seeds that got there"
            )
            rows.append(
                f"{s['optimizer']} after {_mean_sd(reach['steps'], 0)} steps, "
                f"{_mean_sd(reach['cpu_seconds'], 1)} s of CPU "
                f"({_mean_sd(reach['seconds'], 1)} s wall){some}"
            )
        if rows:
            parts.append(
                f"Reaching {ref}'s final validation loss (each seed's own; checked every "
                f"{cfg['eval_every']} steps, mean ± sd over seeds): " + "; ".join(rows) + "."
            )
    warnings = []
    if seeds == 1:
        warnings.append(
            "One seed: no interval, and no measure of how much of a difference is luck of the "
            "init and the data order; run --seeds 3 or more before trusting the order."
        )
    elif seeds < 3:
        warnings.append(
            f"Only {seeds} seeds: the intervals are wide (t = 12.7 at 2 seeds) and rest on a "
            "rough noise estimate; run --seeds 3 or more."
        )
    for o, bad in v["diverged"].items():
        warnings.append(
            f"{o} diverged on seed(s) {', '.join(map(str, bad))} (stopped early; a diverged "
            "run counts as inf)."
        )
    load = load_warning(env)
    if load:
        warnings.append(load)
    if warnings:
        parts.append("**Warning.** " + " ".join(warnings))
    return " ".join(parts)


def tuning_table(metrics: dict[str, Any], markdown: bool = False) -> str:
    """The learning-rate search of ``compare --tune``: per optimizer, its grid, what each
    rung kept, and the chosen learning rate with its full-budget loss."""
    tuning = metrics["tuning"]
    header = ["optimizer", "grid", "kept per rung", "best lr",
              f"its final val ({tuning['seeds']} seed(s))", "at an end", "search steps"]  # fmt: skip
    rows = []
    for opt, rec in tuning["optimizers"].items():
        grid = rec["grid"]
        kept = " → ".join(
            f"{len(r['kept'])} of {len(r['points'])} @ {r['steps']}" for r in rec["rungs"]
        )
        full = rec["rungs"][-1]["points"] + ([rec["probe"]] if rec.get("probe") else [])
        if rec.get("probe"):
            kept += f"; probe {rec['probe']['lr']:.3g}"
        final = next(p for p in full if p["lr"] == rec["best_lr"])
        rows.append(
            [
                opt,
                f"{grid[0]:.3g} … {grid[-1]:.3g} ({len(grid)})",
                kept,
                f"{rec['best_lr']:.3g}",
                _pm({"mean": final["mean"], "std": final["std"], "n": len(final["losses"])}),
                "yes" if rec["at_edge"] else "no",
                f"{rec['budget_steps']:,}",
            ]
        )
    return _table(header, rows, markdown)


def tuning_points_table(metrics: dict[str, Any]) -> str:
    """Markdown: every (optimizer, lr) of the search, its seed-mean final val loss per rung."""
    parts = []
    for opt, rec in metrics["tuning"]["optimizers"].items():
        header = ["lr"] + [f"{r['steps']} steps" for r in rec["rungs"]]
        rungs = [list(r["points"]) for r in rec["rungs"]]
        probe = rec.get("probe")
        if probe:  # a full-budget point, in the last column
            rungs[-1].append(probe)
        rows = []
        for lr in sorted({*rec["grid"], *([probe["lr"]] if probe else [])}):
            note = " (probe)" if probe and lr == probe["lr"] else ""
            row = [f"{lr:.3g}{note}" + (" (best)" if lr == rec["best_lr"] else "")]
            for points in rungs:
                p = next((p for p in points if p["lr"] == lr), None)
                row.append(
                    "—"
                    if p is None
                    else _pm({"mean": p["mean"], "std": p["std"], "n": len(p["losses"])})
                )
            rows.append(row)
        parts.append(f"**{opt}**\n\n" + _table(header, rows, True))
    return "\n\n".join(parts)


def _basin_text(b: dict[str, Any]) -> str:
    if not math.isfinite(b["width"]):
        return "—"
    at_least = "≥ " if b["open_low"] or b["open_high"] else ""
    return f"{b['lo']:.3g} … {b['hi']:.3g} ({at_least}×{b['width']:.3g}, {at_least}{b['octaves']:.1f} octaves)"


def sweep_table(metrics: dict[str, Any], markdown: bool = False) -> str:
    ref = metrics["reference"]["optimizer"]
    header = ["optimizer", "best lr", "best final val", "basin (lo … hi, width)"]
    if ref:
        header.append(f"LRs at or below {ref}'s best")
    header.append("diverged runs")
    rows = []
    for s in metrics["summary"]:
        b = s["basin"]
        row = [
            s["optimizer"],
            f"{b['best_lr']:.3g}" if math.isfinite(b["best_lr"]) else "—",
            _g(b["best_loss"]),
            _basin_text(b),
        ]
        if ref:
            row.append(_basin_text(s["beats_reference"]) if s["beats_reference"] else "—")
        runs = sum(p["final_val_loss"]["n"] for p in s["points"])
        row.append(f"{sum(p['diverged'] for p in s['points'])}/{runs}")
        rows.append(row)
    return _table(header, rows, markdown)


def sweep_grid_table(metrics: dict[str, Any]) -> str:
    """Markdown: final val loss at every (optimizer, lr) of the grid."""
    parts = []
    for s in metrics["summary"]:
        rows = [
            [f"{p['lr']:.3g}", _pm(p["final_val_loss"]), str(p["diverged"])] for p in s["points"]
        ]
        parts.append(
            f"**{s['optimizer']}**\n\n" + _table(["lr", "final val loss", "diverged"], rows, True)
        )
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- plots


def _figure(ncols: int) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    return Figure(figsize=(5.5 * ncols if ncols > 1 else 7.0, 4.5), layout="constrained")


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _colors(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def _styles(names: Sequence[str]) -> dict[str, str]:
    # Line styles too: near-identical optimizers (muon, torch-muon) stay distinguishable.
    return {n: ("-", "--", "-.", ":")[i % 4] for i, n in enumerate(names)}


def _cumulative(values: Sequence[float]) -> list[float]:
    out, t = [], 0.0
    for v in values:
        t += v
        out.append(t)
    return out


def _uses_cpu_time(metrics: dict[str, Any]) -> bool:
    """Time axes in CPU seconds for CPU runs that recorded them (they do not grow while a
    run waits for a CPU), else wall-clock seconds (a GPU's time is wall time)."""
    runs = metrics["runs"] + metrics.get("unfinished", [])
    return metrics["environment"]["device"] == "cpu" and all(r.get("step_cpu") for r in runs)


def _run_x(run: dict[str, Any], x_axis: str, cpu: bool) -> tuple[list[float], list[float]]:
    """x of every training step and of every validation of one run."""
    if x_axis == "step":
        return [float(i) for i in range(1, len(run["train_loss"]) + 1)], [
            float(s) for s in run["eval"]["step"]
        ]
    if cpu:
        return _cumulative(run["step_cpu"]), list(run["eval"]["cpu"])
    return _cumulative(run["step_time"]), list(run["eval"]["time"])


def _band(
    xs: list[list[float]], ys: list[list[float]]
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Over the common prefix of several curves: mean x, mean y, min y, max y."""
    n = min(len(y) for y in ys)
    mx = [sum(x[i] for x in xs) / len(xs) for i in range(n)]
    my = [sum(y[i] for y in ys) / len(ys) for i in range(n)]
    return (
        mx,
        my,
        [min(y[i] for y in ys) for i in range(n)],
        [max(y[i] for y in ys) for i in range(n)],
    )


def plot_curves(metrics: dict[str, Any], path: Path, x_axis: str) -> None:
    """Training (smoothed) and validation loss vs step or vs training seconds, per optimizer:
    with several seeds, the seed mean (of the runs that did not diverge) with a band from
    the lowest to the highest seed, and each seed faintly. Unfinished runs (a partial
    report) are dashed."""
    fig = _figure(2)
    ax_train, ax_val = fig.subplots(1, 2)
    runs = [dict(r, finished=True) for r in metrics["runs"]] + [
        dict(r, finished=False) for r in metrics.get("unfinished", [])
    ]
    names = list(dict.fromkeys(r["optimizer"] for r in runs))
    colors, styles = _colors(names), _styles(names)
    steps = metrics["config"]["steps"]
    window = max(1, steps // 50)
    cpu = _uses_cpu_time(metrics)
    lows = {ax_train: math.inf, ax_val: math.inf}
    for name in names:
        mine = [r for r in runs if r["optimizer"] == name]
        c, ls = colors[name], styles[name]
        several = len(mine) > 1
        labelled = False
        curves: dict[str, tuple[list[list[float]], list[list[float]]]] = {
            "train": ([], []),
            "val": ([], []),
        }
        for run in mine:
            loss = _smooth(run["train_loss"], window)
            x_train, x_val = _run_x(run, x_axis, cpu)
            val = run["eval"]["val_loss"]
            style = ls if run["finished"] else (0, (2, 2))
            label = None
            if not labelled and (not several or not run["finished"]):
                label = name + ("" if run["finished"] else " (unfinished)")
                labelled = True
            kw = {
                "color": c,
                "ls": style,
                "alpha": 0.3 if several else 0.85,
                "lw": 0.8 if several else 1.2,
            }
            ax_train.plot(x_train, loss, label=label, **kw)
            ax_val.plot(x_val, val, marker="." if not several else None, ms=3, **kw)
            lows[ax_train] = min([lows[ax_train], *(v for v in loss if math.isfinite(v))])
            lows[ax_val] = min([lows[ax_val], *(v for v in val if math.isfinite(v))])
            if several and run["finished"] and not run["diverged"]:
                curves["train"][0].append(x_train)
                curves["train"][1].append(loss)
                curves["val"][0].append(x_val)
                curves["val"][1].append(val)
        for ax, key in ((ax_train, "train"), (ax_val, "val")):
            xs, ys = curves[key]
            if len(ys) < 2:
                continue
            mx, my, lo, hi = _band(xs, ys)
            ax.fill_between(mx, lo, hi, color=c, alpha=0.15, lw=0)
            n = len(ys)
            ax.plot(
                mx,
                my,
                color=c,
                ls=ls,
                lw=1.8,
                label=f"{name} (mean of {n})" if ax is ax_train else None,
            )
    # Clip at the initial loss: a diverging run should not flatten everyone else's curve.
    top = max(r["eval"]["val_loss"][0] for r in runs)
    for ax, low in lows.items():
        if math.isfinite(low) and math.isfinite(top) and top > low:
            if low > 0 and top / low > 10:  # losses near 0 (classifiers): a log axis
                ax.set_yscale("log")
                ax.set_ylim(low / 1.2, top * 1.2)
            else:
                pad = 0.04 * (top - low)
                ax.set_ylim(low - pad, top + pad)
    if x_axis == "step":
        xlabel = "step"
    elif cpu:
        xlabel = "training CPU seconds (validation excluded)"
    else:
        xlabel = "training seconds, wall clock (validation excluded)"
    ax_train.set(
        title=f"train loss (mean over {window} steps)", xlabel=xlabel, ylabel="loss (nats)"
    )
    ax_val.set(title="validation loss", xlabel=xlabel, ylabel="loss (nats)")
    for ax in (ax_train, ax_val):
        ax.grid(alpha=0.3)
    ax_train.legend()
    seeds = metrics["config"]["seeds"]
    band = "; band: lowest to highest seed, seeds faint" if seeds > 1 else ""
    fig.suptitle(
        f"{metrics['task']['name']}: {seeds} seed(s){band}, {metrics['environment']['device']}"
    )
    fig.savefig(path, dpi=110)


def plot_sweep(metrics: dict[str, Any], path: Path) -> None:
    """Final validation loss vs learning rate, one line per optimizer, basins shaded."""
    fig = _figure(1)
    ax = fig.subplots()
    names = [s["optimizer"] for s in metrics["summary"]]
    colors = _colors(names)
    ceiling = metrics["initial_val_loss"]
    for s in metrics["summary"]:
        c = colors[s["optimizer"]]
        lrs = [p["lr"] for p in s["points"]]
        mean = [p["final_val_loss"]["mean"] for p in s["points"]]
        ok = [i for i, m in enumerate(mean) if math.isfinite(m)]
        lo = [mean[i] - s["points"][i]["final_val_loss"]["min"] for i in ok]
        hi = [s["points"][i]["final_val_loss"]["max"] - mean[i] for i in ok]
        hi = [h if math.isfinite(h) else 0.0 for h in hi]
        ax.errorbar([lrs[i] for i in ok], [mean[i] for i in ok], yerr=[lo, hi], color=c,
                    marker="o", ms=4, capsize=3, label=s["optimizer"])  # fmt: skip
        bad = [lrs[i] for i in range(len(lrs)) if i not in ok]
        if bad:
            ax.plot(bad, [ceiling] * len(bad), "x", color=c, ms=8)
        b = s["basin"]
        if math.isfinite(b["width"]):
            ax.axvspan(b["lo"], b["hi"], color=c, alpha=0.10)
            ax.hlines(b["threshold"], b["lo"], b["hi"], colors=[c], linestyles="dashed", lw=1)
    ref = metrics["reference"]
    if ref["optimizer"] and math.isfinite(ref["best_loss"] or math.nan):
        ax.axhline(ref["best_loss"], color="gray", ls=":", lw=1, label=f"{ref['optimizer']}'s best")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="final validation loss (nats)",
           title=f"{metrics['task']['name']}: LR sweep, {metrics['config']['steps']} steps, "
                 f"{metrics['config']['seeds']} seed(s)\nshaded: basin, {metrics['basin_rule']}")  # fmt: skip
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3, which="both")
    diverged = any(p["diverged"] for s in metrics["summary"] for p in s["points"])
    ax.legend(title="× at top: diverged" if diverged else None)
    fig.savefig(path, dpi=110)


def plot_lr_search(metrics: dict[str, Any], path: Path) -> None:
    """Small multiples, one per optimizer: seed-mean final val loss against lr at every rung
    of the search (the full-budget rung darkest), the chosen lr starred."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    records = metrics["tuning"]["optimizers"]
    n = len(records)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    cmap = colormaps["Blues"]
    for ax, (opt, rec) in zip(axes, records.items()):
        k = len(rec["rungs"])
        finite = [p["mean"] for r in rec["rungs"] for p in r["points"] if math.isfinite(p["mean"])]
        top = max(finite) if finite else 1.0
        for i, r in enumerate(rec["rungs"]):
            c = cmap(0.45 + 0.55 * (i + 1) / k)
            points = r["points"]
            if i == k - 1 and rec.get("probe"):  # the probe runs the full budget too
                points = sorted([*points, rec["probe"]], key=lambda p: p["lr"])
            ok = [p for p in points if math.isfinite(p["mean"])]
            ax.errorbar([p["lr"] for p in ok], [p["mean"] for p in ok],
                        yerr=[p["std"] for p in ok], color=c, marker="o", ms=3, capsize=2,
                        lw=1.2, label=f"{r['steps']} steps")  # fmt: skip
            bad = [p["lr"] for p in points if not math.isfinite(p["mean"])]
            if bad:
                ax.plot(bad, [top] * len(bad), "x", color=c, ms=7)
        ax.plot([rec["best_lr"]], [rec["best_loss"]], "*", color="crimson", ms=11, zorder=5)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide at this size
        ax.set_title(f"{opt}: best lr {rec['best_lr']:.3g}", fontsize=9)
        ax.set_xlabel("learning rate", fontsize=8)
        ax.set_ylabel("final val loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{metrics['task']['name']}: lr search, {metrics['tuning']['seeds']} seed(s) "
        "(× at the top: diverged)",
        fontsize=10,
    )
    fig.savefig(path, dpi=100)


# ----------------------------------------------------------------------------- files


def _jsonable(x: Any) -> Any:
    """Non-finite floats become null: strict JSON, readable anywhere."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def default_out(command: str, task: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"{command}-{task}-{stamp}"


def _header(metrics: dict[str, Any], out: Path, lead: Sequence[str] = ()) -> list[str]:
    """Title, then ``lead`` (paragraphs), then the task and the environment."""
    env, task, cfg = metrics["environment"], metrics["task"], metrics["config"]
    return [
        f"# normopt {metrics['command']}: {task['name']}",
        "",
        *[line for paragraph in lead for line in (paragraph, "")],
        f"{task['summary']}. {task['size']}.",
        "",
        f"- date: {env['date']}",
        f"- device: {env['device']} ({env['device_name']}), {env['cpu_count']} CPUs "
        f"({env.get('cpus_available', env['cpu_count'])} available to the job), "
        f"{env['torch_threads']} torch thread(s) per run; torch {env['torch']}, "
        f"normopt {env['normopt']}",
        *[f"- how the runs were trained: {p}" for p in env.get("parallel", [])],
        f"- load average: at most {_g(env.get('load_average_max', math.nan), 1)} while training"
        + (
            f"; {env['resumed_runs']} run(s) taken from the folder (resumed)"
            if env.get("resumed_runs")
            else ""
        ),
        f"- budget: {cfg['steps']} steps of batch {cfg['batch_size']}, {cfg['seeds']} seed(s), "
        f"schedule {cfg['schedule']} after {cfg['warmup']:g} warmup, weight decay {cfg['weight_decay']:g}, "
        f"AdamW part of hybrids at lr {cfg['adamw_lr']:g}",
        f"- reproduce: `normopt {metrics['command']} --config {out / 'config.json'}`",
        "",
    ]


def write_compare_report(metrics: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write_config(metrics, out)
    (out / "metrics.json").write_text(json.dumps(_jsonable(metrics), allow_nan=False) + "\n")
    plot_curves(metrics, out / "loss_vs_step.png", "step")
    plot_curves(metrics, out / "loss_vs_time.png", "time")
    ref = metrics["reference"]
    lines = _header(metrics, out, [verdict_text(metrics)])
    lines += [compare_table(metrics, markdown=True), ""]
    if metrics.get("tuning"):
        plot_lr_search(metrics, out / "lr_search.png")
        cfg = metrics["config"]
        lrs = ",".join(f"{s['optimizer']}={s['lr']:.6g}" for s in metrics["summary"])
        lines += [
            "Every learning rate above was chosen by the same search (table and plot below); "
            f"the comparison at them alone: `normopt compare --task {cfg['task']} "
            f"--optimizers {','.join(cfg['optimizers'])} --lr {lrs} "
            f"--adamw-lr {cfg['adamw_lr']:g}` (the AdamW part of hybrids stays at the lr the "
            "search held it at).",
            "",
            "![lr search](lr_search.png)",
            "",
            tuning_table(metrics, markdown=True),
            "",
            _tuning_method(metrics),
            "",
        ]
    if ref["optimizer"]:
        lines += [
            f"Steps / s to {ref['optimizer']}: on each seed, the first validation (every "
            f"{metrics['config']['eval_every']} steps) at which the optimizer's validation "
            f"loss is at or below {ref['optimizer']}'s final one on the same seed (seed mean "
            f"{_g(ref['val_loss'])}), averaged over the seeds that got there (their count in "
            "brackets when not all did).",
            "",
        ]
    lines += [
        "Final train loss: mean over the last 5% of steps. ms/step: median over steps of "
        "forward, backward and update; train s: their sum (validation excluded). CPU: the "
        "CPU time of the process that trained the run (one torch thread unless --threads "
        "says otherwise), which does not grow while the run waits for a CPU; wall: "
        "wall-clock time, which does, when the job's runs or other work share the CPUs. "
        "The time plot's axis is CPU seconds on a CPU, wall seconds on a GPU.",
        "",
        "![loss vs step](loss_vs_step.png)",
        "",
        "![loss vs time](loss_vs_time.png)",
        "",
        "## Routing of `normopt.Muon(model)` (`normopt.describe`)",
        "",
        "Hidden matrices get Muon; embeddings, the head (tied to the token embedding in the "
        "GPT), gains and biases get AdamW. torch-muon uses the same split, except that "
        "torch.optim.Muon takes 2-D tensors only: conv kernels go to its AdamW.",
        "",
        "```",
        metrics["routing"],
        "```",
        "",
    ]
    if metrics.get("tuning"):
        lines += ["## Every point of the lr search", "", tuning_points_table(metrics), ""]
    (out / "summary.md").write_text("\n".join(lines))


def write_partial_report(metrics: dict[str, Any], out: Path) -> None:
    """The report of an interrupted job (``metrics["partial"]``): its finished runs, the
    unfinished runs' curves so far (marked as such), and how to resume it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_jsonable(metrics), allow_nan=False) + "\n")
    runs, unfinished = metrics["runs"], metrics["unfinished"]
    if runs or unfinished:
        plot_curves(metrics, out / "loss_vs_step.png", "step")
        plot_curves(metrics, out / "loss_vs_time.png", "time")
    command = metrics["command"]
    signal_name = metrics.get("signal", "a signal")
    lead = (
        f"**Interrupted** ({signal_name}): a partial report. {len(runs)} run(s) finished "
        f"(each also in `runs/`), {len(unfinished)} did not: their curves so far are below "
        f"and dashed in the plots, marked unfinished. `normopt {command} --resume {out}` "
        "trains only what is missing and ends with the report of an uninterrupted job."
    )
    lines = _header(metrics, out, [lead])
    rows = [
        [r["optimizer"], f"{r['lr']:.3g}", str(r["seed"]), f"{r['steps_done']}/{r['steps']}",
         "diverged" if r["diverged"] else _g(r["final_val_loss"]),
         _pair(r.get("train_cpu_seconds", math.nan), r["train_seconds"], 1)]
        for r in runs
    ]  # fmt: skip
    lines += ["## Finished runs", ""]
    header = ["optimizer", "lr", "seed", "steps", "final val loss", "train s CPU / wall"]
    lines += [_table(header, rows, True) if rows else "(none)", ""]
    rows = [
        [r["optimizer"], f"{r['lr']:.3g}", str(r["seed"]), f"{r['steps_done']}/{r['steps']}",
         f"{_g(r['eval']['val_loss'][-1])} at step {r['eval']['step'][-1]}"
         if r["eval"]["val_loss"] else "—"]
        for r in unfinished
    ]  # fmt: skip
    lines += ["## Unfinished runs (curves so far)", ""]
    header = ["optimizer", "lr", "seed", "steps done", "last val loss"]
    lines += [_table(header, rows, True) if rows else "(none)", ""]
    if runs or unfinished:
        lines += ["![loss vs step](loss_vs_step.png)", "", "![loss vs time](loss_vs_time.png)", ""]
    (out / "summary.md").write_text("\n".join(lines))


def _tuning_method(metrics: dict[str, Any]) -> str:
    cfg = metrics["config"]
    factors = ", ".join(f"{f:g}" for f in cfg["tune_factors"])
    rungs = ", ".join(f"{f:g}" for f in cfg["tune_rungs"])
    return (
        f"The search (`--tune`, `normopt.experiments.tune`), the same for every optimizer: the "
        f"grid is its default learning rate times {factors}; successive halving trains every "
        f"surviving learning rate for each rung's fraction ({rungs}) of the {cfg['steps']} "
        f"steps (warmup and schedule compressed to the run's length) on "
        f"{metrics['tuning']['seeds']} seed(s), scores it by the seed-mean final validation "
        f"loss (a diverged seed: inf) and keeps the best ceil(n / {cfg['tune_eta']:g}) after "
        "every rung but the last; then one probe learning rate runs the full budget too (past "
        "the best when it is at an end of the last rung: the runner-up's mirror image through "
        "it; else the geometric midpoint of the best and the runner-up). The best "
        "full-budget learning rate is chosen, and its runs are this comparison's runs for "
        "those seeds. Search steps: the training steps each optimizer's search took (equal "
        "for all). At an end: the chosen lr is the smallest or largest that ran the full "
        "budget, so the optimum may lie beyond it."
    )


def write_sweep_report(metrics: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write_config(metrics, out)
    (out / "metrics.json").write_text(json.dumps(_jsonable(metrics), allow_nan=False) + "\n")
    plot_sweep(metrics, out / "sweep.png")
    lines = _header(metrics, out) + [
        f"Basin: the contiguous range of grid learning rates around the best whose seed-mean "
        f"final validation loss is {metrics['basin_rule']}; width = hi / lo "
        "(≥ when the basin reaches the end of the grid). A diverged run counts as outside.",
        "",
    ]
    if metrics["reference"]["optimizer"]:
        lines += [
            f"LRs at or below {metrics['reference']['optimizer']}'s best: the contiguous range "
            "around an optimizer's best whose seed-mean final loss is at or below the best "
            f"that {metrics['reference']['optimizer']} reached anywhere on its grid "
            f"({_g(metrics['reference']['best_loss'])}); — when it never gets there.",
            "",
        ]
    lines += [
        sweep_table(metrics, markdown=True),
        "",
        "![final loss vs lr](sweep.png)",
        "",
        "## Every point",
        "",
        sweep_grid_table(metrics),
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines))


def _write_config(metrics: dict[str, Any], out: Path) -> None:
    # The folder is not part of the experiment: a rerun from this file writes a new one.
    cfg = dict(metrics["config"], out=None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
