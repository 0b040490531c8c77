#!/usr/bin/env python3
"""Turn scripts/bench timings into a markdown report (stdout).

    bench_report.py RESULTS.tsv META.txt [INCREMENTAL.tsv]

RESULTS.tsv: rep, tool, op, wall s, user s, sys s, peak RSS KiB, stored bytes (or -).
META.txt: key=value lines (date, commit, machine, corpus). Medians over repetitions.
INCREMENTAL.tsv: rep, tool, op, kind, files read, new, changed, unchanged, deleted,
new+changed bytes, store bytes before the run (- where a tool does not report it).
"""

import statistics
import sys

MIB = 1 << 20

# Operations of the incremental phase (issue 4): reported in their own table.
INC_OPS = ("full (incremental phase)", "incremental, no change", "incremental, 1 % changed")


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


def load_inc(path):
    """Per (tool, op): the fields of the last repetition (counts do not vary between reps)
    and the median bytes added to the store."""
    rows = {}
    try:
        f = open(path)
    except (FileNotFoundError, IndexError):
        return rows
    with f:
        for line in f:
            if not line.strip():
                continue
            rep, tool, op, kind, read, new, changed, unchanged, deleted, chbytes, before = (
                line.rstrip("\n").split("\t")
            )
            r = rows.setdefault((tool, op), {"before": []})
            r.update(kind=kind, read=read, new=new, changed=changed, unchanged=unchanged,
                     deleted=deleted, chbytes=chbytes)
            r["before"].append(int(before))
    return rows


def main():
    results, meta_path = sys.argv[1], sys.argv[2]
    inc = load_inc(sys.argv[3]) if len(sys.argv) > 3 else {}
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
    main_order = [k for k in order if k[1] not in INC_OPS]
    if main_order:
        p("| tool | op | wall s | CPU s | CPU/wall | peak RSS MiB | MB/s | stored MiB |")
        p("|---|---|---:|---:|---:|---:|---:|---:|")
    for key in main_order:
        r = m[key]
        tool, op = key
        data = corpus_bytes * (2 if "2×" in op else 1)
        stored = f"{r['stored'] / MIB:,.0f}" if r["stored"] is not None else ""
        p(
            f"| {cell(tool)} | {cell(op)} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['cpu'] / max(r['wall'], 0.01):.2f} "
            f"| {r['rss']:.0f} | {data / 1e6 / max(r['wall'], 0.01):.0f} | {stored} |"
        )
    if main_order:
        p("")
        p("MB/s = corpus bytes (uncompressed) / wall. CPU = user + sys of the command and its children;")
        p("peak RSS of a shell pipeline is that of its largest process.")
        p("")

    inc_order = [k for k in order if k[1] in INC_OPS]
    if inc_order:
        p("### Incremental backups (issue 4)")
        p("")
        p("On a hard-linked copy of the corpus: a full backup with each tool, then a backup with no")
        p("change, then one after changing 1 % of the files. blobpipe: `backup --no-verify --json`")
        p("(`--full` for the first); restic: `backup --quiet --json` (it finds its parent itself).")
        if meta.get("inc_change"):
            p(f"Changed: {meta['inc_change']}.")
        p("")
        p("| tool | op | wall s | CPU s | CPU/wall | peak RSS MiB | kind | files read | new / changed / unchanged / deleted | changed MiB | added to store MiB |")
        p("|---|---|---:|---:|---:|---:|---|---:|---|---:|---:|")
        for op in INC_OPS:
            for key in inc_order:
                if key[1] != op:
                    continue
                r = m[key]
                i = inc.get(key, {})
                added = ""
                if i.get("before") and r["stored"] is not None:
                    added = f"{(r['stored'] - statistics.median(i['before'])) / MIB:,.1f}"
                chb = i.get("chbytes", "-")
                chb = f"{int(chb) / MIB:,.1f}" if chb not in ("-", "", None) else "–"
                counts = " / ".join(i.get(k, "-") for k in ("new", "changed", "unchanged", "deleted"))
                p(
                    f"| {cell(key[0])} | {op} | {r['wall']:.2f} | {r['cpu']:.2f} "
                    f"| {r['cpu'] / max(r['wall'], 0.01):.2f} | {r['rss']:.0f} | {i.get('kind', '-')} "
                    f"| {i.get('read', '-')} | {counts.replace('-', '–')} | {chb} | {added} |"
                )
        p("")
        p("files read: blobpipe's `files_read`; for restic, `files_new + files_changed` (the files it")
        p("reads again). new / changed / unchanged / deleted: blobpipe's `changes` (entries, directories")
        p("included); restic's `files_new / files_changed / files_unmodified` (files only; restic does not")
        p("report deletions). changed MiB: blobpipe's `new_bytes + changed_bytes`. added to store: growth")
        p("of the store / repository directory during the run (blobpipe also writes a manifest and run")
        p("record; restic an index and snapshot).")
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
    ratio(
        "restic / blobpipe, incremental with no change",
        get("restic", "incremental, no change"),
        get("blobpipe zstd-3", "incremental, no change"),
        "≥ 3× (blobpipe ≤ ⅓ of restic)",
        lambda v: v >= 3,
    )
    ratio(
        "restic / blobpipe, incremental with 1 % changed",
        get("restic", "incremental, 1 % changed"),
        get("blobpipe zstd-3", "incremental, 1 % changed"),
        "(no target)",
        lambda v: None,
    )

    bp_rss = {k: v["rss"] for k, v in m.items() if k[0].startswith("blobpipe") and k[1] not in INC_OPS}
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
    inc_rss = {k: v["rss"] for k, v in m.items() if k[0].startswith("blobpipe") and k[1] in INC_OPS}
    if inc_rss:
        worst_key = max(inc_rss, key=inc_rss.get)
        checks.append(
            (
                f"blobpipe peak RSS, incremental phase, worst op ({worst_key[1]})",
                f"{inc_rss[worst_key]:.0f} MiB",
                "",
                "< 128 MiB",
                inc_rss[worst_key] < 128,
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
        verdict = "info" if ok is None else "PASS" if ok else "MISS"
        p(f"| {cell(name)} | {val} | {cpu} | {target} | {verdict} |")
    p("")
    p("PASS/MISS judges the wall-time ratio. The CPU-seconds ratio is less sensitive to other")
    p("load on the machine; on an idle machine where both tools use every core it is what the")
    p("wall ratio tends to.")
    p("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
