#!/usr/bin/env python3
"""Markdown table of `cpsim run --check` logs (one row per log: the largest relative L2 error per tensor over
the ranks, or the refusal). Used for the results/backend READMEs:  scripts/check_table.py DIR [DIR...]"""
import pathlib
import re
import sys

TENSORS = ("o", "lse", "dq", "dk", "dv")


def row(log: pathlib.Path) -> str:
    text = log.read_text(errors="replace")
    worst, failed = {}, False
    for m in re.finditer(r"^\s+\d+\s+(o|lse|dq|dk|dv)\s+(\S+)\s+\S+\s+(yes|NO)", text, re.M):
        t, v, ok = m.groups()
        failed |= ok == "NO"
        try:
            worst[t] = max(worst.get(t, 0.0), float(v))
        except ValueError:
            worst[t] = float("nan")
    for m in re.finditer(r"^\s+\d+\s+(o|lse|dq|dk|dv)\s+NO:", text, re.M):
        failed, worst[m.group(1)] = True, float("nan")
    refused = re.search(r"cpsim: error: (rank \d+ op .*|'workload.*)", text)
    if not worst:
        why = refused.group(1) if refused else text.strip().splitlines()[-1] if text.strip() else "no output"
        return f"| {log.stem} | refused | " + " | ".join("-" for _ in TENSORS) + f" | {why[:150]} |"
    cells = [("NaN" if v != v else f"{v:.1e}") if (v := worst.get(t)) is not None else "-" for t in TENSORS]
    return f"| {log.stem} | {'FAIL' if failed else 'pass'} | " + " | ".join(cells) + " | |"


def main() -> None:
    print("| run | result | " + " | ".join(TENSORS) + " | why refused |")
    print("|---|---|" + "---|" * len(TENSORS) + "---|")
    for d in sys.argv[1:]:
        for log in sorted(pathlib.Path(d).glob("check*.log")):
            print(row(log))


if __name__ == "__main__":
    main()
