//! Large files as content-defined chunks, through the real binary on the real
//! filesystem: an overwrite inside a big file stores only the chunks around it, an
//! insertion at the start keeps most chunks, every snapshot restores byte-identical, GNU
//! tar plus the recipe of docs/formats.md rebuilds the file from the packs alone, forget
//! and prune never break a survivor that shares chunks, and a damaged shared chunk is
//! named by verify in every snapshot that uses it (and each finding names the other
//! snapshots using the same bytes).
//!
//! Sizes are scaled down (threshold 1 MiB, chunks 256 KiB–4 MiB around 1 MiB) so the
//! files stay small; the data is incompressible so stored bytes follow new bytes.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const MIB: u64 = 1 << 20;

/// Chunking and pack settings of every pipeline here.
const CHUNKED: &str = "[compression]\nframe_size = \"256KiB\"\n[upload]\nblock_size = \"1MiB\"\npack_size = \"8MiB\"\n[chunking]\nthreshold = \"1MiB\"\nmin_size = \"256KiB\"\navg_size = \"1MiB\"\nmax_size = \"4MiB\"\n[incremental]\nfull_every = 100\n[retention]\nkeep_last = 1\nprune_grace = \"0s\"\n";

fn bp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Run the binary with `--json`, expecting exit code `want`; its JSON document.
fn bp_json(want: i32, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = bp(&all);
    assert_eq!(
        o.status.code(),
        Some(want),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

struct Fixture {
    t: tempfile::TempDir,
    src: PathBuf,
    store: PathBuf,
    pipeline: String,
}

fn fixture(name: &str) -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("data")).unwrap();
    std::fs::write(
        src.join("data/notes.txt"),
        b"small, stored whole\n".repeat(50),
    )
    .unwrap();
    let store = t.path().join("store");
    let pipeline = write_pipeline(
        t.path(),
        name,
        &src,
        &format!("file://{}", store.display()),
        CHUNKED,
    )
    .to_str()
    .unwrap()
    .to_string();
    Fixture {
        t,
        src,
        store,
        pipeline,
    }
}

impl Fixture {
    fn backup(&self) -> serde_json::Value {
        let r = bp_json(0, &["backup", &self.pipeline]);
        assert_eq!(r["status"], "ok", "{r}");
        r
    }
    fn restore(&self, snap: &str, tag: &str) -> PathBuf {
        let out = self.t.path().join(format!("restored-{tag}"));
        bp_json(
            0,
            &[
                "restore",
                &self.pipeline,
                snap,
                "--to",
                out.to_str().unwrap(),
            ],
        );
        out
    }
    /// `snap` restores byte-identical to `tree` and passes `verify --full`.
    fn restores_and_verifies(&self, snap: &str, tree: &Path, tag: &str) {
        assert_same_tree(tree, &self.restore(snap, tag));
        let v = bp_json(0, &["verify", &self.pipeline, snap, "--full"]);
        assert!(v["mismatches"].as_array().unwrap().is_empty(), "{v}");
    }
    fn copy_src(&self, tag: &str) -> PathBuf {
        let to = self.t.path().join(format!("tree-{tag}"));
        let o = Command::new("cp")
            .arg("-a")
            .arg(&self.src)
            .arg(&to)
            .output()
            .unwrap();
        assert!(o.status.success());
        to
    }
    /// The pipeline's prefix directory in the local store.
    fn prefix(&self) -> PathBuf {
        let name = Path::new(&self.pipeline)
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        self.store.join("backups").join(name)
    }
}

fn overwrite(path: &Path, at: u64, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn an_overwrite_inside_a_big_file_stores_a_few_chunks_and_tar_rebuilds_it() {
    let f = fixture("cdc");
    let big = f.src.join("data/disk.img");
    std::fs::write(&big, noise((24 * MIB) as usize, 1)).unwrap();

    let r1 = f.backup();
    let s1 = r1["snapshot"].as_str().unwrap().to_string();
    assert_eq!(u(&r1["chunks"]["files"]), 1, "{r1}");
    let n1 = u(&r1["chunks"]["new"]);
    assert!(
        (8..=96).contains(&n1),
        "24 MiB in chunks of 256KiB–4MiB: {n1}"
    );
    assert_eq!(u(&r1["chunks"]["new_bytes"]), 24 * MIB);
    let tree1 = f.copy_src("1");

    // Overwrite 1 MiB in the middle.
    overwrite(&big, 12 * MIB + 12_345, &noise(MIB as usize, 2));
    let r2 = f.backup();
    let s2 = r2["snapshot"].as_str().unwrap().to_string();
    let c = &r2["chunks"];
    let (new_bytes, reused_bytes) = (u(&c["new_bytes"]), u(&c["reused_bytes"]));
    assert_eq!(new_bytes + reused_bytes, 24 * MIB, "{c}");
    // At most 3 chunks' worth (1 MiB average) of new bytes for a 1 MiB change.
    assert!(
        new_bytes <= 3 * MIB,
        "an incremental after a 1 MiB overwrite stored {new_bytes} new chunk bytes: {c}"
    );
    assert!(
        u(&r2["new_stored_bytes"]) <= 3 * MIB + MIB / 4,
        "stored {} bytes",
        r2["new_stored_bytes"]
    );
    assert_eq!(u(&r2["changes"]["changed"]), 1, "{r2}");
    let tree2 = f.copy_src("2");

    // Both snapshots restore byte-identical.
    assert_same_tree(&tree1, &f.restore(&s1, "1"));
    assert_same_tree(&tree2, &f.restore(&s2, "2"));
    // A one-path restore of the chunked file.
    let one = f.t.path().join("one");
    bp_json(
        0,
        &[
            "restore",
            &f.pipeline,
            &s2,
            "--path",
            "data/disk.img",
            "--to",
            one.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(one.join("data/disk.img")).unwrap(),
        std::fs::read(&big).unwrap()
    );

    // GNU tar and the documented recipe, from the packs alone.
    let prefix = f.prefix();
    let manifest = std::fs::read_dir(prefix.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().contains(&s2))
        .unwrap();
    // A snapshot with a chunked file is format 3 (builds before chunking refuse it as
    // newer); its segment line counts the chunked file.
    let head = Command::new("sh")
        .arg("-c")
        .arg(format!("zcat {} | head -n1", manifest.display()))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout);
    assert!(head.contains("\"format\":3"), "{head}");
    let x = f.t.path().join("tar-x");
    std::fs::create_dir_all(&x).unwrap();
    let script = format!(
        r#"set -eu
STORE={store}; M={m}; OUT={x}; F=data/disk.img
zcat "$M" | jq -r 'select(.type=="pack") | .blob' | while read -r b; do
  tar --zstd -xf "$STORE/$b" -C "$OUT"
done
# The recipe of docs/formats.md: the file's chunk entries, in manifest order.
seg() {{ zcat "$M" | jq -r 'select(.type=="segment") | .blob' | while read -r s; do zcat "$STORE/$s"; done; }}
seg | jq -r --arg p "$F" 'select(.path==$p) | .chunks[].sha256' \
  | while read -r h; do cat "$OUT/$F.chunks/$h"; done > "$OUT/rebuilt"
"#,
        store = prefix.display(),
        m = manifest.display(),
        x = x.display()
    );
    let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rebuilt = std::fs::read(x.join("rebuilt")).unwrap();
    assert_eq!(rebuilt.len() as u64, 24 * MIB);
    assert!(rebuilt == std::fs::read(&big).unwrap(), "rebuilt from tar");
    // The chunk entries are named for what they are.
    assert!(x.join("data/disk.img.chunks").is_dir());
    assert!(
        !x.join("data/disk.img").exists(),
        "the file itself is not a tar entry"
    );

    // verify --full reads every chunk.
    let v = bp_json(0, &["verify", &f.pipeline, &s2, "--full"]);
    assert!(v["mismatches"].as_array().unwrap().is_empty(), "{v}");
    assert!(u(&v["entries_checked"]) >= n1, "{v}");
}

#[test]
fn an_insertion_at_the_start_keeps_most_chunks() {
    let f = fixture("ins");
    let big = f.src.join("data/log.bin");
    let body = noise((16 * MIB) as usize, 3);
    std::fs::write(&big, &body).unwrap();
    f.backup();
    let mut shifted = b"a new header of 100 bytes ".repeat(4)[..100].to_vec();
    shifted.extend_from_slice(&body);
    std::fs::write(&big, &shifted).unwrap();
    let r = f.backup();
    let c = &r["chunks"];
    let (new, reused) = (u(&c["new"]), u(&c["reused"]));
    let frac = reused as f64 / (new + reused) as f64;
    assert!(
        frac >= 0.8,
        "content-defined cuts resync after the insertion: {reused} of {} reused",
        new + reused
    );
    assert!(u(&c["new_bytes"]) <= 4 * MIB + 100, "{c}");
    let tree = f.copy_src("after");
    assert_same_tree(&tree, &f.restore(r["snapshot"].as_str().unwrap(), "after"));
}

#[test]
fn forget_and_prune_keep_the_chunks_survivors_share_and_damage_names_every_user() {
    let f = fixture("fp");
    let big = f.src.join("data/vm.raw");
    std::fs::write(&big, noise((12 * MIB) as usize, 4)).unwrap();
    let s1 = f.backup()["snapshot"].as_str().unwrap().to_string();
    overwrite(&big, 3 * MIB, &noise(64 << 10, 5));
    let s2 = f.backup()["snapshot"].as_str().unwrap().to_string();
    overwrite(&big, 9 * MIB, &noise(64 << 10, 6));
    let r3 = f.backup();
    let s3 = r3["snapshot"].as_str().unwrap().to_string();
    assert!(u(&r3["chunks"]["reused"]) > 0, "{r3}");
    let tree3 = f.copy_src("3");

    // keep_last = 1: s1 and s2 go; s3 shares most of its chunks with s1's packs.
    let fo = bp_json(0, &["forget", &f.pipeline]);
    assert!(
        fo.to_string().contains(&s1) && fo.to_string().contains(&s2),
        "{fo}"
    );
    let pr = bp_json(0, &["prune", &f.pipeline]);
    assert_eq!(
        u(&pr["packs_referenced"]) + u(&pr["packs_deleted"]),
        u(&pr["packs_total"]),
        "{pr}"
    );
    f.restores_and_verifies(&s3, &tree3, "3");

    // A full backup stores every chunk again: it depends on no earlier pack.
    let full = bp_json(0, &["backup", &f.pipeline, "--full"]);
    assert_eq!(u(&full["chunks"]["reused"]), 0, "{full}");
    assert_eq!(u(&full["chunks"]["new_bytes"]), 12 * MIB, "{full}");
    assert_eq!(u(&full["reused_packs"]), 0, "{full}");
    let _ = bp_json(0, &["forget", &f.pipeline]);
    let _ = bp_json(0, &["prune", &f.pipeline]);
    let s3 = full["snapshot"].as_str().unwrap().to_string();
    assert_same_tree(&tree3, &f.restore(&s3, "3-full"));

    // A fourth snapshot shares s3's chunks; damage one pack both use.
    overwrite(&big, 6 * MIB, &noise(64 << 10, 7));
    let s4 = f.backup()["snapshot"].as_str().unwrap().to_string();
    let prefix = f.prefix();
    let mut packs: Vec<PathBuf> = Vec::new();
    for d in std::fs::read_dir(prefix.join("packs")).unwrap() {
        for p in std::fs::read_dir(d.unwrap().path()).unwrap() {
            packs.push(p.unwrap().path());
        }
    }
    // The largest pack is the first backup's, holding chunks both snapshots use.
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let victim = packs.last().unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(victim, &bytes).unwrap();
    for (snap, other) in [(&s3, &s4), (&s4, &s3)] {
        let v = bp_json(3, &["verify", &f.pipeline, snap, "--full"]);
        let ms = v["mismatches"].as_array().unwrap();
        assert!(!ms.is_empty(), "{v}");
        // The finding also names the other snapshot that uses the damaged chunk.
        assert!(
            ms.iter().any(|m| m["shared_with"]
                .as_array()
                .is_some_and(|u| u.iter().any(|u| u["snapshot"] == other.as_str()
                    && u["paths"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p == "data/vm.raw")))),
            "{snap}: the damage names {other} too: {v}"
        );
        let text = String::from_utf8_lossy(&bp(&["verify", &f.pipeline, snap, "--full"]).stdout)
            .to_string();
        assert!(
            text.contains(&format!("also used by snapshot {other}: data/vm.raw")),
            "{text}"
        );
        assert!(
            ms.iter().any(|m| m["paths"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "data/vm.raw")),
            "{snap}: the damaged chunk names the file that uses it: {v}"
        );
    }
    // Restore refuses to write the damaged file and says which chunk.
    let out = f.t.path().join("damaged");
    let o = bp(&[
        "--json",
        "restore",
        &f.pipeline,
        &s4,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = r["damaged"].to_string();
    assert!(d.contains("data/vm.raw") && d.contains("chunk"), "{r}");
    assert!(!out.join("data/vm.raw").exists());
    assert!(out.join("data/notes.txt").exists(), "the rest is restored");
}

#[test]
fn bad_chunking_settings_are_refused_with_their_location() {
    let t = tempfile::tempdir().unwrap();
    for (extra, needle) in [
        ("[chunking]\nmin_size = \"2MiB\"\n", "chunking.min_size"),
        (
            "[chunking]\nmin_size = \"1MiB\"\navg_size = \"512KiB\"\n",
            "min_size 1048576 ≤ avg_size 524288",
        ),
        ("[chunking]\nmax_size = 4097\n", "is odd"),
        ("[chunking]\nthreshold = \"1KiB\"\n", "chunking.threshold"),
        ("[chunking]\nthreshhold = \"1MiB\"\n", "threshhold"),
        (
            "[chunking]\nrange_buffer = \"8GiB\"\n",
            "chunking.range_buffer: 8589934592 bytes is out of range",
        ),
    ] {
        let p = write_pipeline(t.path(), "bad", t.path(), "memory://x", extra);
        let o = bp(&["validate", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(0), "{extra}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(err.contains("bad.toml:"), "located: {err}");
    }
}

#[test]
fn verify_full_checks_that_the_chunk_list_makes_the_file() {
    use blobpipe::manifest::{decode, Line, Manifest};
    let f = fixture("order");
    std::fs::write(f.src.join("data/disk.img"), noise((6 * MIB) as usize, 9)).unwrap();
    let snap = f.backup()["snapshot"].as_str().unwrap().to_string();
    let v = bp_json(0, &["verify", &f.pipeline, &snap, "--full"]);
    assert!(v["mismatches"].as_array().unwrap().is_empty(), "{v}");
    // Swap the first two chunks of the list: every chunk still hashes right, the sizes
    // still add up, but the file they make is not the file.
    let prefix = f.prefix();
    let file = std::fs::read_dir(prefix.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let mut m = Manifest::from_bytes(&std::fs::read(&file).unwrap()).unwrap();
    for sg in std::mem::take(&mut m.segments) {
        for l in decode(&std::fs::read(prefix.join(&sg.blob)).unwrap()).unwrap() {
            if let Line::Entry(e) = l {
                m.entries.push(e);
            }
        }
    }
    m.header.format = 1;
    let e = m
        .entries
        .iter_mut()
        .find(|e| !e.chunks.is_empty())
        .expect("a chunked entry");
    assert!(e.chunks.len() >= 2, "{}", e.chunks.len());
    e.chunks.swap(0, 1);
    std::fs::write(&file, m.to_bytes().unwrap()).unwrap();

    let v = bp_json(3, &["verify", &f.pipeline, &snap, "--full"]);
    let ms = v["mismatches"].as_array().unwrap();
    assert_eq!(ms.len(), 1, "{v}");
    assert_eq!(ms[0]["check"], "entry-sha256", "{v}");
    assert!(
        ms[0]["detail"].as_str().unwrap().contains("chunked file"),
        "{v}"
    );
    assert_eq!(ms[0]["paths"][0], "data/disk.img", "{v}");
    // Restore refuses the file too (the file's hash is checked after its chunks').
    let out = f.t.path().join("swapped");
    let o = bp(&[
        "--json",
        "restore",
        &f.pipeline,
        &snap,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!out.join("data/disk.img").exists());
    assert!(out.join("data/notes.txt").exists());
}

/// Every file under `dir`, with its size (a store's full state, for "nothing changed").
fn listing(dir: &Path) -> std::collections::BTreeMap<PathBuf, u64> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let n = std::fs::metadata(&p).unwrap().len();
            (p, n)
        })
        .collect()
}

/// Files under `dir`, none when it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    if dir.exists() {
        files_under(dir)
    } else {
        Vec::new()
    }
}

fn pack_files(prefix: &Path) -> std::collections::BTreeSet<PathBuf> {
    files_under(&prefix.join("packs")).into_iter().collect()
}

/// Issue 12: `prune --max-unused` repacks packs a survivor only partly uses. The dry run
/// shows the space accounting and changes nothing; the repack moves the live chunks into
/// new packs (GNU tar reads them), deletes the old ones, leaves nothing unused; the
/// survivor restores byte-identical and verifies; an incremental after it points at the
/// new packs directly, so the moved records go once the old snapshot is forgotten.
#[test]
fn prune_max_unused_repacks_partly_used_packs_and_survivors_restore() {
    let f = fixture("rp");
    let big = f.src.join("data/disk.img");
    std::fs::write(&big, noise((24 * MIB) as usize, 11)).unwrap();
    let s1 = f.backup()["snapshot"].as_str().unwrap().to_string();
    // Overwrite 1 MiB in each quarter: every pack of s1 keeps live chunks and loses some.
    for (k, at) in [2u64, 8, 14, 20].iter().enumerate() {
        overwrite(&big, at * MIB + 777, &noise(MIB as usize, 20 + k as u64));
    }
    let r2 = f.backup();
    let s2 = r2["snapshot"].as_str().unwrap().to_string();
    assert!(u(&r2["chunks"]["reused"]) > 0, "{r2}");
    let tree2 = f.copy_src("2");
    let fo = bp_json(0, &["forget", &f.pipeline]);
    assert!(fo.to_string().contains(&s1), "{fo}");
    // A plain prune frees nothing: every pack still holds a chunk s2 uses.
    let pr = bp_json(0, &["prune", &f.pipeline]);
    assert_eq!(u(&pr["packs_deleted"]), 0, "{pr}");
    assert!(
        pr.get("usage").is_none(),
        "no accounting without a dry run or --max-unused"
    );

    // Dry run: the accounting, and what --max-unused 0% would repack; nothing changes.
    let prefix = f.prefix();
    let before = listing(&f.store);
    let dry = bp_json(
        0,
        &["prune", &f.pipeline, "--dry-run", "--max-unused", "0%"],
    );
    assert_eq!(listing(&f.store), before, "a dry run changes nothing");
    let usage = &dry["usage"];
    let unused = u(&usage["unused_bytes"]);
    // The chunks the overwrites replaced: about as many bytes as s2 stored anew
    // (incompressible data; boundaries may shift by a chunk).
    let replaced = u(&r2["chunks"]["new_bytes"]);
    assert!(
        unused >= MIB && unused <= replaced + 4 * MIB,
        "4 overwritten regions leave their old chunks unused ({replaced} new bytes): {usage}"
    );
    assert_eq!(
        u(&usage["used_bytes"]) + unused,
        u(&usage["stored_bytes"]),
        "{usage}"
    );
    let share = usage["unused_share"].as_f64().unwrap();
    assert!(share > 0.02 && share < 0.6, "{usage}");
    let rp = &dry["repack"];
    assert!(
        u(&rp["packs"]) >= 1 && u(&rp["packs"]) <= u(&rp["candidates"]),
        "{rp}"
    );
    assert_eq!(u(&rp["new_packs"]), 0, "a dry run writes nothing: {rp}");
    assert_eq!(u(&rp["unused_bytes_after"]), 0, "{rp}");
    let text = String::from_utf8_lossy(
        &bp(&["prune", &f.pipeline, "--dry-run", "--max-unused", "0%"]).stdout,
    )
    .to_string();
    assert!(
        text.contains("space: ") && text.contains("would repack"),
        "{text}"
    );
    // A limit above the unused share repacks nothing.
    let lax = bp_json(
        0,
        &["prune", &f.pipeline, "--dry-run", "--max-unused", "90%"],
    );
    assert_eq!(u(&lax["repack"]["packs"]), 0, "{lax}");
    // A bad limit is a config error naming the flag, and changes nothing.
    let o = bp(&["prune", &f.pipeline, "--max-unused", "lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-unused"));
    assert_eq!(listing(&f.store), before);

    // The repack.
    let old_packs = pack_files(&prefix);
    let real = bp_json(0, &["prune", &f.pipeline, "--max-unused", "0%"]);
    let rp = &real["repack"];
    let repacked = u(&rp["packs"]);
    assert!(repacked >= 1 && u(&rp["new_packs"]) >= 1, "{real}");
    assert_eq!(
        u(&real["packs_moved_deleted"]),
        repacked,
        "grace 0: old packs go now: {real}"
    );
    let new_packs: Vec<PathBuf> = pack_files(&prefix)
        .difference(&old_packs)
        .cloned()
        .collect();
    assert_eq!(new_packs.len() as u64, u(&rp["new_packs"]));
    assert_eq!(
        old_packs.difference(&pack_files(&prefix)).count() as u64,
        repacked,
        "exactly the repacked packs are gone"
    );
    let moved = files_in(&prefix.join("moved"));
    assert_eq!(
        moved.len() as u64,
        repacked,
        "one moved record per repacked pack"
    );
    // `cat` of a repacked pack says where its records went.
    let remaining = pack_files(&prefix);
    let gone = old_packs.difference(&remaining).next().unwrap();
    let gone_id = gone
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    let o = bp(&["cat", &f.pipeline, gone_id]);
    assert_ne!(o.status.code(), Some(0));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("was repacked") && e.contains("moved/"), "{e}");
    let size = |m: &std::collections::BTreeMap<PathBuf, u64>| m.values().sum::<u64>();
    assert!(
        size(&listing(&f.store)) + unused / 2 < size(&before),
        "the store shrank by about the unused bytes"
    );
    // GNU tar reads a new pack: it holds the moved chunks as ordinary entries.
    let o = Command::new("tar")
        .arg("--zstd")
        .arg("-tf")
        .arg(&new_packs[0])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("data/disk.img.chunks/"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Nothing is unused any more; the survivor restores and verifies.
    let after = bp_json(
        0,
        &["prune", &f.pipeline, "--dry-run", "--max-unused", "0%"],
    );
    assert_eq!(u(&after["usage"]["unused_bytes"]), 0, "{after}");
    assert_eq!(u(&after["repack"]["packs"]), 0, "{after}");
    f.restores_and_verifies(&s2, &tree2, "2");

    // An incremental after the repack points at the new packs; once s2 is forgotten,
    // no manifest names an old pack and its moved record goes.
    std::fs::write(f.src.join("data/later.txt"), b"later\n").unwrap();
    let r3 = f.backup();
    let s3 = r3["snapshot"].as_str().unwrap().to_string();
    assert!(
        u(&r3["changes"]["unchanged"]) >= 1,
        "the big file is reused: {r3}"
    );
    let tree3 = f.copy_src("3");
    let _ = bp_json(0, &["forget", &f.pipeline]);
    let pr = bp_json(0, &["prune", &f.pipeline]);
    assert_eq!(u(&pr["moved_records_deleted"]), repacked, "{pr}");
    assert!(files_in(&prefix.join("moved")).is_empty());
    f.restores_and_verifies(&s3, &tree3, "3");
}

/// Issue 12: an incremental reuses the chunks the parent stores under *another* path —
/// a renamed big file, a copy, a dump named by its date — through the bounded index of
/// the parent's chunks; `[chunking] index = 0` turns it off, and an index too small to
/// hold the parent's chunks says how many it left out. Every snapshot restores.
#[test]
fn renamed_copied_and_dated_files_reuse_the_parents_chunks_within_the_index_bound() {
    let f = fixture("ix");
    let dump = |day: u32| f.src.join(format!("data/dump-2026-12-{day:02}.sql"));
    std::fs::write(dump(6), noise((6 * MIB) as usize, 51)).unwrap();
    let r1 = f.backup();
    assert_eq!(
        u(&r1["chunks"]["indexed"]),
        0,
        "a first backup has no parent: {r1}"
    );

    // The next day's dump: yesterday's content, a new name, 64 KiB changed in the middle.
    std::fs::rename(dump(6), dump(7)).unwrap();
    overwrite(&dump(7), 3 * MIB, &noise(64 << 10, 52));
    // A copy of it too.
    std::fs::copy(dump(7), f.src.join("data/copy.sql")).unwrap();
    let r2 = f.backup();
    let c = &r2["chunks"];
    let (new_bytes, reused_bytes) = (u(&c["new_bytes"]), u(&c["reused_bytes"]));
    assert_eq!(new_bytes + reused_bytes, 12 * MIB, "{c}");
    assert!(
        new_bytes <= 3 * MIB,
        "only the chunks around the change are new, for both files: {c}"
    );
    assert!(u(&c["reused_elsewhere"]) >= 1, "{c}");
    assert!(u(&c["indexed"]) >= 4, "{c}");
    assert_eq!(u(&c["index_left_out"]), 0, "{c}");
    let s2 = r2["snapshot"].as_str().unwrap().to_string();
    let tree2 = f.copy_src("2");
    f.restores_and_verifies(&s2, &tree2, "2");

    // With the index off, a renamed file stores all its chunks again.
    let text = std::fs::read_to_string(&f.pipeline).unwrap();
    std::fs::write(
        &f.pipeline,
        text.replace("[chunking]\n", "[chunking]\nindex = \"0B\"\n"),
    )
    .unwrap();
    std::fs::rename(dump(7), dump(8)).unwrap();
    let r3 = f.backup();
    assert_eq!(u(&r3["chunks"]["reused_elsewhere"]), 0, "{r3}");
    assert_eq!(u(&r3["chunks"]["indexed"]), 0, "{r3}");
    assert_eq!(u(&r3["chunks"]["new_bytes"]), 6 * MIB, "{r3}");

    // An index of 256 bytes holds 4 chunks: the rest of the parent's are left out and
    // counted; what it holds is still reused.
    std::fs::write(
        &f.pipeline,
        text.replace("[chunking]\n", "[chunking]\nindex = \"256B\"\n"),
    )
    .unwrap();
    std::fs::rename(dump(8), dump(9)).unwrap();
    let r4 = f.backup();
    let c = &r4["chunks"];
    assert_eq!(u(&c["indexed"]), 4, "{c}");
    assert!(u(&c["index_left_out"]) > 0, "{c}");
    assert!(u(&c["reused_elsewhere"]) <= 4, "{c}");
    let s4 = r4["snapshot"].as_str().unwrap().to_string();
    let tree4 = f.copy_src("4");
    f.restores_and_verifies(&s4, &tree4, "4");
    // The text summary says the index was full, and how to raise it.
    std::fs::rename(dump(9), dump(10)).unwrap();
    let text5 = String::from_utf8_lossy(&bp(&["backup", &f.pipeline]).stdout).to_string();
    assert!(
        text5.contains("chunk index full") && text5.contains("[chunking] index"),
        "{text5}"
    );
}
