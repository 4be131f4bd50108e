#!/usr/bin/python3
"""The table of `make bench-peers` (tests/bench/peers.sh), from the JSON files of one run.

usage: /usr/bin/python3 peers_table.py RUN_DIR      (standard library only)

RUN_DIR holds env.json, info_*.json, val_*.json, steps.tsv and r1/, r2/, ... with one JSON per
engine and cell (bench_peers / ort_run.js output). A round of a cell is clean when the machine
was quiet before the step and at most 3% of it ran other processes during the step. Each figure
is the median of its clean rounds, followed by [k/n] when only k of the n rounds were clean; with
no clean round it is the least noisy round's figure, marked *. Every round is listed under the
table.
"""
import glob
import json
import os
import statistics
import sys

FOREIGN_MAX = 0.03
ENGINES = ("fp32", "bf16", "ort")
CELLS = (
    ("img_b1", "images/s, batch 1"),
    ("img_b8", "images/s, batch 8"),
    ("img_b32", "images/s, batch 32"),
    ("txt15_b32", "texts/s, batch 32, ~15 tokens"),
    ("txtfull77_b32", "texts/s, batch 32, 77 real tokens"),
    ("txt77pad_b32", "texts/s, batch 32, padded to 77 (a)"),
)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def fmt(v, digits):
    """digits after the point; None: scientific (errors span orders of magnitude)."""
    if v is None:
        return "-"
    if digits is not None:
        return f"{v:,.{digits}f}"
    return f"{v:.2e}"


def main():
    run = sys.argv[1]
    env = load(os.path.join(run, "env.json"))
    engines = [e for e in ENGINES if e in env["engines"].split()]
    rounds = sorted(glob.glob(os.path.join(run, "r[0-9]*")), key=lambda p: int(p.rsplit("r", 1)[1]))
    steps = {}
    with open(os.path.join(run, "steps.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            label, state, busy, waited = line.rstrip("\n").split("\t")
            steps[label] = (state, int(busy), int(waited))

    def rounds_of(engine, cell):
        """[(figures, whole JSON, noisy, busy % before, foreign fraction during)] per round."""
        out = []
        for i, d in enumerate(rounds, 1):
            p = os.path.join(d, f"{engine}_{cell}.json")
            if not os.path.exists(p):
                continue
            r = load(p)
            v = r if cell == "first" else r["cells"][cell]
            state, busy, _ = steps.get(f"r{i} {engine} {cell}", ("noisy", -1, 0))
            foreign = v.get("foreign_frac")
            noisy = state != "quiet" or (foreign is not None and foreign > FOREIGN_MAX)
            out.append((v, r, noisy, busy, foreign))
        return out

    def med(vals):
        return statistics.median(vals) if vals else None

    def pick(rs, get):
        """(figure, mark) of a cell's rounds, by the rule in the module docstring."""
        clean = [get(v) for v, _, noisy, _, _ in rs if not noisy]
        if clean:
            return med(clean), "" if len(clean) == len(rs) else f" [{len(clean)}/{len(rs)}]"
        # no foreign figure (the `first` steps): the busy share seen before the step
        least = min(rs, key=lambda x: x[4] if x[4] is not None else x[3] / 100)
        return get(least[0]), " *"

    # rows: (label, {engine: (value, mark)}, kind, digits); kind "none" has no ratio column
    table = []
    detail = []
    for cell, label in CELLS:
        if cell not in env["cells"].split():
            continue
        row = {}
        for e in engines:
            rs = rounds_of(e, cell)
            if rs:
                row[e] = pick(rs, lambda v: v["per_s"])
                detail.append((f"{e} {cell}", ", ".join(
                    f"{v['per_s']:.2f} ({100 * (f or 0):.1f}%, pre {b}%{' *' if n else ''})"
                    for v, _, n, b, f in rs)))
        table.append((label, row, "speed", 2 if cell.startswith("img") else 1))

    # the fraction of the sgemm ceiling at batch 32 (the ceiling's own clean rounds, median)
    ceil_rs = []
    for i, d in enumerate(rounds, 1):
        p = os.path.join(d, "ceiling.json")
        if os.path.exists(p):
            c = load(p)
            state, busy, _ = steps.get(f"r{i} ceiling", ("noisy", -1, 0))
            ceil_rs.append((c, c, state != "quiet" or c["foreign_frac"] > FOREIGN_MAX, busy, c["foreign_frac"]))
    ceilings = [c["sgemm_gflops"] for c, _, _, _, _ in ceil_rs]
    ceiling, ceiling_mark = pick(ceil_rs, lambda c: c["sgemm_gflops"]) if ceil_rs else (None, "")
    gflop = load(os.path.join(run, "info_fp32.json"))["model"]["image_gflop"]
    b32 = next((r for label, r, _, _ in table if label == "images/s, batch 32"), None)
    if b32 and ceiling:
        table.append(("batch 32: model GFLOP/s / sgemm ceiling",
                      {e: (v * gflop / ceiling, mark) for e, (v, mark) in b32.items()}, "speed", 3))

    first_row, rss_first_row, rss_all_row = {}, {}, {}
    for e in engines:
        rs = rounds_of(e, "first")
        if rs:
            key = "script_start_to_result_s" if e == "ort" else "main_to_result_s"
            first_row[e] = pick(rs, lambda v: v[key])
            rss_first_row[e] = (med([v["vm_hwm_mb"] for v, _, _, _, _ in rs]), "")
            detail.append((f"{e} first", ", ".join(f"{v[key]:.3f} s (pre {b}%{' *' if n else ''})"
                                                   for v, _, n, b, _ in rs)))
        peaks = [load(p)["vm_hwm_mb"] for p in glob.glob(os.path.join(run, "r[0-9]*", f"{e}_*.json"))
                 if not p.endswith("_first.json")]
        if peaks:
            rss_all_row[e] = (max(peaks), "")
    table.append(("load to first image embedding, s (b)", first_row, "cost", 3))
    table.append(("peak RSS, load + 1 image, MiB", rss_first_row, "cost", 0))
    table.append(("peak RSS, both towers, any cell, MiB (c)", rss_all_row, "cost", 0))

    acc = {}
    for e in engines:
        if e == "ort":
            i = load(os.path.join(run, "val_ort_img.json"))["embeds"]
            t = load(os.path.join(run, "val_ort_txt.json"))["embeds"]
        else:
            v = load(os.path.join(run, f"val_{e}.json"))
            i, t = v["image_embeds"], v["text_embeds"]
        acc[e] = (i, t)
    n_img, n_txt = acc[engines[0]][0]["n"], acc[engines[0]][1]["n"]
    for k, (what, n) in enumerate((("image_embeds", n_img), ("text_embeds", n_txt))):
        table.append((f"{what} max abs error vs fp64 ({n} rows)",
                      {e: (acc[e][k]["max_abs"], "") for e in acc}, "cost", None))
        table.append((f"{what} min cosine vs fp64", {e: (acc[e][k]["min_cos"], "") for e in acc}, "none", 7))

    kern = {e: load(os.path.join(run, f"info_{e}.json"))["model"]["kernel"] for e in engines if e != "ort"}
    info = load(os.path.join(run, "info_fp32.json"))
    heads = {"fp32": f"clipeval fp32 ({kern.get('fp32', '')})", "bf16": f"clipeval bf16 ({kern.get('bf16', '')})",
             "ort": "ORT fp32 (MLAS)"}
    ratio_cols = [e for e in ("fp32", "bf16") if e in engines] if "ort" in engines else []
    cols = [heads[e] for e in engines] + [f"{e}/ORT" for e in ratio_cols]

    print(f"## make bench-peers: ViT-B/32, synthetic weights, {env['cpu']} ({env['ncpu']} vCPUs), 2 threads each")
    print()
    print(f"clipeval {info['clipeval']} ({env['commit']}), {env['ort']}, {env['date']}; "
          f"TARGET_S={env['target_s']}, median of {len(rounds)} interleaved rounds (ORT, fp32, bf16 per cell).")
    print(f"OpenBLAS: {info['blas']}, core {info['blas_core']}; OPENBLAS_CORETYPE "
          + (f"= {info['openblas_coretype_env']} (set by the environment, not by this benchmark)"
             if info["openblas_coretype_env"] else "unset (OpenBLAS chose the core)")
          + (f"; {info['blas_warning']}" if info["blas_warning"] else "") + ".")
    if ceiling:
        print(f"sgemm ceiling (OpenBLAS, 1536^3, 2 threads): {ceiling:.1f} GFLOP/s{ceiling_mark} "
              f"(rounds: {', '.join(f'{c:.1f}' for c in ceilings)}).")
    print()
    print("| | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label, row, kind, digits in table:
        cells = []
        for e in engines:
            if e in row and row[e][0] is not None:
                v, mark = row[e]
                cells.append(fmt(v, digits) + mark)
            else:
                cells.append("-")
        for e in ratio_cols:
            if kind != "none" and e in row and "ort" in row and row["ort"][0]:
                q = row[e][0] / row["ort"][0]
                cells.append(f"{q:.2f}" if q < 100 else f"{q:,.0f}")
            else:
                cells.append("")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print("Ratios are clipeval / ORT in every row: above 1 is faster in the speed rows, slower or "
          "larger in the time, memory and error rows.")
    print("(a) clipeval computes only positions 0..pool (the causal mask makes the rest irrelevant), so "
          "padding costs it nothing; ORT runs all 77 positions.")
    print("(b) clipeval: main() entry to the embedding (read the input, load + pack the weights, one image); "
          "ORT: script start to the embedding (load the addon, create the vision session, one image). "
          "Each a fresh process.")
    print("(c) The largest VmHWM of the per-cell processes (the model loaded whole, the batch's buffers); "
          "weights mapped from the file count as they are touched.")
    noisy_steps = [k for k, (s, _, _) in steps.items() if s != "quiet"]
    waited = sum(w for _, _, w in steps.values())
    print()
    print(f"Noise: {len(steps) - len(noisy_steps)} of {len(steps)} timed steps started on a quiet machine "
          f"(< {env['quiet_pct']}% busy), {waited} s spent waiting. A round is clean when the machine was "
          f"quiet before it and at most {100 * FOREIGN_MAX:.0f}% of it ran other processes during it; "
          "a figure is the median of its clean rounds, [k/n] when only k of n were clean, and * when "
          "none was (then the least noisy round).")
    print()
    print("Per round: figure (foreign CPU during the step, whole-machine busy before it; * not clean):")
    for name, text in detail:
        print(f"- {name}: {text}")


if __name__ == "__main__":
    main()
