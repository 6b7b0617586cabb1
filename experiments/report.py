"""The reproduction report: key numbers next to the paper's, and every figure, as markdown.

``key_numbers(summaries)`` reads each experiment's summary.json and returns rows
``{experiment, quantity, tmsjax, paper, note}``; ``render`` writes them and embeds the figures.
Paper values are those of Chen et al. (2023) as collected in PAPER_NOTES.md; quantities the paper
does not print have paper = None.
"""

from pathlib import Path

PAPER_LOSSES_C6 = {"6": 0.04819, "5+": 0.06180, "5": 0.06874, "4++": 0.09722, "4+": 0.10417, "4": 0.11111}
PAPER_LLC = {"6": 8.5, "5+": 8.5, "5": 7.0}


def _critical_points(summary):
    rows = []
    for record in summary.get("catalogues", {}).get("6", []):
        if record["label"] in PAPER_LOSSES_C6:
            rows.append(("loss " + record["label"], round(record["loss"], 5), PAPER_LOSSES_C6[record["label"]], ""))
        if record["label"] in PAPER_LLC:
            rows.append(("λ (Hessian rank / 2) " + record["label"], record["hessian_rank"] / 2, PAPER_LLC[record["label"]], "exact"))
    if "num_points" in summary and "6" in summary["num_points"]:
        rows.append(("critical points at c = 6", summary["num_points"]["6"], 18, ""))
    return rows


EXTRACTORS = {"critical_points": _critical_points}


def key_numbers(summaries: dict) -> list[dict]:
    rows = []
    for name, summary in summaries.items():
        extractor = EXTRACTORS.get(name)
        if extractor is None:
            continue
        try:
            extracted = extractor(summary)
        except (KeyError, TypeError, ValueError) as error:
            extracted = [("(could not read summary)", str(error), None, "")]
        for quantity, ours, paper, note in extracted:
            rows.append({"experiment": name, "quantity": quantity, "tmsjax": ours, "paper": paper, "note": note})
    return rows


def _fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def render(root: Path, status: dict, rows: list[dict]) -> str:
    lines = ["# tmsjax reproduction report", ""]
    lines += ["| experiment | status | seconds |", "|---|---|---|"]
    for name, info in status.items():
        seconds = "" if info.get("seconds") is None else f"{info['seconds']:.0f}"
        lines.append(f"| {name} | {info['status']} | {seconds} |")
    lines += ["", "## Key numbers next to the paper's", "", "| experiment | quantity | tmsjax | paper | note |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['experiment']} | {row['quantity']} | {_fmt(row['tmsjax'])} | {_fmt(row['paper'])} | {row['note']} |")
    failures = {n: s for n, s in status.items() if s["status"] == "failed"}
    if failures:
        lines += ["", "## Failures", ""]
        for name, info in failures.items():
            lines += [f"### {name}", "", "```", info.get("traceback", info.get("error", "")), "```", ""]
    lines += ["", "## Figures", ""]
    for name in status:
        folder = root / name
        figures = sorted([*folder.glob("*.png"), *folder.glob("*.gif")]) if folder.exists() else []
        if not figures:
            continue
        lines += [f"### {name}", ""]
        for figure in figures:
            lines += [f"![{figure.stem}]({figure.relative_to(root).as_posix()})", ""]
    return "\n".join(lines) + "\n"
