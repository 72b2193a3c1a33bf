//! The catalogue in one file: what a restart (embedded) or a new replica
//! (scaled out, from the object store) loads instead of rebuilding.
//!
//! ```text
//! "DRSRCH02", u64 last seq, str log,
//! u32 terms, per term str name; u32 uploaders, per uploader str name;
//! u32 photos, per photo: str id, i64 seq, i64 created ms, u8 status,
//!   u32 uploader (u32::MAX none), u32 width, u32 height, f32 quality (NaN none), f32 popular (-inf none),
//!   u32 terms, per term u32 id, f32 score, u8 kind;
//! u8 1 + the similar-photo index (vector::PhotoIndex's format), or u8 0
//! ```
//! Little-endian; a `str` is a u32 length and UTF-8 bytes. `log` names the
//! event log the sequence numbers belong to: a snapshot taken against
//! another log is not used.

use std::io::{Read, Write};
use std::path::Path;

use domain::photo::Status;
use vector::PhotoIndex;

use crate::catalogue::{Catalogue, Doc, TermKind, NO_UPLOADER};
use crate::SearchError;

const MAGIC: &[u8; 8] = b"DRSRCH02";

fn corrupt(reason: impl std::fmt::Display) -> SearchError {
    SearchError::Internal(format!("search snapshot: {reason}"))
}

/// Writes the catalogue (and its vectors) to `w`.
pub fn write(catalogue: &Catalogue, log: &str, w: &mut impl Write) -> Result<(), SearchError> {
    let io = |e: std::io::Error| corrupt(format!("writing: {e}"));
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&catalogue.last_seq.to_le_bytes()).map_err(io)?;
    put_str(w, log).map_err(io)?;
    for dict in [&catalogue.terms, &catalogue.uploaders] {
        w.write_all(&(dict.names.len() as u32).to_le_bytes())
            .map_err(io)?;
        for name in &dict.names {
            put_str(w, name).map_err(io)?;
        }
    }
    let live: Vec<_> = catalogue.slots.iter().flatten().collect();
    w.write_all(&(live.len() as u32).to_le_bytes())
        .map_err(io)?;
    for e in live {
        put_str(w, &e.id).map_err(io)?;
        w.write_all(&e.seq.to_le_bytes()).map_err(io)?;
        w.write_all(&e.created_ms.to_le_bytes()).map_err(io)?;
        let status = Status::ALL.iter().position(|s| *s == e.status).unwrap_or(0) as u8;
        w.write_all(&[status]).map_err(io)?;
        for n in [e.uploader, e.width, e.height] {
            w.write_all(&n.to_le_bytes()).map_err(io)?;
        }
        w.write_all(&e.quality.to_le_bytes()).map_err(io)?;
        w.write_all(&e.popular.to_le_bytes()).map_err(io)?;
        w.write_all(&(e.terms.len() as u32).to_le_bytes())
            .map_err(io)?;
        for t in e.terms.iter() {
            w.write_all(&t.0.to_le_bytes()).map_err(io)?;
            w.write_all(&t.1.to_le_bytes()).map_err(io)?;
            w.write_all(&[t.2 as u8]).map_err(io)?;
        }
    }
    match &catalogue.vectors {
        Some(v) => {
            w.write_all(&[1]).map_err(io)?;
            v.write_to(w)
                .map_err(|e| corrupt(format!("writing the vectors: {e}")))
        }
        None => w.write_all(&[0]).map_err(io),
    }
}

/// Reads a snapshot back: the catalogue and the log it was taken against.
pub fn read(r: &mut impl Read) -> Result<(Catalogue, String), SearchError> {
    let mut magic = [0; 8];
    r.read_exact(&mut magic).map_err(corrupt)?;
    if &magic != MAGIC {
        return Err(corrupt("not a Darkroom search snapshot (bad magic)"));
    }
    let last_seq = u64::from_le_bytes(take(r)?);
    let log = get_str(r)?;
    let mut dicts: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for dict in &mut dicts {
        let n = u32::from_le_bytes(take(r)?);
        for _ in 0..n {
            dict.push(get_str(r)?);
        }
    }
    let [terms, uploaders] = dicts;
    let mut catalogue = Catalogue::new(None);
    let docs = u32::from_le_bytes(take(r)?);
    for _ in 0..docs {
        let id = get_str(r)?;
        let seq = i64::from_le_bytes(take(r)?);
        let created_ms = i64::from_le_bytes(take(r)?);
        let [status] = take::<1>(r)?;
        let status = *Status::ALL
            .get(status as usize)
            .ok_or_else(|| corrupt(format!("photo {id}: status {status}")))?;
        let uploader = u32::from_le_bytes(take(r)?);
        let width = u32::from_le_bytes(take(r)?);
        let height = u32::from_le_bytes(take(r)?);
        let quality = f32::from_le_bytes(take(r)?);
        let popular = f32::from_le_bytes(take(r)?);
        let n = u32::from_le_bytes(take(r)?);
        let mut doc_terms = Vec::with_capacity(n.min(4096) as usize);
        for _ in 0..n {
            let t = u32::from_le_bytes(take(r)?);
            let score = f32::from_le_bytes(take(r)?);
            let [kind] = take::<1>(r)?;
            let kind = match kind {
                0 => TermKind::Concept,
                1 => TermKind::Keyword,
                2 => TermKind::Caption,
                k => return Err(corrupt(format!("photo {id}: term kind {k}"))),
            };
            let name = terms
                .get(t as usize)
                .ok_or_else(|| corrupt(format!("photo {id}: term {t}")))?;
            doc_terms.push((name.clone(), score, kind));
        }
        let uploader = match uploader {
            NO_UPLOADER => None,
            u => Some(
                uploaders
                    .get(u as usize)
                    .ok_or_else(|| corrupt(format!("photo {id}: uploader {u}")))?
                    .clone(),
            ),
        };
        catalogue.upsert(&Doc {
            id,
            seq,
            created_ms,
            status,
            uploader,
            width,
            height,
            quality: (!quality.is_nan()).then_some(quality),
            popular,
            terms: doc_terms,
        });
    }
    let [has_vectors] = take::<1>(r)?;
    if has_vectors == 1 {
        let index = PhotoIndex::read_from(r).map_err(|e| corrupt(format!("the vectors: {e}")))?;
        catalogue.set_vectors(Some(index));
    }
    catalogue.last_seq = last_seq;
    Ok((catalogue, log))
}

/// Writes atomically: a temporary file renamed into place.
pub fn save(catalogue: &Catalogue, log: &str, path: &Path) -> Result<u64, SearchError> {
    let io = |e: std::io::Error| corrupt(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("part");
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    write(catalogue, log, &mut w)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let bytes = file.metadata().map_err(io)?.len();
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(bytes)
}

/// Reads a snapshot file; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<(Catalogue, String)>, SearchError> {
    match std::fs::File::open(path) {
        Ok(f) => read(&mut std::io::BufReader::with_capacity(1 << 20, f)).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(corrupt(format!("{}: {e}", path.display()))),
    }
}

fn take<const N: usize>(r: &mut impl Read) -> Result<[u8; N], SearchError> {
    let mut b = [0; N];
    r.read_exact(&mut b)
        .map_err(|e| corrupt(format!("cut short: {e}")))?;
    Ok(b)
}

fn put_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn get_str(r: &mut impl Read) -> Result<String, SearchError> {
    let len = u32::from_le_bytes(take(r)?) as usize;
    if len > 1 << 20 {
        return Err(corrupt(format!("a string of {len} bytes")));
    }
    let mut bytes = vec![0; len];
    r.read_exact(&mut bytes)
        .map_err(|e| corrupt(format!("cut short: {e}")))?;
    String::from_utf8(bytes).map_err(|_| corrupt("a string is not UTF-8"))
}
