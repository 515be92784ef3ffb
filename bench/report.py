"""The table (each figure beside its target, met / missed), the JSON and the
PNG plot of latency and CPU against load."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Row:
    section: str
    figure: str
    value: float | None
    unit: str
    target: str = ""  # e.g. "≤ 6×"; empty = for information
    met: bool | None = None
    note: str = ""

    def shown(self) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "—"
        if self.value == math.inf:
            return "∞ (never)"
        value = self.value
        if self.unit in ("ms", "MB", "ms/job", "ms/update"):
            text = f"{value:.1f}" if value < 100 else f"{value:.0f}"
        elif self.unit in ("s",) or self.unit in ("×", "cores", "/job"):
            text = f"{value:.2f}"
        else:
            text = f"{value:.1f}"
        return f"{text} {self.unit}".strip()

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "info" if not self.target else "—"
        return "met" if self.met else "MISSED"


def check(value: float | None, limit: float, *, below: bool = True, inclusive: bool = False) -> bool | None:
    if value is None or math.isnan(value):
        return None
    if below:
        return value <= limit if inclusive else value < limit
    return value >= limit if inclusive else value > limit


def rows_for(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    tp = results.get("throughput")
    if isinstance(tp, dict) and "bot" in tp:
        bot, echo = tp["bot"], tp["echo"]
        per_job = bot.get("messages_per_job", bot["telegram_calls_per_job"])
        cap = 30 / per_job if per_job else math.nan
        rows += [
            Row("1 throughput", "delivered jobs/s at saturation", bot["jobs_per_s"], "jobs/s",
                note=f"{bot['inflight']} jobs open, {bot['vendor_seconds']:g} s at the vendor; "
                     f"30 messages/s ÷ {per_job:.2f} messages/job = {cap:.1f}"),
            Row("1 throughput", "Telegram calls per delivered job", bot["telegram_calls_per_job"], "/job",
                note=", ".join(f"{m} {n}" for m, n in bot["calls_per_job_by_method"].items())),
            Row("1 throughput", "bot CPU per delivered job", bot["cpu_ms_per_job"], "ms/job",
                note=f"bot {bot['bot_cores']:.2f} cores, harness {bot['harness_cores']:.2f} cores"),
            Row("1 throughput", "echo bot CPU per update (same run)", echo["cpu_ms_per_update"], "ms/update",
                note=f"at {echo['rate']:.1f} updates/s"),
            Row("1 throughput", "bot CPU/job ÷ echo CPU/update", tp["ratio"], "×", "≤ 6×", check(tp["ratio"], 6, inclusive=True)),
        ]
        at30 = tp.get("sustained_30")
        if at30:
            rows.append(Row("1 throughput", "bot CPU at 30 jobs/s sustained", at30["bot_cores"], "cores", "< 0.5 core",
                            check(at30["bot_cores"], 0.5),
                            note=f"rate limiter off for this run only (with it the bot cannot pass ~30/calls-per-job jobs/s); "
                                 f"delivered {at30['delivered_per_s']:.1f}/s, {at30['cpu_ms_per_job']:.1f} ms/job, "
                                 f"harness {at30['harness_cores']:.2f} cores"))
        rows.append(Row("1 throughput", "bot CPU at 30 jobs/s, from ms/job at saturation", tp["cores_at_30_jobs_per_s"], "cores"))
    elif tp is not None:
        rows.append(Row("1 throughput", "error", None, "", note=str(tp)[:100]))

    ack = results.get("ack")
    if isinstance(ack, dict) and "levels" in ack:
        for level in ack["levels"]:
            rate = level["rate"]
            unanswered = level["updates"] - level["answered"]
            note = f"{level['updates']} updates, bot {level['bot_cores_while_sending']:.2f} cores"
            if unanswered:
                note += f", {unanswered} unanswered after {level['seconds']:g}+timeout s"
            rows.append(Row("2 ack latency", f"ack p50 at {rate}/s", level["p50_ms"], "ms", note=note))
            reacted = f"{level['reactions']} of {level['updates']} acknowledged by a 👀 reaction first" if "reactions" in level else ""
            if rate == 200:
                rows.append(Row("2 ack latency", f"ack p95 at {rate}/s", level["p95_ms"], "ms", "< 100 ms",
                                check(level["p95_ms"], 100), note=reacted))
            else:
                rows.append(Row("2 ack latency", f"ack p95 at {rate}/s", level["p95_ms"], "ms", note=reacted))
            if "message_p95_ms" in level:
                rows.append(Row("2 ack latency", f"status message p95 at {rate}/s", level["message_p95_ms"], "ms",
                                note=f"p50 {level['message_p50_ms']:.0f} ms; held back by Telegram's 30 messages/s"))
        for level in ack["levels"]:
            if level["rate"] == 30:
                rows.append(Row("2 ack latency", "bot CPU while 30 /imagine/s arrive", level["bot_cores_while_sending"], "cores",
                                note="submits and acks only; see the throughput row for whole jobs"))
        diag = ack.get("without_limiter")
        if diag:
            rows.append(Row("2 ack latency", f"ack p95 at {diag['rate']}/s, rate limiter off (diagnostic)", diag["p95_ms"], "ms",
                            note=f"p50 {diag['p50_ms']:.0f} ms, bot {diag['bot_cores_while_sending']:.2f} cores"))
    elif ack is not None:
        rows.append(Row("2 ack latency", "error", None, "", note=str(ack)[:100]))

    lag = results.get("lag")
    if isinstance(lag, dict) and "polling" in lag:
        for name, limit in (("polling", 1.5), ("callbacks", 0.3)):
            summary = lag[name]["all"]
            rows.append(Row("3 delivery lag", f"lag p50, {name}", summary["lag_p50_s"], "s",
                            note=f"{summary['delivered']}/{summary['jobs']} delivered"))
            rows.append(Row("3 delivery lag", f"lag p95, {name}", summary["lag_p95_s"], "s", f"< {limit:g} s",
                            check(summary["lag_p95_s"], limit),
                            note="; ".join(f"{k} jobs p95 {v['lag_p95_s']:.2f} s" for k, v in lag[name]["by_length"].items())))
        for length, summary in lag["polling"]["by_length"].items():
            limit = 4 if length == "30s" else None
            rows.append(Row("4 vendor queries", f"queries per {length} job (polling), max", summary["queries_max"], "",
                            f"≤ {limit}" if limit else "", check(summary["queries_max"], limit, inclusive=True) if limit else None,
                            note=f"mean {summary['queries_mean']:.2f}"))
        for length, summary in lag["callbacks"]["by_length"].items():
            rows.append(Row("4 vendor queries", f"queries per {length} job (callbacks), max", summary["queries_max"], "",
                            "= 0", check(summary["queries_max"], 0, inclusive=True),
                            note=f"mean {summary['queries_mean']:.2f}, callbacks {summary['callbacks_mean']:.2f}/job"))
    elif lag is not None:
        rows.append(Row("3 delivery lag", "error", None, "", note=str(lag)[:100]))

    runs = results.get("policy")
    if isinstance(runs, dict) and "error" not in runs:
        for name, figures in runs.items():
            if not name.endswith(" policy"):
                continue
            vendor_mode = name.removesuffix(" policy")
            before = runs.get(f"{vendor_mode} before", {}).get("queries_per_job", math.nan)
            value = figures["queries_per_job"]
            limit = 0.0 if vendor_mode.endswith("callbacks") else before
            rows.append(Row("6 poll policy", f"{vendor_mode}: queries per job", value, "",
                            "= 0" if limit == 0.0 else f"≤ {before:.2f} (before)",
                            check(value, limit, inclusive=True),
                            note=f"before {before:.2f}; all {figures['seconds_for_all']:.1f} s"))
    elif runs is not None:
        rows.append(Row("6 poll policy", "error", None, "", note=str(runs)[:100]))

    comfy = results.get("comfyui")
    if isinstance(comfy, dict) and "long" in comfy:
        short, long = comfy["short"], comfy["long"]
        n = long["jobs"]
        rows += [
            Row("7 comfyui", f"websockets for {n} queued jobs", long["websockets"], "", "= 1",
                long["websockets"] == 1, note=f"{short['websockets']} for {short['jobs']}"),
            Row("7 comfyui", f"HTTP requests per job, {n} queued", long["http_per_job"], "/job",
                f"≤ {short['http_per_job'] * 1.25:.2f} (flat: {short['jobs']} queued × 1.25)",
                check(long["http_per_job"], short["http_per_job"] * 1.25, inclusive=True),
                note=", ".join(f"{r} {v}" for r, v in long["by_route_per_job"].items())),
            Row("7 comfyui", "delivery lag after the engine finished (p95)", long["lag_p95_s"], "s", "< 0.5 s",
                check(long["lag_p95_s"], 0.5), note=f"p50 {long['lag_p50_s']:.2f} s; {n} jobs of 5 s, one at a time"),
        ]
    elif comfy is not None:
        rows.append(Row("7 comfyui", "error", None, "", note=str(comfy)[:100]))

    scale = results.get("scale")
    if isinstance(scale, dict) and "bot" in scale:
        bot = scale["bot"]
        n = scale["pending_tasks"]
        rows += [
            Row("5 scale", f"bot RSS with {n:,} pending (peak)", bot["peak_rss_mb"], "MB", "< 150 MB", check(bot["peak_rss_mb"], 150),
                note=f"idle {bot['idle_rss_mb']:.0f} MB"),
            Row("5 scale", f"scheduler tick with {n:,} pending (p95, worst stage)", scale["tick_10000"]["worst_p95_ms"], "ms",
                "< 20 ms", check(scale["tick_10000"]["worst_p95_ms"], 20),
                note=f"idle poller p50 {scale['tick_10000']['idle_poller']['p50_ms']:.2f} ms; busy poller p50 "
                     f"{scale['tick_10000']['busy_poller']['p50_ms']:.2f} ms"),
            Row("5 scale", "scheduler tick with 10 pending (p95, worst stage)", scale["tick_10"]["worst_p95_ms"], "ms"),
            Row("5 scale", "restart → first delivery", bot["restart_to_first_delivery_s"], "s", "< 2 s",
                check(bot["restart_to_first_delivery_s"], 2),
                note=f"spawn → polling Telegram {bot['restart_to_ready_s']:.2f} s; "
                     f"{bot['result_photos']} photos for {bot['jobs_killed_at_vendor']} jobs"),
        ]
    elif scale is not None:
        rows.append(Row("5 scale", "error", None, "", note=str(scale)[:100]))
    return rows


def table(rows: list[Row]) -> str:
    headers = ("", "figure", "value", "target", "")
    body = [(r.section, r.figure, r.shown(), r.target or "—", r.verdict) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = []
    fmt = "  ".join(f"{{:{'>' if i == 2 else '<'}{w}}}" for i, w in enumerate(widths))
    lines.append(fmt.format(*headers))
    lines.append("  ".join("-" * w for w in widths))
    last = None
    for r, b in zip(rows, body):
        if last is not None and r.section != last:
            lines.append("")
        lines.append(fmt.format(b[0] if r.section != last else "", *b[1:]))
        last = r.section
    notes = [f"  {r.figure}: {r.note}" for r in rows if r.note]
    return "\n".join(lines) + ("\n\nNotes:\n" + "\n".join(notes) if notes else "")


def clean(value: Any) -> Any:
    """JSON without Infinity/NaN (written as null and "inf")."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf"
        return round(value, 6)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def write_json(path: Path, payload: dict[str, Any], rows: list[Row]) -> None:
    payload = dict(payload)
    payload["table"] = [
        {"section": r.section, "figure": r.figure, "value": r.value, "unit": r.unit, "target": r.target,
         "verdict": r.verdict, "note": r.note}
        for r in rows
    ]
    path.write_text(json.dumps(clean(payload), indent=2, ensure_ascii=False))


def plot(path: Path, results: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.8))
    ack = results.get("ack") if isinstance(results.get("ack"), dict) else {}
    levels = ack.get("levels", []) if ack else []
    if levels:
        rates = [lv["rate"] for lv in levels]
        finite = [lv[k] for lv in levels for k in ("p50_ms", "p95_ms") if math.isfinite(lv[k])]
        ceiling = max(finite) * 2 if finite else 1000.0
        for key, label, style in (("p50_ms", "p50", "o-"), ("p95_ms", "p95", "s-")):
            values = [lv[key] if math.isfinite(lv[key]) else None for lv in levels]
            line = left.plot(rates, values, style, label=f"ack {label}")[0]
            for rate, lv in zip(rates, levels):
                if not math.isfinite(lv[key]):  # some updates never answered
                    left.plot([rate], [ceiling], "^", color=line.get_color())
                    left.annotate(f"{label} ∞", (rate, ceiling), textcoords="offset points", xytext=(-30, 6), fontsize=8)
        diag = ack.get("without_limiter")
        if diag:
            left.plot([diag["rate"]], [diag["p95_ms"]], "r^", label="p95, rate limiter off (diagnostic)")
        left.axhline(100, color="grey", linestyle="--", linewidth=1, label="target p95 100 ms")
        left.set_yscale("log")
    left.set_xlabel("incoming /imagine updates per second")
    left.set_ylabel("update → first reply (ms)")
    left.set_title("Acknowledgement latency")
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)

    if levels:
        middle.plot([lv["rate"] for lv in levels], [lv["bot_cores_while_sending"] for lv in levels], "o-",
                    label="bot, while updates arrive")
    tp = results.get("throughput") if isinstance(results.get("throughput"), dict) else {}
    if tp and "bot" in tp:
        middle.plot([tp["bot"]["jobs_per_s"]], [tp["bot"]["bot_cores"]], "D", color="C2",
                    label=f"bot at saturation ({tp['bot']['jobs_per_s']:.1f} jobs/s delivered)")
        middle.plot([tp["echo"]["rate"]], [tp["echo"]["cores"]], "x", color="C3", markersize=9, label="echo bot")
        at30 = tp.get("sustained_30")
        if at30:
            middle.plot([at30["delivered_per_s"]], [at30["bot_cores"]], "P", color="C4", markersize=9,
                        label="bot, 30 jobs/s sustained (limiter off)")
        xs = [0, 30]
        middle.plot(xs, [x * tp["bot"]["cpu_ms_per_job"] / 1000 for x in xs], ":", color="C2",
                    label="bot, ms/job at saturation × jobs/s")
    middle.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="target 0.5 core at 30 jobs/s")
    middle.set_xlabel("load (updates or jobs per second)")
    middle.set_ylabel("CPU (cores)")
    middle.set_title("Bot CPU against load")
    middle.legend(fontsize=8)
    middle.grid(True, alpha=0.3)

    lag = results.get("lag") if isinstance(results.get("lag"), dict) else {}
    if lag and "polling" in lag:
        data, labels = [], []
        for mode in ("polling", "callbacks"):
            for length in lag[mode]["by_length"]:
                lags = [j["lag"] for j in lag[mode]["jobs"] if f"{j['vendor_seconds']:g}s" == length and math.isfinite(j["lag"])]
                data.append([max(x, 1e-3) for x in lags] or [float("nan")])
                labels.append(f"{mode}\n{length} jobs")
        right.boxplot(data, whis=(5, 95))
        right.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        right.axhline(1.5, color="grey", linestyle="--", linewidth=1, label="target p95 polling 1.5 s")
        right.axhline(0.3, color="grey", linestyle=":", linewidth=1, label="target p95 callbacks 0.3 s")
        right.set_yscale("log")
        right.set_ylabel("result ready → sendPhoto (s, log)")
        right.legend(fontsize=8, loc="center right")
    right.set_title("Delivery lag")
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
