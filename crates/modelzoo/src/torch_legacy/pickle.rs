//! The pickle interpreter of the legacy format: the protocol-2 opcodes torch
//! emits for state dicts, and the three callables it honours.

use super::*;

/// Element types of torch storages; int64 is widened to f32 because a state
/// dict only holds small ones (`num_batches_tracked`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Dtype {
    F32,
    I64,
}

impl Dtype {
    pub(super) fn from_storage(name: &str) -> Result<Self, TorchError> {
        match name {
            "FloatStorage" => Ok(Self::F32),
            "LongStorage" => Ok(Self::I64),
            other => Err(TorchError::UnsupportedStorage(other.into())),
        }
    }

    pub(super) fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::I64 => 8,
        }
    }

    pub(super) fn decode(self, raw: &[u8]) -> Vec<f32> {
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
pub(super) struct TensorRef {
    pub(super) key: String,
    pub(super) dtype: Dtype,
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

/// A storage named by a persistent id, not yet wrapped in a tensor.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StorageRef {
    pub(super) key: String,
    pub(super) dtype: Dtype,
    /// Element offset of a legacy storage view into its root storage.
    pub(super) view_offset: usize,
}

/// Pickle values. Dicts and lists are shared and mutable because the memo
/// and the stack alias the same object while SETITEMS fills it in.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
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
    pub(super) fn kind(&self) -> &'static str {
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

    pub(super) fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub(super) fn as_usize(&self) -> Option<usize> {
        self.as_int().and_then(|i| usize::try_from(i).ok())
    }

    pub(super) fn dict_get(&self, key: &str) -> Option<Value> {
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

pub(super) fn malformed(offset: usize, reason: impl Into<String>) -> TorchError {
    TorchError::Malformed {
        offset,
        reason: reason.into(),
    }
}

/// A cursor over the file; every read is bounds-checked.
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], TorchError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            let (offset, wanted) = (self.bytes.len(), n - left);
            return Err(TorchError::Truncated { offset, wanted });
        }
        self.pos += n;
        Ok(&self.bytes[self.pos - n..self.pos])
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], TorchError> {
        Ok(self.take(N)?.try_into().unwrap())
    }

    pub(super) fn u8(&mut self) -> Result<u8, TorchError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, TorchError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, TorchError> {
        self.array().map(u64::from_le_bytes)
    }

    /// `n` bytes of UTF-8 (BINUNICODE), or up to a newline when `n` is None
    /// (the text arguments of GLOBAL).
    pub(super) fn text(&mut self, n: Option<usize>) -> Result<String, TorchError> {
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
pub(super) fn unpickle(r: &mut Reader) -> Result<Value, TorchError> {
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
pub(super) fn persistent_load(pid: Value, at: usize) -> Result<StorageRef, TorchError> {
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
pub(super) fn reduce(callable: Value, args: Value, at: usize) -> Result<Value, TorchError> {
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
