#!/usr/bin/env python3
"""Turn scripts/bench timings into a markdown report (stdout).

    bench_report.py RESULTS.tsv META.txt

RESULTS.tsv: rep, tool, op, wall s, user s, sys s, peak RSS KiB, stored bytes (or -).
META.txt: key=value lines (date, commit, machine, corpus). Medians over repetitions.
"""

import statistics
import sys

MIB = 1 << 20


def load(path):
    runs = {}
    order = []
    with open(path) as f:
        for line in f:
            rep, tool, op, wall, user, sys_, rss, stored = line.rstrip("\n").split("\t")
            key = (tool, op)
            if key not in runs:
                runs[key] = []
                order.append(key)
            runs[key].append(
                {
                    "wall": float(wall),
                    "cpu": float(user) + float(sys_),
                    "rss": int(rss) / 1024,  # KiB -> MiB
                    "stored": None if stored == "-" else int(stored),
                }
            )
    return runs, order


def cell(text):
    """Markdown table cell: escape the pipe in names like `tar | pigz`."""
    return text.replace("|", "\\|")


def med(rows, field):
    vals = [r[field] for r in rows if r[field] is not None]
    return statistics.median(vals) if vals else None


def main():
    results, meta_path = sys.argv[1], sys.argv[2]
    meta = {}
    with open(meta_path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    runs, order = load(results)
    m = {k: {f: med(v, f) for f in ("wall", "cpu", "rss", "stored")} for k, v in runs.items()}
    corpus_bytes = int(meta["corpus_bytes"])

    out = []
    p = out.append
    p(f"## blobpipe benchmark — {meta['date']}")
    p("")
    p(f"- commit `{meta['commit']}`; {meta['versions']}")
    p(f"- machine: {meta['cpu']}, nproc {meta['nproc']}, {meta['mem']}, kernel {meta['kernel']}")
    p(f"- load average (1/5/15 min) before -> after: {meta['load']}")
    p(
        f"- corpus: {'small subset' if meta['small'] == '1' else 'full'}, "
        f"{corpus_bytes / MIB:,.0f} MiB in {int(meta['corpus_files']):,} files "
        f"(`{meta['corpus']}`); page cache warm (read once, never dropped)"
    )
    if meta.get("corpus_note"):
        p(f"- **{meta['corpus_note']}**")
    p(f"- repetitions: {meta['repeat']} (median shown; pairs alternate order)")
    p("")
    p("| tool | op | wall s | CPU s | CPU/wall | peak RSS MiB | MB/s | stored MiB |")
    p("|---|---|---:|---:|---:|---:|---:|---:|")
    for key in order:
        r = m[key]
        tool, op = key
        data = corpus_bytes * (2 if "2×" in op else 1)
        stored = f"{r['stored'] / MIB:,.0f}" if r["stored"] is not None else ""
        p(
            f"| {cell(tool)} | {cell(op)} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['cpu'] / max(r['wall'], 0.01):.2f} "
            f"| {r['rss']:.0f} | {data / 1e6 / max(r['wall'], 0.01):.0f} | {stored} |"
        )
    p("")
    p("MB/s = corpus bytes (uncompressed) / wall. CPU = user + sys of the command and its children;")
    p("peak RSS of a shell pipeline is that of its largest process.")
    p("")

    def get(tool, op):
        return m.get((tool, op))

    bpg = get("blobpipe gzip-6", "backup")
    bpz = get("blobpipe zstd-3", "backup")
    bpr = get("blobpipe zstd-3", "restore")
    bpv = get("blobpipe zstd-3", "verify --full")
    pigz = get("tar | pigz -p2 -6", "backup")
    zstd = get("tar | zstd -T2 -3", "backup")
    rb = get("restic", "backup")
    rr = get("restic", "restore")
    rc = get("restic", "check --read-data")

    # (ratio name, wall ratio, CPU ratio, target text, passes?)
    checks = []

    def ratio(name, a, b, target, ok):
        if a is None or b is None:
            return
        v = a["wall"] / b["wall"]
        cpu = a["cpu"] / max(b["cpu"], 0.01)
        checks.append((name, f"{v:.2f}×", f"{cpu:.2f}×", target, ok(v)))

    ratio("blobpipe gzip-6 backup / tar | pigz -p2 -6", bpg, pigz, "≤ 0.75×", lambda v: v <= 0.75)
    ratio("blobpipe zstd-3 backup / tar | zstd -T2 -3", bpz, zstd, "≤ 1.5×", lambda v: v <= 1.5)
    ratio("restic backup / blobpipe zstd-3 backup", rb, bpz, "≥ 3×", lambda v: v >= 3)
    ratio("restic restore / blobpipe restore", rr, bpr, "≥ 2×", lambda v: v >= 2)
    ratio("restic check --read-data / blobpipe verify --full", rc, bpv, "> 1×", lambda v: v > 1)

    bp_rss = {k: v["rss"] for k, v in m.items() if k[0].startswith("blobpipe")}
    if bp_rss:
        worst_key = max(bp_rss, key=bp_rss.get)
        worst = bp_rss[worst_key]
        checks.append(
            (
                f"blobpipe peak RSS, worst op ({worst_key[1]})",
                f"{worst:.0f} MiB",
                "",
                "< 128 MiB",
                worst < 128,
            )
        )
    one = m.get(("blobpipe zstd-3", "backup"))
    two = m.get(("blobpipe zstd-3", "backup (2× corpus)"))
    if one and two:
        growth = two["rss"] / one["rss"]
        checks.append(
            (
                "blobpipe backup peak RSS, 2× corpus / 1× corpus",
                f"{two['rss']:.0f} / {one['rss']:.0f} MiB = {growth:.2f}×",
                "",
                "flat (≤ 1.25×)",
                growth <= 1.25,
            )
        )

    p("| target | measured (wall) | CPU s ratio | goal | result |")
    p("|---|---:|---:|---|---|")
    for name, val, cpu, target, ok in checks:
        p(f"| {cell(name)} | {val} | {cpu} | {target} | {'PASS' if ok else 'MISS'} |")
    p("")
    p("PASS/MISS judges the wall-time ratio. The CPU-seconds ratio is less sensitive to other")
    p("load on the machine; on an idle machine where both tools use every core it is what the")
    p("wall ratio tends to.")
    p("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
