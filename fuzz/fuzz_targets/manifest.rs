//! Fuzz the manifest reader: `Manifest::from_bytes` on arbitrary bytes, then on whatever
//! it accepts, everything restore and verify would do with the tables — frame and block
//! lookups, ranged reads through `PackCursor`, a frame-by-frame read through
//! `FrameReader`, the path checks — asserting the guarantees validation gives.
//! A panic, an abort or a hang is a finding.
#![no_main]

use std::io::Read;
use std::sync::{Arc, OnceLock};

use blobpipe::manifest::{check, EntryKind, Manifest};
use blobpipe::pack::read::{FrameReader, PackCursor};
use blobpipe::store::memory::MemoryStore;
use blobpipe::store::BlobStore;
use libfuzzer_sys::fuzz_target;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

/// Packs at most this big (compressed and raw) are also read through the pack readers.
const SMALL: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // Raw bytes, and the same bytes gzip-wrapped (most inputs are not gzip: this lets
    // the fuzzer reach the JSON and validation code directly).
    let _ = Manifest::from_bytes(data);
    let wrapped = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = gz.write_all(data);
        gz.finish().unwrap_or_default()
    };
    if let Ok(m) = Manifest::from_bytes(&wrapped) {
        exercise(&m, data);
    }
});

fn exercise(m: &Manifest, junk: &[u8]) {
    // What validation promises.
    check::validate(m).expect("a loaded manifest validates again");
    assert!(check::first_under_non_dir(&m.entries).is_none());
    let again = Manifest::from_bytes(&m.to_bytes().expect("encodes")).expect("round trip");
    assert_eq!(again.entries, m.entries);
    // A chunked file's chunks are checked like files stored whole.
    let stored: Vec<blobpipe::manifest::Entry> = m
        .entries
        .iter()
        .flat_map(|e| {
            let mut v = e.chunk_entries();
            v.push(e.clone());
            v
        })
        .collect();
    for e in &stored {
        blobpipe::restore::files::safe_relative(&e.path).expect("validated paths are safe");
        if !e.chunks.is_empty() {
            assert!(e.pack.is_none() && e.kind == EntryKind::File);
            assert_eq!(e.chunks.iter().map(|c| c.size).sum::<u64>(), e.size);
            continue;
        }
        let Some(p) = e.pack.as_deref().and_then(|id| m.pack(id)) else {
            assert!(e.pack.is_none() && !(e.kind == EntryKind::File && e.size > 0));
            continue;
        };
        let end = e.data_offset + e.size;
        assert!(end <= p.raw_size);
        if e.size > 0 {
            let fa = p.frame_at(e.data_offset);
            let fb = p.frame_at(end - 1).max(fa);
            let raw = p.frames_raw_range(fa, fb);
            assert!(raw.start <= e.data_offset && end <= raw.end, "{raw:?} {e:?}");
            let comp = p.frames_comp_range(fa, fb);
            assert!(comp.start < comp.end && comp.end <= p.size);
        }
    }
    for p in &m.packs {
        let mut at = 0;
        for i in 0..p.blocks.len() {
            let r = p.block_range(i);
            assert_eq!(r.start, at);
            at = r.end;
        }
        assert_eq!(at, p.size);
        let _ = (p.frame_at(u64::MAX), p.frames_comp_range(usize::MAX, usize::MAX));
        let _ = p.frames_raw_range(p.frames.len(), usize::MAX);
        if p.size > SMALL || p.raw_size > SMALL {
            continue;
        }
        // The pack's bytes: the fuzz input, cycled to the recorded size.
        let bytes: Vec<u8> = junk.iter().copied().cycle().take(p.size as usize).collect();
        let store = Arc::new(MemoryStore::new("fuzz"));
        let blob = p.blob.clone();
        rt().block_on(store.put(&blob, bytes::Bytes::from(bytes.clone()), false))
            .expect("memory put");
        let mut cur = PackCursor::new(&*store, rt().handle().clone(), blob, p);
        for e in stored.iter().filter(|e| e.pack.as_deref() == Some(&p.id)) {
            let _ = cur.read(e.data_offset..e.data_offset + e.size, 0, &mut |_| Ok(()));
        }
        let _ = cur.read(0..p.raw_size, p.raw_size, &mut |_| Ok(()));
        let mut out = Vec::new();
        let _ = FrameReader::new(p, &bytes[..]).take(2 * SMALL).read_to_end(&mut out);
    }
}
