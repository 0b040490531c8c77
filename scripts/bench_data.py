#!/usr/bin/env python3
"""Deterministic benchmark data, shared by scripts/bench and scripts/bench-scale.

    bench_data.py file PATH SIZE_MIB SEED     one semi-compressible file (scripts/bench)
    bench_data.py tree DIR FILES              a tree of FILES small files (scripts/bench-scale)
    bench_data.py change DIR FILES STATE      change 1 % of the tree's files, remember how
    bench_data.py revert DIR STATE            undo `change` (sizes and times), remove STATE
    bench_data.py pick DIR FILES              print one file's path (the one-path restore)
    bench_data.py warm DIR                    read every file once (into the page cache)

Semi-compressible data: 64 KiB blocks, 30 % random bytes (media, ciphertext), 70 %
text-like words drawn from a Zipf-ish vocabulary. Compresses ~1.9x.

The tree: leaf directories of 50-200 files (uniform), 32 leaves per middle directory,
32 middle directories per top directory (`d000/d00/d00/`). File sizes, from a fixed
distribution: 6 % empty, 90.9 % log-uniform 1 B - 8 KiB, 3 % 8 - 64 KiB, 0.1 %
64 KiB - 1 MiB (mean about 2 KiB; on a 4 KiB-block file system about 5 KiB of disk per
file). Each file starts with its own path (so no two
files are equal and nothing deduplicates) followed by a slice, at a random offset, of
a 32 MiB semi-compressible pool. Everything comes from one random.Random(FILES) stream:
the same FILES gives the same tree, byte for byte (modification times are those of
the run that built it).
"""

import json
import math
import os
import random
import sys
from array import array

BLK = 1 << 16
POOL_MIB = 32
KIB = 1 << 10
MIB = 1 << 20


def blocks(rng, nblocks):
    """Yield `nblocks` semi-compressible 64 KiB blocks drawn from `rng`."""
    letters = b"etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    vocab = []
    for _ in range(8192):
        n = min(12, max(1, int(rng.expovariate(1 / 5)) + 1))
        vocab.append(bytes(rng.choices(letters, weights, k=n)))
    tot = sum(1 / (k + 1) for k in range(len(vocab)))
    slots = []
    for k, w in enumerate(vocab):
        slots += [w] * max(1, round(65536 * (1 / (k + 1)) / tot))
    slots = (slots * 2)[:65536]
    for _ in range(nblocks):
        if rng.random() < 0.3:
            yield rng.randbytes(BLK)
        else:
            idx = array("H", rng.randbytes(2 * (BLK // 5)))
            yield b" ".join([slots[j] for j in idx])[:BLK].ljust(BLK, b"\n")


def write_file(path, size_mib, seed):
    rng = random.Random(seed)
    with open(path + ".tmp", "wb") as f:
        for b in blocks(rng, size_mib * 16):
            f.write(b)
    os.replace(path + ".tmp", path)


EXTS = ("txt", "json", "log", "html", "py", "rs", "csv", "md", "xml", "bin")


def _size(rng):
    u = rng.random()
    if u < 0.06:
        return 0
    elif u < 0.969:
        lo, hi = 1, 8 * KIB
    elif u < 0.999:
        lo, hi = 8 * KIB, 64 * KIB
    else:
        lo, hi = 64 * KIB, MIB
    return min(hi, int(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def layout(files):
    """Yield (index, relative path, size, pool offset) for every file of the tree, in
    creation order. Cheap (no I/O): `change` and `pick` replay it."""
    rng = random.Random(files)
    pool = POOL_MIB * MIB
    i = 0
    leaf = 0
    while i < files:
        d = f"d{leaf // 1024:03d}/d{(leaf // 32) % 32:02d}/d{leaf % 32:02d}"
        n = min(rng.randint(50, 200), files - i)
        for _ in range(n):
            size = _size(rng)
            name = f"{rng.choice(('a', 'data', 'item', 'report', 'x'))}-{i:07d}.{rng.choice(EXTS)}"
            yield i, f"{d}/{name}", size, rng.randrange(pool - MIB)
            i += 1
        leaf += 1


def make_tree(root, files):
    pool = b"".join(blocks(random.Random(-files), POOL_MIB * 16))
    made = set()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    total = 0
    for i, rel, size, off in layout(files):
        d = rel.rsplit("/", 1)[0]
        if d not in made:
            os.makedirs(os.path.join(root, d), exist_ok=True)
            made.add(d)
        head = rel.encode() + b"\n"
        data = (head + pool[off : off + size])[:size]
        fd = os.open(os.path.join(root, rel), flags, 0o644)
        try:
            if data:
                os.write(fd, data)
        finally:
            os.close(fd)
        total += size
        if (i + 1) % 500_000 == 0:
            print(f"  {i + 1:,} files", file=sys.stderr, flush=True)
    dirs = len({p for d in made for p in _parents(d)})
    print(json.dumps({"files": files, "dirs": dirs, "bytes": total}))


def _parents(d):
    parts = d.split("/")
    return ["/".join(parts[: k + 1]) for k in range(len(parts))]


CHANGE_LINE = b"\nblobpipe bench-scale: changed\n"


def change(root, files, state):
    """Append a line to every 100th file (1 %), remembering size and times to undo it."""
    if os.path.exists(state):
        sys.exit(f"{state} exists: the tree is already changed (run `revert` first)")
    saved = []
    for i, rel, _size, _off in layout(files):
        if i % 100 != 0:
            continue
        p = os.path.join(root, rel)
        st = os.stat(p)
        saved.append([rel, st.st_size, st.st_atime_ns, st.st_mtime_ns])
    with open(state + ".tmp", "w") as f:
        json.dump(saved, f)
    os.replace(state + ".tmp", state)
    changed = 0
    for rel, *_ in saved:
        with open(os.path.join(root, rel), "ab") as fh:
            fh.write(CHANGE_LINE)
        changed += 1
    print(f"{changed:,} of {files:,} files ({changed / files:.2%}) got a line appended")


def revert(root, state):
    if not os.path.exists(state):
        return
    with open(state) as f:
        saved = json.load(f)
    for rel, size, atime, mtime in saved:
        p = os.path.join(root, rel)
        os.truncate(p, size)
        os.utime(p, ns=(atime, mtime))
    os.remove(state)


def pick(files):
    """A file in the middle of the tree, not empty, not one that `change` touches."""
    want = files // 2
    for i, rel, size, _off in layout(files):
        if i >= want and size > 0 and i % 100 != 0:
            print(rel)
            return


def warm(root, threads=32):
    """Read every file under `root` once, `threads` at a time: a disk that serves small
    random reads slowly serves many at once much faster than tar's one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def read_dir(d, names):
        n = 0
        for name in names:
            with open(os.path.join(d, name), "rb", buffering=0) as f:
                while f.read(MIB):
                    pass
            n += 1
        return n

    with ThreadPoolExecutor(threads) as ex:
        jobs = [ex.submit(read_dir, d, names) for d, _dirs, names in os.walk(root) if names]
        print(sum(j.result() for j in jobs))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "file":
        write_file(args[0], int(args[1]), int(args[2]))
    elif cmd == "tree":
        make_tree(args[0], int(args[1]))
    elif cmd == "change":
        change(args[0], int(args[1]), args[2])
    elif cmd == "revert":
        revert(args[0], args[1])
    elif cmd == "warm":
        warm(args[0])
    elif cmd == "pick":
        pick(int(args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
