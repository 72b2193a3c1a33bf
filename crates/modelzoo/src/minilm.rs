//! Builds the MiniLM-L6 sentence encoder (sentence-transformers'
//! all-MiniLM-L6-v2, a 6-layer BERT with 384-wide hidden states) as an ONNX
//! graph from its `model.safetensors`, with the mean pooling and L2
//! normalisation of sentence-transformers inside the graph.
//!
//! The graph takes one float input, `tokens` [N, 2, L]: row 0 the WordPiece
//! ids, row 1 the attention mask (1 for a token, 0 for padding). Ids below
//! 2^24 are exact in float32, and one float input keeps the model behind the
//! same `Backend` as the photo models. Output `embedding` [N, 384].
//!
//! Opset 13 has no LayerNormalization or Gelu: both are written out
//! (mean, variance, `x · ½(1 + erf(x/√2))`), as BERT defines them.

use std::collections::HashMap;
use std::path::Path;

use crate::onnx_proto::{AttrValue, DataType, Dim, Graph, Model};

pub const INPUT: &str = "tokens";
pub const OUTPUT: &str = "embedding";
pub const HIDDEN: usize = 384;
pub const HEADS: usize = 12;
pub const LAYERS: usize = 6;
pub const INTERMEDIATE: usize = 1536;
const LAYER_NORM_EPS: f32 = 1e-12;

#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Format(String),
    #[error("the weights have no tensor {0}")]
    Missing(String),
    #[error("tensor {name} has shape {shape:?}; expected {expected:?}")]
    Shape {
        name: String,
        shape: Vec<usize>,
        expected: Vec<usize>,
    },
}

/// The float32 tensors of a `.safetensors` file.
pub struct Safetensors {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Safetensors {
    pub fn load(path: &Path) -> Result<Safetensors, SafetensorsError> {
        let bytes = std::fs::read(path).map_err(|source| SafetensorsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Safetensors::parse(&bytes)
    }

    /// `u64` header length, a JSON header (`name → {dtype, shape,
    /// data_offsets}`), then the data. Only F32 tensors are kept.
    pub fn parse(bytes: &[u8]) -> Result<Safetensors, SafetensorsError> {
        let bad = |m: String| SafetensorsError::Format(format!("not a safetensors file: {m}"));
        let len = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| bad("shorter than 8 bytes".into()))?;
        let header = bytes
            .get(8..8 + len)
            .ok_or_else(|| bad(format!("header of {len} bytes runs past the end")))?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| bad(e.to_string()))?;
        let data = &bytes[8 + len..];
        let mut tensors = HashMap::new();
        for (name, info) in header {
            if name == "__metadata__" || info["dtype"] != "F32" {
                continue;
            }
            let shape: Vec<usize> = info["shape"]
                .as_array()
                .ok_or_else(|| bad(format!("{name} has no shape")))?
                .iter()
                .map(|d| d.as_u64().unwrap_or(0) as usize)
                .collect();
            let offsets = info["data_offsets"]
                .as_array()
                .filter(|o| o.len() == 2)
                .ok_or_else(|| bad(format!("{name} has no data_offsets")))?;
            let (start, end) = (
                offsets[0].as_u64().unwrap_or(0) as usize,
                offsets[1].as_u64().unwrap_or(0) as usize,
            );
            let raw = data
                .get(start..end)
                .filter(|r| r.len() == shape.iter().product::<usize>() * 4)
                .ok_or_else(|| bad(format!("{name}'s data does not match its shape")))?;
            let values = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            tensors.insert(name, (shape, values));
        }
        Ok(Safetensors { tensors })
    }

    fn get(&self, name: &str, expected: &[usize]) -> Result<&[f32], SafetensorsError> {
        let (shape, data) = self
            .tensors
            .get(name)
            .ok_or_else(|| SafetensorsError::Missing(name.into()))?;
        if shape != expected {
            return Err(SafetensorsError::Shape {
                name: name.into(),
                shape: shape.clone(),
                expected: expected.to_vec(),
            });
        }
        Ok(data)
    }
}

/// The ONNX bytes of the encoder.
pub fn build(weights: &Safetensors) -> Result<Vec<u8>, SafetensorsError> {
    Ok(model(weights)?.encode())
}

struct Builder<'a> {
    w: &'a Safetensors,
    g: Graph,
}

impl Builder<'_> {
    fn constant(&mut self, name: &str, shape: &[usize]) -> Result<String, SafetensorsError> {
        let data = self.w.get(name, shape)?.to_vec();
        Ok(self.g.constant_f32(name, shape, &data))
    }

    fn scalar(&mut self, name: &str, v: f32) -> String {
        self.g.constant_f32(name, &[], &[v])
    }

    /// `x · Wᵀ + b` for a PyTorch Linear of `inputs → outputs`.
    fn linear(
        &mut self,
        prefix: &str,
        x: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<String, SafetensorsError> {
        let w = self
            .w
            .get(&format!("{prefix}.weight"), &[outputs, inputs])?;
        // Stored transposed, [in, out], so the graph needs one MatMul.
        let mut t = vec![0f32; w.len()];
        for o in 0..outputs {
            for i in 0..inputs {
                t[i * outputs + o] = w[o * inputs + i];
            }
        }
        let wt = self
            .g
            .constant_f32(&format!("{prefix}.weight_t"), &[inputs, outputs], &t);
        let b = self.constant(&format!("{prefix}.bias"), &[outputs])?;
        let y = self
            .g
            .op(&format!("{prefix}.matmul"), "MatMul", &[x, &wt], vec![]);
        Ok(self
            .g
            .op(&format!("{prefix}.out"), "Add", &[&y, &b], vec![]))
    }

    /// LayerNorm over the last axis, written out.
    fn layer_norm(&mut self, prefix: &str, x: &str) -> Result<String, SafetensorsError> {
        let gamma = self.constant(&format!("{prefix}.weight"), &[HIDDEN])?;
        let beta = self.constant(&format!("{prefix}.bias"), &[HIDDEN])?;
        let last = || {
            vec![
                ("axes", AttrValue::Ints(vec![-1])),
                ("keepdims", AttrValue::Int(1)),
            ]
        };
        let g = &mut self.g;
        let mean = g.op(&format!("{prefix}.mean"), "ReduceMean", &[x], last());
        let d = g.op(&format!("{prefix}.centred"), "Sub", &[x, &mean], vec![]);
        let sq = g.op(&format!("{prefix}.sq"), "Mul", &[&d, &d], vec![]);
        let var = g.op(&format!("{prefix}.var"), "ReduceMean", &[&sq], last());
        let eps = g.constant_f32(&format!("{prefix}.eps"), &[], &[LAYER_NORM_EPS]);
        let var = g.op(&format!("{prefix}.var_eps"), "Add", &[&var, &eps], vec![]);
        let std = g.op(&format!("{prefix}.std"), "Sqrt", &[&var], vec![]);
        let n = g.op(&format!("{prefix}.normed"), "Div", &[&d, &std], vec![]);
        let n = g.op(&format!("{prefix}.scaled"), "Mul", &[&n, &gamma], vec![]);
        Ok(g.op(&format!("{prefix}.out"), "Add", &[&n, &beta], vec![]))
    }

    fn layer(&mut self, i: usize, x: &str, mask_bias: &str) -> Result<String, SafetensorsError> {
        let p = format!("encoder.layer.{i}");
        let head_dim = HIDDEN / HEADS;
        let split = self.g.constant_i64(
            &format!("{p}.split_shape"),
            &[4],
            &[0, 0, HEADS as i64, head_dim as i64],
        );
        let merge = self
            .g
            .constant_i64(&format!("{p}.merge_shape"), &[3], &[0, 0, HIDDEN as i64]);
        let heads =
            |b: &mut Self, name: &str, perm: Vec<i64>| -> Result<String, SafetensorsError> {
                let y = b.linear(&format!("{p}.attention.self.{name}"), x, HIDDEN, HIDDEN)?;
                let y = b.g.op(
                    &format!("{p}.{name}.split"),
                    "Reshape",
                    &[&y, &split],
                    vec![],
                );
                Ok(b.g.op(
                    &format!("{p}.{name}.heads"),
                    "Transpose",
                    &[&y],
                    vec![("perm", AttrValue::Ints(perm))],
                ))
            };
        let q = heads(self, "query", vec![0, 2, 1, 3])?;
        // Keys transposed once more: [N, H, D, L], so Q·K is one MatMul.
        let k = heads(self, "key", vec![0, 2, 3, 1])?;
        let v = heads(self, "value", vec![0, 2, 1, 3])?;
        let scale = self.scalar(&format!("{p}.scale"), 1.0 / (head_dim as f32).sqrt());
        let g = &mut self.g;
        let s = g.op(&format!("{p}.scores"), "MatMul", &[&q, &k], vec![]);
        let s = g.op(&format!("{p}.scaled"), "Mul", &[&s, &scale], vec![]);
        let s = g.op(&format!("{p}.masked"), "Add", &[&s, mask_bias], vec![]);
        let a = g.op(
            &format!("{p}.probs"),
            "Softmax",
            &[&s],
            vec![("axis", AttrValue::Int(-1))],
        );
        let c = g.op(&format!("{p}.context"), "MatMul", &[&a, &v], vec![]);
        let c = g.op(
            &format!("{p}.context_t"),
            "Transpose",
            &[&c],
            vec![("perm", AttrValue::Ints(vec![0, 2, 1, 3]))],
        );
        let c = g.op(&format!("{p}.context_m"), "Reshape", &[&c, &merge], vec![]);
        let o = self.linear(&format!("{p}.attention.output.dense"), &c, HIDDEN, HIDDEN)?;
        let o = self.g.op(&format!("{p}.attn_res"), "Add", &[&o, x], vec![]);
        let x1 = self.layer_norm(&format!("{p}.attention.output.LayerNorm"), &o)?;
        let h = self.linear(
            &format!("{p}.intermediate.dense"),
            &x1,
            HIDDEN,
            INTERMEDIATE,
        )?;
        let h = self.gelu(&format!("{p}.gelu"), &h);
        let o = self.linear(&format!("{p}.output.dense"), &h, INTERMEDIATE, HIDDEN)?;
        let o = self
            .g
            .op(&format!("{p}.ffn_res"), "Add", &[&o, &x1], vec![]);
        self.layer_norm(&format!("{p}.output.LayerNorm"), &o)
    }

    /// `x · ½(1 + erf(x / √2))`, BERT's exact GELU.
    fn gelu(&mut self, p: &str, x: &str) -> String {
        let r2 = self.scalar(&format!("{p}.sqrt2"), std::f32::consts::SQRT_2);
        let one = self.scalar(&format!("{p}.one"), 1.0);
        let half = self.scalar(&format!("{p}.half"), 0.5);
        let g = &mut self.g;
        let y = g.op(&format!("{p}.div"), "Div", &[x, &r2], vec![]);
        let y = g.op(&format!("{p}.erf"), "Erf", &[&y], vec![]);
        let y = g.op(&format!("{p}.plus1"), "Add", &[&y, &one], vec![]);
        let y = g.op(&format!("{p}.times_x"), "Mul", &[x, &y], vec![]);
        g.op(&format!("{p}.out"), "Mul", &[&y, &half], vec![])
    }
}

/// The graph: `tokens` [N, 2, L] → `embedding` [N, 384].
pub fn model(weights: &Safetensors) -> Result<Model, SafetensorsError> {
    let mut b = Builder {
        w: weights,
        g: Graph::new("minilm-l6-v2"),
    };
    let n = || Dim::Symbol("N".into());
    let l = || Dim::Symbol("L".into());
    b.g.input(INPUT, DataType::Float, vec![n(), Dim::Fixed(2), l()]);

    let row = |b: &mut Builder, name: &str, index: i64| {
        let i = b.g.constant_i64(&format!("{name}_row"), &[], &[index]);
        b.g.op(
            name,
            "Gather",
            &[INPUT, &i],
            vec![("axis", AttrValue::Int(1))],
        )
    };
    let ids = row(&mut b, "ids_f", 0);
    let mask = row(&mut b, "mask", 1);
    let ids = b.g.op(
        "ids",
        "Cast",
        &[&ids],
        vec![("to", AttrValue::Int(DataType::Int64 as i64))],
    );

    // Embeddings: word + position (the first L rows) + token type 0.
    let words = b.constant("embeddings.word_embeddings.weight", &[30522, HIDDEN])?;
    let x = b.g.op("word_emb", "Gather", &[&words, &ids], vec![]);
    let positions = b.constant("embeddings.position_embeddings.weight", &[512, HIDDEN])?;
    let shape = b.g.op("ids_shape", "Shape", &[&ids], vec![]);
    let one = b.g.constant_i64("one_i", &[1], &[1]);
    let two = b.g.constant_i64("two_i", &[1], &[2]);
    let zero = b.g.constant_i64("zero_i", &[1], &[0]);
    let len = b.g.op("seq_len", "Slice", &[&shape, &one, &two], vec![]);
    let pos = b.g.op(
        "pos_emb",
        "Slice",
        &[&positions, &zero, &len, &zero],
        vec![],
    );
    let types =
        b.w.get("embeddings.token_type_embeddings.weight", &[2, HIDDEN])?;
    let type0 = b.g.constant_f32("type0_emb", &[HIDDEN], &types[..HIDDEN]);
    let x = b.g.op("emb_pos", "Add", &[&x, &pos], vec![]);
    let x = b.g.op("emb_type", "Add", &[&x, &type0], vec![]);
    let mut x = b.layer_norm("embeddings.LayerNorm", &x)?;

    // Padding gets -10000 before the softmax, as BERT's extended mask does.
    let one_f = b.scalar("one_f", 1.0);
    let big = b.scalar("mask_big", -10000.0);
    let inv = b.g.op("mask_inv", "Sub", &[&one_f, &mask], vec![]);
    let bias = b.g.op("mask_bias2", "Mul", &[&inv, &big], vec![]);
    let axes12 = b.g.constant_i64("axes_1_2", &[2], &[1, 2]);
    let bias = b.g.op("mask_bias", "Unsqueeze", &[&bias, &axes12], vec![]);
    for i in 0..LAYERS {
        x = b.layer(i, &x, &bias)?;
    }

    // Mean over the real tokens, then L2-normalised.
    let axis2 = b.g.constant_i64("axis_2", &[1], &[2]);
    let axis1 = b.g.constant_i64("axis_1", &[1], &[1]);
    let m = b.g.op("mask3", "Unsqueeze", &[&mask, &axis2], vec![]);
    let xm = b.g.op("masked_states", "Mul", &[&x, &m], vec![]);
    let keep = || vec![("keepdims", AttrValue::Int(0))];
    let sum = b.g.op("state_sum", "ReduceSum", &[&xm, &axis1], keep());
    let count = b.g.op("token_count", "ReduceSum", &[&m, &axis1], keep());
    let tiny = b.scalar("tiny", 1e-9);
    let count = b.g.op("token_count_min", "Max", &[&count, &tiny], vec![]);
    let mean = b.g.op("mean_pool", "Div", &[&sum, &count], vec![]);
    let sq = b.g.op("pool_sq", "Mul", &[&mean, &mean], vec![]);
    let keepdims = vec![("keepdims", AttrValue::Int(1))];
    let norm = b.g.op("pool_norm2", "ReduceSum", &[&sq, &axis1], keepdims);
    let norm = b.g.op("pool_norm", "Sqrt", &[&norm], vec![]);
    let floor = b.scalar("norm_floor", 1e-12);
    let norm = b.g.op("pool_norm_min", "Max", &[&norm, &floor], vec![]);
    b.g.op_to("normalise", "Div", &[&mean, &norm], OUTPUT, vec![]);
    b.g.output(
        OUTPUT,
        DataType::Float,
        vec![n(), Dim::Fixed(HIDDEN as i64)],
    );
    Ok(Model::new(b.g))
}
