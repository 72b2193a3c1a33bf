//! Reads PyTorch's legacy (pre-1.6, non-zip) `torch.save` files into a state
//! dict of f32 tensors, so weights shipped in registry packages convert without
//! torch.
//!
//! The file is five pickles back to back (magic number, protocol version,
//! sys-info, the saved object, the list of storage keys) followed by each
//! storage, in key-list order, as an int64 element count and raw little-endian
//! data. Only the protocol-2 pickle opcodes torch emits for state dicts are
//! interpreted,
//! and only three callables are honoured (`OrderedDict`, `_rebuild_tensor_v2`,
//! the storage type names), so a hostile file can never run code: anything
//! else is a typed error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

/// `torch.serialization.MAGIC_NUMBER`, the first pickle of every legacy file.
const MAGIC_NUMBER: i128 = 0x1950a86a20f9469cfc6c;
/// `torch.serialization.PROTOCOL_VERSION`, the second pickle.
const PROTOCOL_VERSION: i128 = 1001;

#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("file ends at byte {offset} but {wanted} more bytes were expected")]
    Truncated { offset: usize, wanted: usize },
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {offset}")]
    UnknownOpcode { opcode: u8, offset: usize },
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    #[error("pickle calls {module}.{name}, which this reader refuses to run")]
    UnsupportedGlobal { module: String, name: String },
    #[error("storage type {0} is not supported (float and integer storages are)")]
    UnsupportedStorage(String),
    #[error("not a legacy torch file: {0}")]
    NotLegacyFormat(String),
    #[error("tensor {name} reads storage {key} outside its {len} elements")]
    OutOfBounds {
        name: String,
        key: String,
        len: usize,
    },
    #[error("tensor {name} refers to storage {key}, which the file does not hold")]
    MissingStorage { name: String, key: String },
    #[error("the saved object is not a state dict: {0}")]
    NotAStateDict(String),
}

/// A dense, row-major (C-contiguous) f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Named tensors in the order the file lists them; lookups go through an index
/// because graph builders fetch weights by name.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

impl StateDict {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a tensor; a replaced one keeps its original position.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => self.entries[i].1 = tensor,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, tensor));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Total element count over every tensor, buffers included.
    pub fn num_elements(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.numel()).sum()
    }

    /// Learnable parameters only: BatchNorm running statistics and step
    /// counters are buffers, so they are left out, as `model.parameters()` does.
    pub fn num_parameters(&self) -> usize {
        self.iter()
            .filter(|(n, _)| {
                !(n.ends_with(".running_mean")
                    || n.ends_with(".running_var")
                    || n.ends_with(".num_batches_tracked"))
            })
            .map(|(_, t)| t.numel())
            .sum()
    }
}

/// Reads a legacy `torch.save` file holding a state dict.
pub fn load_state_dict(path: &Path) -> Result<StateDict, TorchError> {
    let bytes = std::fs::read(path).map_err(|source| TorchError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_state_dict(&bytes)
}

/// Same as [`load_state_dict`], from bytes already in memory.
pub fn parse_state_dict(bytes: &[u8]) -> Result<StateDict, TorchError> {
    let not_legacy = |why: &str| TorchError::NotLegacyFormat(why.into());
    let mut r = Reader { bytes, pos: 0 };
    if unpickle(&mut r)?.as_int() != Some(MAGIC_NUMBER) {
        return Err(not_legacy(
            "no magic number (zip-format files are not handled here)",
        ));
    }
    if unpickle(&mut r)?.as_int() != Some(PROTOCOL_VERSION) {
        return Err(not_legacy("unknown protocol version"));
    }
    if unpickle(&mut r)?.dict_get("little_endian") == Some(Value::Bool(false)) {
        return Err(not_legacy("big-endian file"));
    }
    let object = unpickle(&mut r)?;
    let Value::List(keys) = unpickle(&mut r)? else {
        return Err(not_legacy("no storage key list"));
    };
    let Value::Dict(items) = object else {
        return Err(TorchError::NotAStateDict(format!("a {}", object.kind())));
    };
    let mut tensors = Vec::new();
    for (k, v) in items.borrow().iter() {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            let (k, v) = (k.kind(), v.kind());
            return Err(TorchError::NotAStateDict(format!(
                "a {k} key maps to a {v}"
            )));
        };
        tensors.push((name.clone(), t.clone()));
    }

    // The raw data gives only an element count: the element size comes from
    // the storage type the pickle named. torch writes exactly the storages
    // the object refers to, so every key has a tensor.
    let dtypes: HashMap<&str, Dtype> = tensors
        .iter()
        .map(|(_, t)| (t.key.as_str(), t.dtype))
        .collect();
    let mut storages: HashMap<String, Vec<f32>> = HashMap::new();
    for key in keys.borrow().iter() {
        let at = r.pos;
        let Value::Str(key) = key else {
            return Err(not_legacy("a storage key is not a string"));
        };
        let dtype = *dtypes
            .get(key.as_str())
            .ok_or_else(|| malformed(at, format!("no tensor uses storage {key}")))?;
        let count = usize::try_from(r.u64()?).map_err(|_| malformed(at, "storage too large"))?;
        let len = count
            .checked_mul(dtype.size())
            .ok_or_else(|| malformed(at, "storage too large"))?;
        storages.insert(key.clone(), dtype.decode(r.take(len)?));
    }

    let mut dict = StateDict::new();
    for (name, t) in tensors {
        let key = t.key.clone();
        let Some(storage) = storages.get(&key) else {
            return Err(TorchError::MissingStorage { name, key });
        };
        let Some(data) = gather(storage, &t) else {
            let len = storage.len();
            return Err(TorchError::OutOfBounds { name, key, len });
        };
        dict.insert(
            name,
            Tensor {
                shape: t.shape,
                data,
            },
        );
    }
    Ok(dict)
}

/// Copies a strided view out of its storage in row-major order; `None` when
/// any element would fall outside the storage.
fn gather(storage: &[f32], t: &TensorRef) -> Option<Vec<f32>> {
    let numel: usize = t.shape.iter().product();
    if numel == 0 {
        return Some(Vec::new());
    }
    // The farthest element; checked, since shapes and strides come from
    // the file.
    let mut last = t.offset;
    for (&n, &s) in t.shape.iter().zip(&t.stride) {
        last = last.checked_add((n - 1).checked_mul(s)?)?;
    }
    if last >= storage.len() {
        return None;
    }
    let mut contiguous = vec![1; t.shape.len()];
    for i in (0..t.shape.len().saturating_sub(1)).rev() {
        contiguous[i] = contiguous[i + 1] * t.shape[i + 1];
    }
    if contiguous == t.stride {
        return Some(storage[t.offset..t.offset + numel].to_vec());
    }
    let mut out = Vec::with_capacity(numel);
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let at: usize = index.iter().zip(&t.stride).map(|(i, s)| i * s).sum();
        out.push(storage[t.offset + at]);
        // Odometer increment over the shape, last axis fastest.
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Some(out)
}

mod pickle;

use pickle::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes pickle opcodes by hand, the way torch's legacy writer does.
    #[derive(Default)]
    struct P(Vec<u8>);

    impl P {
        fn op(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn s(self, text: &str) -> Self {
            let len = (text.len() as u32).to_le_bytes();
            self.op(b"X").op(&len).op(text.as_bytes())
        }
        fn int(self, v: u8) -> Self {
            self.op(&[b'K', v])
        }
        fn tuple(self, v: &[u8]) -> Self {
            v.iter().fold(self.op(b"("), |p, &x| p.int(x)).op(b"t")
        }
        fn global(self, module: &str, name: &str) -> Self {
            self.op(format!("c{module}\n{name}\n").as_bytes())
        }
        /// `key: _rebuild_tensor_v2((storage pid), offset, shape, stride, False, OrderedDict())`
        fn tensor(
            self,
            name: &str,
            storage: (&str, &str),
            off: u8,
            shape: &[u8],
            stride: &[u8],
        ) -> Self {
            let pid = self
                .s(name)
                .global("torch._utils", "_rebuild_tensor_v2")
                .op(b"((")
                .s("storage");
            let pid = pid
                .global("torch", storage.1)
                .s(storage.0)
                .s("cpu")
                .int(6)
                .op(b"NtQ");
            let args = pid.int(off).tuple(shape).tuple(stride).op(&[0x89]);
            args.global("collections", "OrderedDict").op(b")RtR")
        }
        fn stop(self) -> Vec<u8> {
            self.op(b".").0
        }
    }

    /// A whole legacy file around `entries` (key/tensor pairs of the dict).
    fn file(entries: P, storages: &[(&str, u64, Vec<u8>)]) -> Vec<u8> {
        let magic = &(MAGIC_NUMBER as u128).to_le_bytes()[..10];
        let mut out = P::default().op(&[0x80, 2, 0x8a, 10]).op(magic).stop();
        out.extend(P::default().op(&[0x80, 2, b'M', 0xe9, 0x03]).stop());
        out.extend(
            P::default()
                .op(b"}")
                .s("little_endian")
                .op(&[0x88, b's'])
                .stop(),
        );
        let dict = P::default()
            .global("collections", "OrderedDict")
            .op(b")Rq\x00(");
        // Torch ends with BUILD of the `_metadata` attribute dict.
        let dict = dict.op(&entries.0).op(b"u}").s("_metadata").op(b"}sb");
        out.extend(dict.stop());
        let keys = storages
            .iter()
            .fold(P::default().op(b"]("), |p, s| p.s(s.0));
        out.extend(keys.op(b"e").stop());
        for (_, count, raw) in storages {
            out.extend(count.to_le_bytes());
            out.extend(raw);
        }
        out
    }

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_strided_offset_and_integer_tensors_in_file_order() {
        let f = ("7", "FloatStorage");
        let entries = P::default()
            .tensor("z.weight", f, 0, &[2, 3], &[3, 1])
            .tensor("a.transposed", f, 0, &[3, 2], &[1, 3])
            .tensor("m.tail", f, 4, &[2], &[1])
            .tensor("bn.num_batches_tracked", ("9", "LongStorage"), 0, &[], &[]);
        let storages = [
            ("7", 6, floats(&[0., 1., 2., 3., 4., 5.])),
            ("9", 1, 7i64.to_le_bytes().to_vec()),
        ];
        let sd = parse_state_dict(&file(entries, &storages)).unwrap();
        let names: Vec<_> = sd.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "z.weight",
                "a.transposed",
                "m.tail",
                "bn.num_batches_tracked"
            ]
        );
        assert_eq!(sd.get("z.weight").unwrap().data, [0., 1., 2., 3., 4., 5.]);
        let t = sd.get("a.transposed").unwrap();
        assert_eq!(
            (t.shape.as_slice(), t.data.as_slice()),
            (&[3, 2][..], &[0., 3., 1., 4., 2., 5.][..])
        );
        assert_eq!(sd.get("m.tail").unwrap().data, [4., 5.]);
        assert_eq!(sd.get("bn.num_batches_tracked").unwrap().data, [7.]);
        assert_eq!((sd.num_elements(), sd.num_parameters()), (15, 14));
    }

    #[test]
    fn views_past_the_storage_end_are_refused() {
        let entries = P::default().tensor("w", ("0", "FloatStorage"), 4, &[3], &[1]);
        let bytes = file(entries, &[("0", 6, floats(&[0.; 6]))]);
        let err = parse_state_dict(&bytes).unwrap_err();
        assert!(
            matches!(err, TorchError::OutOfBounds { len: 6, .. }),
            "{err}"
        );
    }

    #[test]
    fn short_storage_data_is_truncation() {
        let entries = P::default().tensor("w", ("0", "FloatStorage"), 0, &[6], &[1]);
        let bytes = file(entries, &[("0", 6, floats(&[0.; 5]))]);
        let err = parse_state_dict(&bytes).unwrap_err();
        assert!(
            matches!(err, TorchError::Truncated { wanted: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn unknown_opcodes_are_named_with_their_offset() {
        let mut r = Reader {
            bytes: &[0x80, 2, b'N', 0x94, b'.'],
            pos: 0,
        };
        let err = unpickle(&mut r).unwrap_err();
        assert!(
            matches!(
                err,
                TorchError::UnknownOpcode {
                    opcode: 0x94,
                    offset: 3
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn arbitrary_callables_are_refused() {
        let bytes = P::default()
            .global("os", "system")
            .s("true")
            .op(&[0x85, b'R'])
            .stop();
        let err = unpickle(&mut Reader {
            bytes: &bytes,
            pos: 0,
        })
        .unwrap_err();
        assert!(matches!(err, TorchError::UnsupportedGlobal { ref module, .. } if module == "os"));
    }

    #[test]
    fn a_dict_keyed_by_itself_is_an_error_not_a_panic() {
        let bytes = P::default().op(b"}q\x00h\x00K\x01s.").0;
        let err = unpickle(&mut Reader {
            bytes: &bytes,
            pos: 0,
        })
        .unwrap_err();
        assert!(
            matches!(err, TorchError::Malformed { offset: 7, .. }),
            "{err}"
        );
    }

    #[test]
    fn memo_aliases_containers_and_long1_sign_extends() {
        // (list memoised before an append, then fetched again, then LONG1 -1)
        let bytes = P::default()
            .op(b"(]q\x00K\x05ah\x00")
            .op(&[0x8a, 1, 0xff, b't'])
            .stop();
        let Value::Tuple(items) = unpickle(&mut Reader {
            bytes: &bytes,
            pos: 0,
        })
        .unwrap() else {
            panic!("not a tuple");
        };
        let Value::List(memoised) = &items[1] else {
            panic!("not a list")
        };
        assert_eq!(*memoised.borrow(), [Value::Int(5)]);
        assert_eq!(items[2], Value::Int(-1));
    }
}
