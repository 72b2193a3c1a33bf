//! [`PhotoIndex`]: the graph keyed by photo id, with the store position it
//! is current to, kept in one file.
//!
//! ```text
//! "DRPIDX01", u16 + bytes model, i64 last seq, u32 ids, per id u16 + bytes,
//! then the graph (see `file.rs`)
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use crate::{FileError, Hnsw, Params, VectorError};

const MAGIC: &[u8; 8] = b"DRPIDX01";

/// Photo embeddings of one model, searchable by similarity.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoIndex {
    /// The embedding model the vectors come from.
    pub model: String,
    /// The store position (`seq`) the index has read up to.
    pub last_seq: i64,
    hnsw: Hnsw,
    /// Node → photo id (a replaced or removed photo's old node keeps its id).
    ids: Vec<String>,
    /// Photo id → its live node.
    by_id: HashMap<String, u32>,
}

impl PhotoIndex {
    pub fn new(model: &str, dims: usize, params: Params) -> PhotoIndex {
        PhotoIndex {
            model: model.to_string(),
            last_seq: 0,
            hnsw: Hnsw::new(dims, params),
            ids: Vec::new(),
            by_id: HashMap::new(),
        }
    }

    /// An index over a graph built elsewhere: node `i` is photo `ids[i]`
    /// (every node live). For benchmarks that build one graph and put it
    /// behind several front ends; the ids must be distinct.
    pub fn from_graph(
        model: &str,
        hnsw: Hnsw,
        ids: Vec<String>,
    ) -> Result<PhotoIndex, VectorError> {
        if ids.len() != hnsw.nodes() {
            return Err(VectorError::Mismatch(format!(
                "{} ids for a graph of {} nodes",
                ids.len(),
                hnsw.nodes()
            )));
        }
        let by_id: HashMap<String, u32> = ids
            .iter()
            .enumerate()
            .filter(|(n, _)| !hnsw.is_deleted(*n as u32))
            .map(|(n, id)| (id.clone(), n as u32))
            .collect();
        if by_id.len() != hnsw.len() {
            return Err(VectorError::Mismatch("the ids are not distinct".into()));
        }
        Ok(PhotoIndex {
            model: model.to_string(),
            last_seq: 0,
            hnsw,
            ids,
            by_id,
        })
    }

    /// Photos in the index.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn graph(&self) -> &Hnsw {
        &self.hnsw
    }

    /// The photo's vector, if it is in the index.
    pub fn vector(&self, id: &str) -> Option<&[f32]> {
        self.by_id.get(id).map(|&n| self.hnsw.vector(n))
    }

    /// Adds a photo's embedding, replacing the one it had (the same vector
    /// again changes nothing, so replaying an event is harmless).
    pub fn upsert(&mut self, id: &str, vector: &[f32]) -> Result<(), VectorError> {
        if self.vector(id) == Some(vector) {
            return Ok(());
        }
        let node = self.hnsw.insert(vector)?;
        if let Some(old) = self.by_id.insert(id.to_string(), node) {
            self.hnsw.delete(old);
        }
        self.ids.push(id.to_string());
        Ok(())
    }

    /// Takes a photo out; false when it was not in.
    pub fn remove(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(node) => self.hnsw.delete(node),
            None => false,
        }
    }

    /// The node holding a photo's vector now.
    pub fn node_of(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// The photo a node belongs to (a replaced or removed photo's old node
    /// keeps its id; such nodes are never returned by a search).
    pub fn id_of(&self, node: u32) -> &str {
        &self.ids[node as usize]
    }

    /// Like [`PhotoIndex::search`], with `keep` asked by node: a caller
    /// that maps nodes to its own records (an array) skips the id lookups.
    pub fn search_nodes(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        self.hnsw.search(q, k, ef, keep)
    }

    /// The `k` photos most similar to `q` that `keep` accepts, best first.
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(&str, f32)>, VectorError> {
        let found = self
            .hnsw
            .search(q, k, ef, &|n| keep(&self.ids[n as usize]))?;
        Ok(found
            .into_iter()
            .map(|(n, s)| (self.ids[n as usize].as_str(), s))
            .collect())
    }

    /// Writes the index to `path` atomically (a temporary file renamed into
    /// place), so a reader never sees half a file.
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("part");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        self.write_to(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<PhotoIndex, FileError> {
        PhotoIndex::read_from(&mut std::io::BufReader::new(std::fs::File::open(path)?))
    }

    /// The index in its file format, to any writer (a snapshot embeds it).
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), FileError> {
        w.write_all(MAGIC)?;
        write_str(w, &self.model)?;
        w.write_all(&self.last_seq.to_le_bytes())?;
        w.write_all(&(self.ids.len() as u32).to_le_bytes())?;
        for id in &self.ids {
            write_str(w, id)?;
        }
        self.hnsw.write(w)
    }

    pub fn read_from(r: &mut impl Read) -> Result<PhotoIndex, FileError> {
        let mut magic = [0; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(FileError::Magic(magic.to_vec()));
        }
        let model = read_str(r)?;
        let mut seq = [0; 8];
        r.read_exact(&mut seq)?;
        let mut count = [0; 4];
        r.read_exact(&mut count)?;
        let count = u32::from_le_bytes(count) as usize;
        let mut ids = Vec::with_capacity(count.min(1 << 24));
        for _ in 0..count {
            ids.push(read_str(r)?);
        }
        let hnsw = Hnsw::read(r)?;
        if hnsw.nodes() != ids.len() {
            return Err(FileError::Corrupt(format!(
                "{} ids for {} nodes",
                ids.len(),
                hnsw.nodes()
            )));
        }
        let by_id = (0..ids.len() as u32)
            .filter(|&n| !hnsw.is_deleted(n))
            .map(|n| (ids[n as usize].clone(), n))
            .collect();
        Ok(PhotoIndex {
            model,
            last_seq: i64::from_le_bytes(seq),
            hnsw,
            ids,
            by_id,
        })
    }
}

pub(crate) fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u16).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

pub(crate) fn read_str(r: &mut impl Read) -> Result<String, FileError> {
    let mut len = [0; 2];
    r.read_exact(&mut len)?;
    let mut bytes = vec![0; u16::from_le_bytes(len) as usize];
    r.read_exact(&mut bytes)?;
    String::from_utf8(bytes).map_err(|_| FileError::Corrupt("an id is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(i: usize, dims: usize) -> Vec<f32> {
        let mut v = vec![0.01; dims];
        v[i % dims] = 1.0;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn photos_are_found_replaced_removed_and_kept_in_a_file() {
        let mut index = PhotoIndex::new("effnet", 8, Params::default());
        for i in 0..40 {
            index.upsert(&format!("p{i}"), &unit(i, 8)).unwrap();
        }
        assert_eq!(index.len(), 40);
        let top = index.search(&unit(3, 8), 1, 16, &|_| true).unwrap();
        assert!(top[0].0.ends_with('3'), "{top:?}");
        // p3 moves: its new vector is found, the old one is gone.
        index.upsert("p3", &unit(5, 8)).unwrap();
        // The same vector again (an event replayed) adds no node.
        let nodes = index.graph().nodes();
        index.upsert("p3", &unit(5, 8)).unwrap();
        assert_eq!(index.graph().nodes(), nodes);
        assert_eq!(index.vector("p3"), Some(&unit(5, 8)[..]));
        assert_eq!(index.len(), 40);
        let near_5: Vec<&str> = index
            .search(&unit(5, 8), 6, 32, &|_| true)
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert!(near_5.contains(&"p3"), "{near_5:?}");
        assert_eq!(near_5.iter().filter(|id| **id == "p3").count(), 1);
        assert!(index.remove("p5"));
        assert!(!index.remove("p5"));
        let only_odd = index.search(&unit(5, 8), 3, 32, &|id| id != "p13").unwrap();
        assert!(only_odd.iter().all(|r| r.0 != "p5" && r.0 != "p13"));

        index.last_seq = 77;
        let dir = std::env::temp_dir().join(format!("darkroom-vector-{}", std::process::id()));
        let path = dir.join("index.bin");
        index.save(&path).unwrap();
        let back = PhotoIndex::load(&path).unwrap();
        assert_eq!(back, index);
        std::fs::write(&path, b"DRPIDX99").unwrap();
        assert!(matches!(PhotoIndex::load(&path), Err(FileError::Magic(_))));
        let _ = std::fs::remove_dir_all(dir);
    }
}
