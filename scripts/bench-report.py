#!/usr/bin/env python3
"""The report of scripts/bench (issue 8): reads what the benchmark scripts wrote (target/bench-*.json),
prints a table (figure, measured, goal, met?), and writes it as JSON (OUT/bench.json) and as a chart
(OUT/bench.svg: each figure divided by its goal, one bar per figure, the goal a line at 1).

A figure whose file is missing, or whose step failed in the last run (OUT/logs/STEP.failed, written by
scripts/bench), is "not run", with the reason. Python's standard library only.

Usage: scripts/bench-report.py [--target DIR] [--out DIR] [--projects ripgrep@15.1.0,CRATE@VERSION,…]
(--target: where the scripts wrote, default target/; --out: default TARGET/bench; --projects: the crates
scripts/bench-build measured, ripgrep's in bench-build.json, another's in bench-build-CRATE.json.)
"""

import argparse
import datetime
import html
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What each letter of issue 8 measures, with its goal: (unit, operator, goal).
GOALS = {
    "a": ("ratio", "<=", 0.05),
    "b": ("ratio", "<=", 1.05),
    "c": ("ratio", "<=", 0.3),
    "d": ("ms", "<=", 50.0),
    "e": ("bytes", "<=", 0),
    "f": ("ratio", "<=", 1.1),
}


class Inputs:
    """The benchmark scripts' files, and why one is unusable."""

    def __init__(self, target, out):
        self.target = target
        self.logs = out / "logs"
        self.used = {}

    def load(self, step, name, only):
        """(data, None), or (None, the reason it is not run)."""
        failed = self.logs / f"{step}.failed"
        if failed.exists():
            return None, f"{failed.read_text().strip()} (log: {display(self.logs / f'{step}.log')})"
        path = self.target / name
        if not path.exists():
            return None, f"no {display(path)}: run scripts/bench --only {only}"
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            return None, f"{display(path)} is not JSON: {error}"
        self.used[display(path)] = iso(path.stat().st_mtime)
        return data, None


def display(path):
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def iso(timestamp):
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def hyperfine(data):
    return {result["command"]: result for result in data["results"]}


def row(key, figure, project, measured=None, detail="", reason=None, source=None, goal=None):
    """One figure; `key` is its letter of issue 8, then what tells it from the letter's other rows."""
    letter = key.split(":")[0]
    unit, op, value = goal if goal else GOALS[letter]
    entry = {
        "id": key,
        "letter": letter,
        "figure": figure,
        "project": project,
        "measured": measured,
        "unit": unit,
        "goal": value,
        "goal_op": op,
        "detail": detail,
        "source": source,
    }
    if measured is None:
        entry.update(met=None, status="not run", reason=reason)
    elif value is None:
        entry.update(met=None, status="info")
    else:
        met = measured <= value if op == "<=" else measured >= value
        entry.update(met=met, status="met" if met else "missed")
    return entry


def info(key, figure, project, measured, unit, detail, source, goal=None, op="<="):
    return row(key, figure, project, measured, detail, source=source, goal=(unit, op, goal))


def seconds(value):
    return f"{value:.2f} s"


def size(value):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def fmt(value, unit):
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"
    if unit == "bytes":
        return size(value)
    if unit == "s":
        return seconds(value)
    return f"{value:.3f}"


def goal_text(entry):
    if entry["goal"] is None:
        return ""
    op = {"<=": "≤", ">=": "≥"}[entry["goal_op"]]
    if entry["unit"] == "bytes" and entry["goal"] == 0:
        return "0 B"
    unit = {"ms": " ms", "s": " s", "bytes": " B"}.get(entry["unit"], "")
    return f"{op} {entry['goal']:g}{unit}"


def build_rows(inputs, crate):
    """(a) and (b) for one crate (CRATE@VERSION): scripts/bench-build's hyperfine results."""
    project, _, version = crate.partition("@")
    name = "bench-build.json" if project == "ripgrep" else f"bench-build-{project}.json"
    data, reason = inputs.load(f"build-{project}", name, "a,b")
    label = (data or {}).get("project") or f"{project} {version}".strip()
    source = f"target/{name}"
    if data is None:
        return [
            row(f"a:{project}", "model phase / cargo build --release", label, reason=reason, source=source),
            row(f"b:{project}", "--engine local=2 / cargo build --release -j2", label, reason=reason, source=source),
        ]
    r = hyperfine(data)
    model, real = r["model phase"]["mean"], r["cargo build --release"]["mean"]
    ours, cargo = r["lambdabuild local=2"]["mean"], r["cargo build --release -j2"]["mean"]
    runs = len(r["model phase"].get("times", []))
    # The same build twice (cargo's default -j is -j2 here): how far apart two identical commands fell.
    same = data.get("ratios", {}).get("same build")
    noise = f"; the same cargo build twice: {same['ratio']:.3f}" if same else ""
    return [
        row(f"a:{project}", "model phase / cargo build --release", label, model / real,
            f"{seconds(model)} / {seconds(real)}, {runs} rounds", source=source),
        row(f"b:{project}", "--engine local=2 / cargo build --release -j2", label, ours / cargo,
            f"{seconds(ours)} / {seconds(cargo)}, {runs} rounds{noise}", source=source),
    ]


def ci_rows(inputs):
    data, reason = inputs.load("ci", "bench-ci.json", "c")
    source = "target/bench-ci.json"
    figure = "warm-store rebuild / sccache warm (empty target dir)"
    if data is None:
        return [row("c", figure, "ripgrep 15.1.0", reason=reason, source=source)], []
    rebuild = data["warm_rebuild_s"]
    main = row("c", figure, "ripgrep 15.1.0", data["warm_rebuild_ratio"],
               f"{seconds(rebuild['rustc-model'])} / {seconds(rebuild['sccache'])}, {data['units']} units",
               source=source)
    also = [
        info(f"c:{command}", f"{command}, median", "ripgrep 15.1.0", figures["median"], "ms",
             f"mean {figures['mean']:.1f} ms", source, goal=30.0)
        for command, figures in data["wrapper_overhead_ms"].items()
    ]
    return [main], also


def lambda_rows(inputs):
    data, reason = inputs.load("lambda", "bench-lambda.json", "d")
    source = "target/bench-lambda.json"
    figure = "per-thunk overhead on the emulated Lambda, median"
    if data is None:
        return [row("d", figure, "ripgrep 15.1.0 (dev)", reason=reason, source=source)], []
    warm, cold = data["warm"]["lambda"], data["cold"]["lambda"]
    main = row("d", figure, "ripgrep 15.1.0 (dev)", float(warm["overhead_ms_median"]),
               f"p95 {warm['overhead_ms_p95']} ms, {warm['invocations']} invocations, lambda={data['jobs']}",
               source=source)
    starts = f"{cold['cold_starts']} cold start" + ("" if cold["cold_starts"] == 1 else "s")
    also = [info("d:cold start", "cold start (toolchain layer fetched and unpacked)", "ripgrep 15.1.0 (dev)",
                 float(cold["cold_start_ms"]), "ms", starts, source)]
    return [main], also


def upload_rows(inputs):
    data, reason = inputs.load("upload", "bench-upload.json", "e")
    source = "target/bench-upload.json"
    figures = (("same_machine", "unchanged re-upload, same machine"),
               ("fresh_machine", "unchanged re-upload, a machine new to the bucket"))
    if data is not None and "reupload" not in data:
        data, reason = None, "target/bench-upload.json predates the re-upload figures: run scripts/bench --only e"
    if data is None:
        return [row(f"e:{key}", figure, "ripgrep 15.1.0 + toolchain", reason=reason, source=source)
                for key, figure in figures], []
    rows = []
    for key, figure in figures:
        report = data["reupload"][key]
        requests = report["requests"]
        methods = ", ".join(f"{n} {method}" for method, n in sorted(requests.items()) if method != "total")
        plural = "" if requests["total"] == 1 else "s"
        entry = row(f"e:{key}", figure, "ripgrep 15.1.0 + toolchain", float(report["bytes"]),
                    f"{requests['total']} request{plural} ({methods or 'none'}), {report['uploaded']} of "
                    f"{report['objects']} objects sent", source=source)
        entry["requests"] = requests
        rows.append(entry)
    r = hyperfine(data)
    ours, theirs = r["lambdabuild upload"]["mean"], r["PutObject loop"]["mean"]
    graph = data["graph"]
    also = [info("e:throughput", "upload throughput / PutObject loop", "ripgrep 15.1.0 + toolchain",
                 theirs / ours, "ratio",
                 f"{seconds(ours)} vs {seconds(theirs)} for {graph['objects']} objects, {size(graph['bytes'])}",
                 source, goal=0.9, op=">=")]
    return rows, also


def predict_rows(inputs):
    data, reason = inputs.load("predict", "bench-predict.json", "f")
    source = "target/bench-predict.json"
    figure = "predicted makespan at 1,000 workers / critical path"
    project = (data or {}).get("project", "ripgrep 15.1.0")
    if data is not None and "not_run" in data:
        data, reason = None, data["not_run"]
    if data is None:
        return [row("f", figure, project, reason=reason, source=source)], [], None
    by_workers = {entry["workers"]: entry for entry in data["rows"]}
    also = [
        info(f"f:{n}", f"predicted makespan, {n:,} worker" + ("" if n == 1 else "s"), project,
             entry["predicted_s"], "s",
             f"{entry['ratio_to_critical_path']:.3f} × critical path, ${entry['cost_usd']:.4f}", source)
        for n, entry in sorted(by_workers.items())
    ]
    critical = data["critical_path_s"]
    if 1000 not in by_workers:
        return [row("f", figure, project, reason="the prediction has no row for 1,000 workers", source=source)], \
            also, data
    at_1000 = by_workers[1000]
    main = row("f", figure, project, at_1000["ratio_to_critical_path"],
               f"{seconds(at_1000['predicted_s'])} / {seconds(critical)}, ${at_1000['cost_usd']:.4f}",
               source=source)
    return [main], also, data


def toolchain_rows(inputs):
    data, reason = inputs.load("toolchain", "bench-toolchain.json", "toolchain")
    if data is None:
        return []
    r = hyperfine(data)
    cold, warm = r["cold"]["mean"], r["warm"]["mean"]
    return [info("toolchain", "naming the toolchain, warm / cold", "", warm / cold, "ratio",
                 f"{warm * 1000:.0f} ms / {cold * 1000:.0f} ms", "target/bench-toolchain.json")]


def command_output(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine():
    cpu = None
    memory = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    dirty = command_output("git", "status", "--porcelain", "--untracked-files=no")
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory,
        "rustc": command_output("rustc", "-V"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "commit": command_output("git", "rev-parse", "HEAD"),
        "dirty": bool(dirty) if dirty is not None else None,
    }


def met_text(entry, notes):
    if entry["status"] == "not run":
        notes.setdefault(entry["reason"], len(notes) + 1)
        return f"not run [{notes[entry['reason']]}]"
    return {"met": "yes", "missed": "NO", "info": ""}[entry["status"]]


def measured_text(entry):
    if entry["measured"] is None:
        return "—"
    value = fmt(entry["measured"], entry["unit"])
    return f"{value}  ({entry['detail']})" if entry["detail"] else value


def print_table(rows, title):
    """A plain-text table; the reasons for figures not run follow it as numbered notes."""
    notes = {}
    lines = [(f"({r['letter']}) {r['figure']}" + (f", {r['project']}" if r["project"] else ""),
              measured_text(r), goal_text(r), met_text(r, notes)) for r in rows]
    header = ("figure", "measured", "goal", "met?")
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(3)]
    print(title)
    for line in [header, tuple("-" * w for w in widths) + ("----",), *lines]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:3])) + "  " + line[3])
    for reason, number in notes.items():
        print(f"  [{number}] {reason}")


def normalised(entry):
    """The figure divided by its goal (so 1 is the goal and less is better), None when not run."""
    value, goal = entry["measured"], entry["goal"]
    if value is None:
        return None
    if entry["goal_op"] == ">=":
        return goal / value if value else float("inf")
    if goal == 0:
        return 0.0 if value <= 0 else float("inf")
    return value / goal


def svg(rows, machine_info, path):
    width, left, right = 1000, 410, 820
    top, step, bar = 92, 46, 20
    height = top + step * len(rows) + 64
    ratios = [n for n in map(normalised, rows) if n is not None]
    finite = [n for n in ratios if n != float("inf")]
    axis = max(1.5, min(3.0, max(finite, default=1.0) * 1.1))
    axis = float(int(axis * 2 + 0.999)) / 2

    def x(n):
        return left + (right - left) * min(n, axis) / axis

    def text(x_, y_, content, size=13, anchor="start", weight="normal", fill="#222", style="normal"):
        # A white outline under the letters keeps a label readable where it crosses the goal line.
        return (f'<text x="{x_:.1f}" y="{y_:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
                f'font-style="{style}" fill="{fill}" stroke="#fff" stroke-width="3" paint-order="stroke">'
                f'{html.escape(content)}</text>')

    commit = (machine_info["commit"] or "unknown")[:12] + (" (modified)" if machine_info["dirty"] else "")
    subtitle = (f"{machine_info['cores']} cores, {machine_info['cpu'] or 'unknown CPU'}, {machine_info['rustc']}, "
                f"commit {commit}, {machine_info['date']}")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        text(20, 30, "cargo-lambdabuild: each figure against its goal (scripts/bench)", 18, weight="bold"),
        text(20, 52, subtitle, 12, fill="#555"),
        text(20, 72, "bar = measured ÷ goal: left of the goal line meets it", 12, fill="#555"),
    ]
    bottom = top + step * len(rows)
    ticks = [i / 2 for i in range(int(axis * 2) + 1)]
    for tick in ticks:
        colour = "#333" if tick == 1 else "#ddd"
        dash = ' stroke-dasharray="6 4"' if tick == 1 else ""
        out.append(f'<line x1="{x(tick):.1f}" y1="{top - 8}" x2="{x(tick):.1f}" y2="{bottom}" stroke="{colour}" '
                   f'stroke-width="{2 if tick == 1 else 1}"{dash}/>')
        label = "goal" if tick == 1 else f"{tick:g}×"
        out.append(text(x(tick), bottom + 18, label, 12, anchor="middle", fill="#333" if tick == 1 else "#777"))
    for i, entry in enumerate(rows):
        y = top + step * i
        out.append(text(20, y + 13, f"({entry['letter']}) {entry['figure']}", 13))
        out.append(text(20, y + 30, entry["project"] or "", 11, fill="#666"))
        n = normalised(entry)
        if n is None:
            out.append(f'<rect x="{left}" y="{y}" width="{right - left}" height="{bar}" fill="#f1f1f1"/>')
            reason = entry["reason"] if len(entry["reason"]) <= 54 else entry["reason"][:53] + "…"
            out.append(text(left + 8, y + 15, f"not run: {reason}", 12, fill="#777", style="italic"))
            continue
        colour = "#2e7d32" if entry["met"] else "#c62828"
        end = max(x(n), left + 2)
        out.append(f'<rect x="{left}" y="{y}" width="{end - left:.1f}" height="{bar}" fill="{colour}"/>')
        if n > axis:
            out.append(f'<path d="M{end:.1f} {y} l10 {bar / 2} l-10 {bar / 2} z" fill="{colour}"/>')
        label = f"{fmt(entry['measured'], entry['unit'])} (goal {goal_text(entry)})"
        out.append(text(min(end, right) + 14 if n > axis else end + 6, y + 15, label, 12, fill=colour,
                        weight="bold"))
    if any(entry["measured"] is None for entry in rows):
        out.append(text(20, bottom + 44, "Not run: no figure yet; bench.json and the printed table say why.", 11,
                        fill="#777"))
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=REPO / "target")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--projects", default="ripgrep@15.1.0")
    args = parser.parse_args()
    out = args.out or args.target / "bench"
    out.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(args.target, out)

    projects = [p for p in args.projects.split(",") if p]
    built = [build_rows(inputs, project) for project in projects]
    rows = [pair[0] for pair in built] + [pair[1] for pair in built]
    ci, ci_also = ci_rows(inputs)
    lam, lambda_also = lambda_rows(inputs)
    upload, upload_also = upload_rows(inputs)
    predict, predict_also, scale_out = predict_rows(inputs)
    rows += ci + lam + upload + predict
    also = ci_also + lambda_also + upload_also + predict_also + toolchain_rows(inputs)

    machine_info = machine()
    report = {
        "machine": machine_info,
        "rows": rows,
        "also": also,
        "scale_out": scale_out,
        "inputs": inputs.used,
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    svg(rows, machine_info, out / "bench.svg")

    print_table(rows, "Issue 8 figures:")
    if also:
        print()
        print_table(also, "Also measured:")
    print()
    for name, modified in inputs.used.items():
        print(f"from {name} ({modified})")
    print(f"wrote {display(out / 'bench.json')} and {display(out / 'bench.svg')}")
    counts = {status: sum(r["status"] == status for r in rows) for status in ("met", "missed", "not run")}
    print(f"{counts['met']} met, {counts['missed']} missed, {counts['not run']} not run")


if __name__ == "__main__":
    sys.exit(main())
