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

/// Element types of torch storages; int64 is widened to f32 because a state
/// dict only holds small ones (`num_batches_tracked`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dtype {
    F32,
    I64,
}

impl Dtype {
    fn from_storage(name: &str) -> Result<Self, TorchError> {
        match name {
            "FloatStorage" => Ok(Self::F32),
            "LongStorage" => Ok(Self::I64),
            other => Err(TorchError::UnsupportedStorage(other.into())),
        }
    }

    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::I64 => 8,
        }
    }

    fn decode(self, raw: &[u8]) -> Vec<f32> {
        match self {
            Self::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Self::I64 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
        }
    }
}

/// A tensor as `_rebuild_tensor_v2` describes it, before its storage is read.
#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    key: String,
    dtype: Dtype,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// A storage named by a persistent id, not yet wrapped in a tensor.
#[derive(Debug, Clone, PartialEq)]
struct StorageRef {
    key: String,
    dtype: Dtype,
    /// Element offset of a legacy storage view into its root storage.
    view_offset: usize,
}

/// Pickle values. Dicts and lists are shared and mutable because the memo
/// and the stack alias the same object while SETITEMS fills it in.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    /// Wide enough for torch's 80-bit magic number.
    Int(i128),
    Str(String),
    Tuple(Vec<Value>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global {
        module: String,
        name: String,
    },
    Storage(StorageRef),
    Tensor(TensorRef),
    /// The MARK opcode's stack marker.
    Mark,
}

impl Value {
    /// A shallow description for errors: values can be self-referential, so
    /// they are never formatted whole.
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global { .. } => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Mark => "mark",
        }
    }

    fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    fn as_usize(&self) -> Option<usize> {
        self.as_int().and_then(|i| usize::try_from(i).ok())
    }

    fn dict_get(&self, key: &str) -> Option<Value> {
        let Value::Dict(items) = self else {
            return None;
        };
        let items = items.borrow();
        items
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v.clone())
    }
}

fn malformed(offset: usize, reason: impl Into<String>) -> TorchError {
    TorchError::Malformed {
        offset,
        reason: reason.into(),
    }
}

/// A cursor over the file; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TorchError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            let (offset, wanted) = (self.bytes.len(), n - left);
            return Err(TorchError::Truncated { offset, wanted });
        }
        self.pos += n;
        Ok(&self.bytes[self.pos - n..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TorchError> {
        Ok(self.take(N)?.try_into().unwrap())
    }

    fn u8(&mut self) -> Result<u8, TorchError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, TorchError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, TorchError> {
        self.array().map(u64::from_le_bytes)
    }

    /// `n` bytes of UTF-8 (BINUNICODE), or up to a newline when `n` is None
    /// (the text arguments of GLOBAL).
    fn text(&mut self, n: Option<usize>) -> Result<String, TorchError> {
        let start = self.pos;
        let raw = match n {
            Some(n) => self.take(n)?,
            None => {
                let rest = &self.bytes[start..];
                let n = rest.iter().position(|&b| b == b'\n');
                let n = n.ok_or(TorchError::Truncated {
                    offset: self.bytes.len(),
                    wanted: 1,
                })?;
                self.pos += n + 1;
                &rest[..n]
            }
        };
        let s = std::str::from_utf8(raw).map_err(|_| malformed(start, "text is not UTF-8"))?;
        Ok(s.to_owned())
    }
}

/// Runs one pickle (up to and including its STOP) from the reader's position.
fn unpickle(r: &mut Reader) -> Result<Value, TorchError> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    loop {
        let at = r.pos;
        let op = r.u8()?;
        let underflow = || malformed(at, "stack underflow");
        // The topmost `n` values, or everything above the topmost MARK
        // (removing the mark) when `n` is None.
        let mut pop_n = |n: Option<usize>| -> Result<Vec<Value>, TorchError> {
            let from = match n {
                Some(n) => stack.len().checked_sub(n).ok_or_else(underflow)?,
                None => {
                    let m = stack.iter().rposition(|v| *v == Value::Mark);
                    m.ok_or_else(|| malformed(at, "no MARK on the stack"))? + 1
                }
            };
            let items = stack.split_off(from);
            if n.is_none() {
                stack.pop();
            }
            Ok(items)
        };
        let pushed = match op {
            0x80 => r.u8().map(|_| None)?,                    // PROTO n
            b'.' => return stack.pop().ok_or_else(underflow), // STOP
            b'(' => Some(Value::Mark),
            b'N' => Some(Value::None),
            0x88 | 0x89 => Some(Value::Bool(op == 0x88)),
            b'K' => Some(Value::Int(r.u8()?.into())),
            b'M' => Some(Value::Int(u16::from_le_bytes(r.array()?).into())),
            b'J' => Some(Value::Int(i32::from_le_bytes(r.array()?).into())),
            0x8a => {
                // LONG1: n-byte little-endian two's complement; torch's magic
                // number needs 80 bits, hence i128.
                let n = r.u8()? as usize;
                let raw = r.take(n)?;
                if n > 16 {
                    return Err(malformed(at, "integer wider than 128 bits"));
                }
                let negative = raw.last().is_some_and(|b| b & 0x80 != 0);
                let mut buf = [if negative { 0xff } else { 0 }; 16];
                buf[..n].copy_from_slice(raw);
                Some(Value::Int(i128::from_le_bytes(buf)))
            }
            b'X' => {
                let n = r.u32()? as usize;
                Some(Value::Str(r.text(Some(n))?))
            }
            b')' => Some(Value::Tuple(Vec::new())),
            0x85..=0x87 => Some(Value::Tuple(pop_n(Some((op - 0x84) as usize))?)),
            b't' => Some(Value::Tuple(pop_n(None)?)),
            b']' => Some(Value::List(Rc::default())),
            b'}' => Some(Value::Dict(Rc::default())),
            b'a' | b'e' => {
                let items = pop_n(if op == b'a' { Some(1) } else { None })?;
                let Some(Value::List(list)) = stack.last() else {
                    return Err(malformed(at, "APPEND onto a non-list"));
                };
                list.borrow_mut().extend(items);
                None
            }
            b's' | b'u' => {
                let items = pop_n(if op == b's' { Some(2) } else { None })?;
                let Some(Value::Dict(dict)) = stack.last() else {
                    return Err(malformed(at, "SETITEM on a non-dict"));
                };
                if items.len() % 2 != 0 {
                    return Err(malformed(at, "SETITEMS with an odd item count"));
                }
                // Torch only uses string and int keys; refusing others also
                // keeps a dict from being compared with itself while borrowed.
                let scalar = |k: &Value| matches!(k, Value::Str(_) | Value::Int(_));
                if !items.iter().step_by(2).all(scalar) {
                    return Err(malformed(at, "dict key is not a string or integer"));
                }
                let mut dict = dict.borrow_mut();
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    match dict.iter_mut().find(|(old, _)| *old == k) {
                        Some(slot) => slot.1 = v,
                        None => dict.push((k, v)),
                    }
                }
                None
            }
            b'q' | b'r' => {
                let id = if op == b'q' { r.u8()?.into() } else { r.u32()? };
                memo.insert(id, stack.last().ok_or_else(underflow)?.clone());
                None
            }
            b'h' | b'j' => {
                let id = if op == b'h' { r.u8()?.into() } else { r.u32()? };
                let v = memo
                    .get(&id)
                    .ok_or_else(|| malformed(at, format!("memo {id} is unset")))?;
                Some(v.clone())
            }
            b'c' => {
                let module = r.text(None)?;
                let name = r.text(None)?;
                Some(Value::Global { module, name })
            }
            b'Q' => {
                let pid = stack.pop().ok_or_else(underflow)?;
                Some(Value::Storage(persistent_load(pid, at)?))
            }
            b'R' => {
                let [callable, args] = <[Value; 2]>::try_from(pop_n(Some(2))?).unwrap();
                Some(reduce(callable, args, at)?)
            }
            b'b' => {
                // BUILD sets attributes; the only target in a state dict is
                // its `_metadata` (module versions), which nothing needs.
                stack.pop().ok_or_else(underflow)?;
                stack.last().ok_or_else(underflow)?;
                None
            }
            _ => {
                return Err(TorchError::UnknownOpcode {
                    opcode: op,
                    offset: at,
                })
            }
        };
        stack.extend(pushed);
    }
}

/// Resolves `('storage', StorageType, key, location, size[, view])`.
fn persistent_load(pid: Value, at: usize) -> Result<StorageRef, TorchError> {
    let Value::Tuple(items) = pid else {
        return Err(malformed(at, "persistent id is not a tuple"));
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global { module, name }, Value::Str(key), _location, _size, view @ ..]
            if kind == "storage" =>
        {
            if module != "torch" {
                return Err(TorchError::UnsupportedGlobal {
                    module: module.clone(),
                    name: name.clone(),
                });
            }
            let dtype = Dtype::from_storage(name)?;
            // Old files store views as (view_key, offset, size); the data
            // lives in the root storage `key`, so only the offset matters.
            let view_offset = match view {
                [] | [Value::None] => 0,
                [Value::Tuple(v)] => match v.as_slice() {
                    [_, off, _] => off.as_usize().ok_or_else(|| malformed(at, "view offset"))?,
                    _ => return Err(malformed(at, "storage view is not a triple")),
                },
                _ => return Err(malformed(at, "unexpected persistent id fields")),
            };
            Ok(StorageRef {
                key: key.clone(),
                dtype,
                view_offset,
            })
        }
        _ => Err(malformed(at, "unsupported persistent id")),
    }
}

/// The only callables a state dict needs; everything else is refused.
fn reduce(callable: Value, args: Value, at: usize) -> Result<Value, TorchError> {
    let Value::Global { module, name } = callable else {
        return Err(malformed(at, "REDUCE on a non-global"));
    };
    let Value::Tuple(args) = args else {
        return Err(malformed(at, "REDUCE arguments are not a tuple"));
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Rc::default())),
        ("torch._utils", "_rebuild_tensor_v2") => {
            // (storage, storage_offset, size, stride, requires_grad, hooks[, metadata])
            let [Value::Storage(s), offset, Value::Tuple(size), Value::Tuple(stride), ..] =
                args.as_slice()
            else {
                return Err(malformed(at, "unexpected _rebuild_tensor_v2 arguments"));
            };
            let dims = |v: &[Value]| -> Result<Vec<usize>, TorchError> {
                v.iter()
                    .map(|d| {
                        d.as_usize()
                            .ok_or_else(|| malformed(at, "bad tensor dimension"))
                    })
                    .collect()
            };
            let shape = dims(size)?;
            let stride = dims(stride)?;
            if shape.len() != stride.len() {
                return Err(malformed(at, "size and stride differ in rank"));
            }
            let offset = offset
                .as_usize()
                .ok_or_else(|| malformed(at, "bad storage offset"))?;
            Ok(Value::Tensor(TensorRef {
                key: s.key.clone(),
                dtype: s.dtype,
                offset: offset + s.view_offset,
                shape,
                stride,
            }))
        }
        _ => Err(TorchError::UnsupportedGlobal { module, name }),
    }
}

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
