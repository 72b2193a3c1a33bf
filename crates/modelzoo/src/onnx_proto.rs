//! A hand-written protobuf encoder (and a tiny wire-format reader) for the
//! slice of ONNX that our converters emit, so building a model needs neither
//! protobuf code generation nor a Python toolchain.
//!
//! Field numbers are those of `onnx/onnx.proto` (checked against the `onnx`
//! Python package's descriptors). Repeated scalars are written unpacked, the
//! proto2 default that `onnx.proto` declares; readers accept either form.

/// ONNX IR version 8 (ONNX 1.10+), which every current runtime loads.
pub const IR_VERSION: i64 = 8;
/// The default-domain operator set the graphs are written against.
pub const OPSET_VERSION: i64 = 13;

/// `TensorProto.DataType` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Float = 1,
    Int64 = 7,
}

/// One dimension of a graph input or output: fixed, or a symbol such as the
/// batch size "N" that the runtime binds per call.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Fixed(i64),
    Symbol(String),
}

/// Node attribute values (`AttributeProto` with its `type` tag).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(String),
    Ints(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<(String, AttrValue)>,
}

/// A constant tensor stored in `raw_data` (little-endian, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    pub name: String,
    pub data_type: DataType,
    pub dims: Vec<i64>,
    pub raw_data: Vec<u8>,
}

impl Initializer {
    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}

/// A typed, shaped graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: DataType,
    pub dims: Vec<Dim>,
}

/// A graph under construction; nodes must be added in topological order,
/// which ONNX requires and which building front to back gives for free.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Initializer>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub fn input(&mut self, name: &str, elem_type: DataType, dims: Vec<Dim>) {
        let name = name.to_owned();
        self.inputs.push(ValueInfo {
            name,
            elem_type,
            dims,
        });
    }

    pub fn output(&mut self, name: &str, elem_type: DataType, dims: Vec<Dim>) {
        let name = name.to_owned();
        self.outputs.push(ValueInfo {
            name,
            elem_type,
            dims,
        });
    }

    /// Adds a float32 constant and returns its name, for use as a node input.
    pub fn constant_f32(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        assert_eq!(
            dims.iter().product::<usize>(),
            data.len(),
            "{name}: shape and data disagree"
        );
        let raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, DataType::Float, dims, raw_data)
    }

    /// Adds an int64 constant (shapes, axes) and returns its name.
    pub fn constant_i64(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        assert_eq!(
            dims.iter().product::<usize>(),
            data.len(),
            "{name}: shape and data disagree"
        );
        let raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, DataType::Int64, dims, raw_data)
    }

    fn push_initializer(
        &mut self,
        name: &str,
        data_type: DataType,
        dims: &[usize],
        raw_data: Vec<u8>,
    ) -> String {
        self.initializers.push(Initializer {
            name: name.to_owned(),
            data_type,
            dims: dims.iter().map(|&d| d as i64).collect(),
            raw_data,
        });
        name.to_owned()
    }

    /// Adds a node with one output named after the node, and returns that
    /// name, so chains read `let y = g.op("conv1", "Conv", &[&x, &w], ...)`.
    pub fn op(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<(&str, AttrValue)>,
    ) -> String {
        self.op_to(name, op_type, inputs, name, attributes);
        name.to_owned()
    }

    /// Like [`Graph::op`] with an explicit output name (a graph output).
    pub fn op_to(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<(&str, AttrValue)>,
    ) {
        self.nodes.push(Node {
            name: name.to_owned(),
            op_type: op_type.to_owned(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.to_owned()],
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        });
    }

    /// Number of constant float values (the model's parameters once folded).
    pub fn num_parameters(&self) -> usize {
        let floats = self
            .initializers
            .iter()
            .filter(|t| t.data_type == DataType::Float);
        floats.map(Initializer::numel).sum()
    }
}

/// A whole model: the graph plus the header runtimes check first.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub producer_name: String,
    pub producer_version: String,
    pub doc_string: String,
    pub graph: Graph,
}

impl Model {
    pub fn new(graph: Graph) -> Self {
        Self {
            producer_name: "darkroom".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: String::new(),
            graph,
        }
    }

    /// Serialises to the ONNX `ModelProto` wire format.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.varint_field(1, IR_VERSION as u64);
        w.string(2, &self.producer_name);
        w.string(3, &self.producer_version);
        if !self.doc_string.is_empty() {
            w.string(6, &self.doc_string);
        }
        w.message(7, |w| encode_graph(w, &self.graph));
        // OperatorSetIdProto { domain: "" (the default domain), version }
        w.message(8, |w| {
            w.string(1, "");
            w.varint_field(2, OPSET_VERSION as u64);
        });
        w.buf
    }
}

fn encode_graph(w: &mut Writer, g: &Graph) {
    for node in &g.nodes {
        w.message(1, |w| encode_node(w, node));
    }
    w.string(2, &g.name);
    for t in &g.initializers {
        w.message(5, |w| {
            for &d in &t.dims {
                w.varint_field(1, d as u64);
            }
            w.varint_field(2, t.data_type as u64);
            w.string(8, &t.name);
            w.bytes(9, &t.raw_data);
        });
    }
    for (field, infos) in [(11, &g.inputs), (12, &g.outputs)] {
        for info in infos {
            w.message(field, |w| encode_value_info(w, info));
        }
    }
}

fn encode_node(w: &mut Writer, n: &Node) {
    for input in &n.inputs {
        w.string(1, input);
    }
    for output in &n.outputs {
        w.string(2, output);
    }
    w.string(3, &n.name);
    w.string(4, &n.op_type);
    for (name, value) in &n.attributes {
        // AttributeProto: name 1, f 2, i 3, s 4, ints 8, type 20.
        w.message(5, |w| {
            w.string(1, name);
            let kind = match value {
                AttrValue::Float(f) => {
                    w.tag(2, 5);
                    w.buf.extend(f.to_le_bytes());
                    1
                }
                AttrValue::Int(i) => {
                    w.varint_field(3, *i as u64);
                    2
                }
                AttrValue::String(s) => {
                    w.string(4, s);
                    3
                }
                AttrValue::Ints(v) => {
                    for &i in v {
                        w.varint_field(8, i as u64);
                    }
                    7
                }
            };
            w.varint_field(20, kind);
        });
    }
}

fn encode_value_info(w: &mut Writer, v: &ValueInfo) {
    w.string(1, &v.name);
    // TypeProto.tensor_type { elem_type 1, shape 2 { dim 1 { value 1 | param 2 } } }
    w.message(2, |w| {
        w.message(1, |w| {
            w.varint_field(1, v.elem_type as u64);
            w.message(2, |w| {
                for d in &v.dims {
                    w.message(1, |w| match d {
                        Dim::Fixed(n) => w.varint_field(1, *n as u64),
                        Dim::Symbol(s) => w.string(2, s),
                    });
                }
            });
        });
    });
}

/// Protobuf wire-format writer. Nested messages are encoded into a scratch
/// buffer first because their length prefix comes before them; for the
/// 18 MB of weights that costs a few copies, far less than a second pass.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u8) {
        self.varint(((field as u64) << 3) | wire_type as u64);
    }

    /// int32/int64/enum fields; negative int64 is its two's complement, as
    /// protobuf specifies (ten bytes).
    fn varint_field(&mut self, field: u32, v: u64) {
        self.tag(field, 0);
        self.varint(v);
    }

    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.tag(field, 2);
        self.varint(data.len() as u64);
        self.buf.extend_from_slice(data);
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        body(&mut inner);
        self.bytes(field, &inner.buf);
    }
}

/// A field as it appears on the wire, for inspecting encoded models in tests
/// and sanity checks without a schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("protobuf message ends inside a field at byte {0}")]
    Truncated(usize),
    #[error("unsupported protobuf wire type {wire_type} at byte {offset}")]
    WireType { wire_type: u64, offset: usize },
}

/// Splits one message into `(field number, value)` pairs in wire order;
/// nested messages stay `Bytes` for the caller to decode in turn.
pub fn decode_fields(msg: &[u8]) -> Result<Vec<(u32, WireValue<'_>)>, WireError> {
    let mut pos = 0;
    let mut out = Vec::new();
    let varint = |pos: &mut usize| -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *msg.get(*pos).ok_or(WireError::Truncated(*pos))?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::Truncated(*pos))
    };
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], WireError> {
        let end = pos.checked_add(n).filter(|&e| e <= msg.len());
        let end = end.ok_or(WireError::Truncated(*pos))?;
        let s = &msg[*pos..end];
        *pos = end;
        Ok(s)
    };
    while pos < msg.len() {
        let at = pos;
        let key = varint(&mut pos)?;
        let value = match key & 7 {
            0 => WireValue::Varint(varint(&mut pos)?),
            1 => WireValue::Fixed64(u64::from_le_bytes(take(&mut pos, 8)?.try_into().unwrap())),
            2 => {
                let n = varint(&mut pos)? as usize;
                WireValue::Bytes(take(&mut pos, n)?)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(take(&mut pos, 4)?.try_into().unwrap())),
            wire_type => {
                return Err(WireError::WireType {
                    wire_type,
                    offset: at,
                })
            }
        };
        out.push(((key >> 3) as u32, value));
    }
    Ok(out)
}

/// The `Bytes` payloads of every occurrence of `field` (nested messages,
/// strings) in `msg`.
pub fn submessages(msg: &[u8], field: u32) -> Result<Vec<&[u8]>, WireError> {
    let fields = decode_fields(msg)?;
    let payloads = fields.into_iter().filter_map(|(f, v)| match v {
        WireValue::Bytes(b) if f == field => Some(b),
        _ => None,
    });
    Ok(payloads.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protobuf_spec() {
        let mut w = Writer::default();
        w.varint_field(1, 150); // the spec's example: 08 96 01
        w.varint_field(2, -1i64 as u64);
        assert_eq!(&w.buf[..3], [0x08, 0x96, 0x01]);
        assert_eq!(w.buf.len(), 3 + 1 + 10);
        let fields = decode_fields(&w.buf).unwrap();
        assert_eq!(
            fields,
            [
                (1, WireValue::Varint(150)),
                (2, WireValue::Varint(u64::MAX))
            ]
        );
    }

    #[test]
    fn attributes_carry_their_type_tag() {
        let mut w = Writer::default();
        let node = Node {
            name: "n".into(),
            op_type: "Conv".into(),
            inputs: vec!["x".into(), "w".into()],
            outputs: vec!["y".into()],
            attributes: vec![
                ("strides".into(), AttrValue::Ints(vec![2, 2])),
                ("alpha".into(), AttrValue::Float(0.5)),
            ],
        };
        encode_node(&mut w, &node);
        let attrs = submessages(&w.buf, 5).unwrap();
        let ints = decode_fields(attrs[0]).unwrap();
        assert_eq!(
            ints[1..],
            [
                (8, WireValue::Varint(2)),
                (8, WireValue::Varint(2)),
                (20, WireValue::Varint(7))
            ]
        );
        let float = decode_fields(attrs[1]).unwrap();
        assert_eq!(
            float[1..],
            [
                (2, WireValue::Fixed32(0.5f32.to_bits())),
                (20, WireValue::Varint(1))
            ]
        );
        assert_eq!(submessages(&w.buf, 1).unwrap(), [b"x".as_slice(), b"w"]);
    }

    #[test]
    fn model_header_names_ir_opset_and_producer() {
        let mut g = Graph::new("g");
        g.input(
            "x",
            DataType::Float,
            vec![Dim::Symbol("N".into()), Dim::Fixed(3)],
        );
        g.constant_f32("w", &[3], &[1.0, 2.0, 3.0]);
        g.op_to("id", "Identity", &["x"], "y", vec![]);
        g.output(
            "y",
            DataType::Float,
            vec![Dim::Symbol("N".into()), Dim::Fixed(3)],
        );
        assert_eq!(g.num_parameters(), 3);
        let bytes = Model::new(g).encode();
        let fields = decode_fields(&bytes).unwrap();
        assert_eq!(fields[0], (1, WireValue::Varint(8)));
        assert_eq!(fields[1], (2, WireValue::Bytes(b"darkroom")));
        let opset = submessages(&bytes, 8).unwrap();
        assert_eq!(
            decode_fields(opset[0]).unwrap()[1],
            (2, WireValue::Varint(13))
        );
        let graph = submessages(&bytes, 7).unwrap()[0];
        let init = submessages(graph, 5).unwrap()[0];
        assert_eq!(submessages(init, 9).unwrap()[0].len(), 12);
        assert!(decode_fields(&bytes[..bytes.len() - 1]).is_err());
    }
}
