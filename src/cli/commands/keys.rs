//! `cat` (a pack's tar stream on stdout, decrypted) and `key rotate` (re-wrap the data
//! key under another key-encryption key).

use std::path::Path;

use serde::Serialize;

use crate::cli::args::RotateArgs;
use crate::cli::exit;
use crate::cli::render::emit;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::codec::Codec;
use crate::manifest::crypt::{KekSource, KeyRecord};
use crate::manifest::layout::Repo;
use crate::pack::frame::decompress;
use crate::pack::read::{decoder, BlobRead};
use crate::pipeline::Pipeline;
use crate::store::azure::key_vault::KeyVaultKey;
use crate::store::list_all;
use crate::support::out::{out_bytes, outln};

/// `blobpipe cat FILE PACK`: the pack's uncompressed tar stream on stdout, every frame
/// opened and checked with the pipeline's key when it is encrypted.
///
/// # Errors
/// `NotFound` for an unknown pack; `WrongKey`/`Config` as the key requires; `Integrity`
/// for a frame that does not authenticate or decompress (output stops there).
pub async fn cat(pipeline: &Path, pack: &str) -> Result<i32> {
    let p = Pipeline::load_for_reading(pipeline)?;
    let repo = p.open_repo().await?;
    let file = pack.rsplit('/').next().unwrap_or(pack);
    let id = file.split('.').next().unwrap_or(file).to_string();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::config(format!(
            "{pack:?} is not a pack id (32 hex digits) or pack blob name"
        )));
    }
    let found = list_all(
        &*repo.store,
        &repo.layout.full(&format!("packs/{}/{id}.", &id[..2])),
    )
    .await?;
    let Some(item) = found.into_iter().next() else {
        // Repacked by `prune --max-unused`: say where its records went.
        if let Ok(r) = crate::manifest::moved::load(&*repo.store, &repo.layout, &id, true).await {
            let into: Vec<&str> = r.into.iter().map(|p| p.id.as_str()).collect();
            return Err(Error::not_found(format!(
                "pack {id} was repacked on {}: its records are in pack(s) {} (see {})",
                r.moved_at.format("%Y-%m-%d %H:%M UTC"),
                into.join(", "),
                repo.layout.moved(&id)
            )));
        }
        return Err(Error::not_found(format!(
            "no pack {id} in this pipeline's store"
        )));
    };
    let codec = if item.name.ends_with(".tar.gz") {
        Codec::Gzip
    } else {
        Codec::Zstd
    };
    let (store, key) = (repo.store.clone(), repo.layout.key().cloned());
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let r = BlobRead::new(&*store, rt, item.name.clone(), item.size);
        match key {
            Some(k) => k.open_frames(&id, r, &mut |frame| {
                let raw = decompress(codec, frame, None)?;
                out_bytes(&raw);
                Ok(())
            }),
            None => {
                let mut d = decoder(codec, r)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = std::io::Read::read(&mut d, &mut buf)
                        .map_err(|e| Error::integrity(format!("{}: {e}", item.name)))?;
                    if n == 0 || !out_bytes(&buf[..n]) {
                        return Ok(());
                    }
                }
            }
        }
    })
    .await
    .map_err(|e| Error::internal(format!("cat worker: {e}")))??;
    Ok(exit::OK)
}

/// What `key rotate` did.
#[derive(Debug, Serialize)]
struct Rotated {
    key: String,
    from: crate::manifest::crypt::KekRef,
    to: crate::manifest::crypt::KekRef,
}

/// `blobpipe key rotate FILE --from-…`: re-wrap every key record under the key the
/// pipeline's `[encryption]` names. Every record is re-wrapped in memory first: a wrong
/// old or missing new key changes nothing.
///
/// # Errors
/// `Config` without `[encryption]` or without exactly one `--from-*`; `WrongKey` when the
/// old key does not open a record; `NotFound` when there is no key record; store errors.
pub async fn rotate(a: RotateArgs, json: bool) -> Result<i32> {
    let p = Pipeline::load_for_reading(&a.pipeline)?;
    let to = p.encryption.as_ref().ok_or_else(|| {
        Error::config(format!(
            "{}: no [encryption] table; name the new key there, and the old one with --from-…",
            a.pipeline.display()
        ))
    })?;
    let mut from: Vec<KekSource> = Vec::new();
    from.extend(a.from_key_file.clone().map(KekSource::KeyFile));
    from.extend(a.from_key_env.clone().map(KekSource::KeyEnv));
    from.extend(a.from_passphrase_env.clone().map(KekSource::PassphraseEnv));
    from.extend(
        a.from_passphrase_file
            .clone()
            .map(KekSource::PassphraseFile),
    );
    if let Some(k) = &a.from_key_vault_key {
        from.push(KekSource::KeyVault(
            KeyVaultKey::parse(k).map_err(|e| e.context("--from-key-vault-key"))?,
        ));
    }
    let [from] = <[KekSource; 1]>::try_from(from).map_err(|_| {
        Error::config("name the old key with exactly one of --from-key-file, --from-key-env, --from-passphrase-env, --from-passphrase-file, --from-key-vault-key")
    })?;
    let repo = Repo::open(&p.target, &p.retry).await?;
    let names = list_all(&*repo.store, &repo.layout.keys()).await?;
    if names.is_empty() {
        return Err(Error::not_found(format!(
            "no key record under {}: nothing to rotate",
            repo.layout.keys()
        )));
    }
    let mut done = Vec::new();
    for item in &names {
        let rec = KeyRecord::from_json(&item.name, &repo.store.get(&item.name, None).await?)?;
        let (new, _) = rec
            .rewrap(&from, &to.kek)
            .await
            .map_err(|e| e.context(format!("key record {}", item.name)))?;
        done.push((item.name.clone(), rec.kek, new));
    }
    let mut out = Vec::new();
    for (name, old, new) in done {
        let body = serde_json::to_vec_pretty(&new).map_err(|e| Error::encode("key record", e))?;
        repo.store
            .put(&name, body.into(), false)
            .await
            .map_err(|e| {
                let e = e.context(format!("rewriting key record {name}"));
                if e.kind() == ErrorKind::Immutable {
                    e.context(
                        "key records must stay writable: keep keys/ out of immutability policies",
                    )
                } else {
                    e
                }
            })?;
        out.push(Rotated {
            key: new.id.clone(),
            from: old,
            to: new.kek,
        });
    }
    emit(json, &out, || {
        for r in &out {
            outln!(
                "data key {}: re-wrapped from {} {} to {} {}; no pack, segment or manifest changed",
                r.key,
                r.from.kind.as_str(),
                r.from.id,
                r.to.kind.as_str(),
                r.to.id
            );
        }
    });
    Ok(exit::OK)
}
