//! The index file: little-endian, versioned, read back bit for bit.
//!
//! ```text
//! "DRHNSW01"  magic and format version
//! u32 dims, u32 m, u32 ef_construction, u64 seed, u64 rng state
//! u32 nodes, u32 entry (u32::MAX: none)
//! nodes × f32 × dims          the vectors
//! nodes × u8                  deleted flags
//! per node: u8 layers, then per layer u32 count and count × u32 links
//! ```

use std::io::{self, Read, Write};

use crate::{Hnsw, Params};

const MAGIC: &[u8; 8] = b"DRHNSW01";

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading or writing the index: {0}")]
    Io(#[from] io::Error),
    #[error("not an index file of this version (magic {0:?})")]
    Magic(Vec<u8>),
    #[error("the index file is inconsistent: {0}")]
    Corrupt(String),
}

fn u32_of(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u64_of(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

impl Hnsw {
    /// Writes the index (buffer `w` yourself for speed).
    pub fn write(&self, w: &mut impl Write) -> Result<(), FileError> {
        w.write_all(MAGIC)?;
        for v in [
            self.dims as u32,
            self.params.m as u32,
            self.params.ef_construction as u32,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        w.write_all(&self.params.seed.to_le_bytes())?;
        w.write_all(&self.rng.to_le_bytes())?;
        w.write_all(&(self.nodes() as u32).to_le_bytes())?;
        w.write_all(&self.entry.unwrap_or(u32::MAX).to_le_bytes())?;
        for v in &self.vectors {
            w.write_all(&v.to_le_bytes())?;
        }
        let flags: Vec<u8> = self.deleted.iter().map(|&d| u8::from(d)).collect();
        w.write_all(&flags)?;
        for layers in &self.links {
            w.write_all(&[layers.len() as u8])?;
            for links in layers {
                w.write_all(&(links.len() as u32).to_le_bytes())?;
                for l in links {
                    w.write_all(&l.to_le_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Reads an index [`Hnsw::write`] wrote, checking that every link and
    /// the entry point name a node.
    pub fn read(r: &mut impl Read) -> Result<Hnsw, FileError> {
        let mut magic = [0; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(FileError::Magic(magic.to_vec()));
        }
        let dims = u32_of(r)? as usize;
        let m = u32_of(r)? as usize;
        let ef_construction = u32_of(r)? as usize;
        let seed = u64_of(r)?;
        let rng = u64_of(r)?;
        let nodes = u32_of(r)? as usize;
        let entry = u32_of(r)?;
        let corrupt = |what: String| FileError::Corrupt(what);
        let mut bytes = vec![0u8; nodes * dims * 4];
        r.read_exact(&mut bytes)?;
        let vectors = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut flags = vec![0u8; nodes];
        r.read_exact(&mut flags)?;
        let deleted: Vec<bool> = flags.iter().map(|&f| f != 0).collect();
        let mut links = Vec::with_capacity(nodes);
        for node in 0..nodes {
            let mut count = [0u8; 1];
            r.read_exact(&mut count)?;
            let mut layers = Vec::with_capacity(count[0] as usize);
            for _ in 0..count[0] {
                let n = u32_of(r)? as usize;
                if n > nodes {
                    return Err(corrupt(format!("node {node} has {n} links")));
                }
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    let l = u32_of(r)?;
                    if l as usize >= nodes {
                        return Err(corrupt(format!("node {node} links to {l}")));
                    }
                    list.push(l);
                }
                layers.push(list);
            }
            if layers.is_empty() {
                return Err(corrupt(format!("node {node} has no layer")));
            }
            links.push(layers);
        }
        let entry = (entry != u32::MAX).then_some(entry);
        if entry.is_some_and(|e| e as usize >= nodes) || (entry.is_none() && nodes > 0) {
            return Err(corrupt("the entry point names no node".into()));
        }
        let live = deleted.iter().filter(|&&d| !d).count();
        Ok(Hnsw {
            dims,
            params: Params {
                m,
                ef_construction,
                seed,
            },
            vectors,
            links,
            deleted,
            live,
            entry,
            rng,
        })
    }
}
