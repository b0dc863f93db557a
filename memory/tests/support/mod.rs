//! What the memory tests share: the model, loaded once per test binary.

#![allow(dead_code)]

pub mod qdrant_server;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use memory::Embedder;

/// The model `scripts/ensure-model.sh` installed (the test command exports
/// `SENTINEL_TEST_MODEL_DIR`). Missing is a failure that says what to run.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("SENTINEL_TEST_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        panic!("SENTINEL_TEST_MODEL_DIR is not set: run `export SENTINEL_TEST_MODEL_DIR=\"$(scripts/ensure-model.sh)\"` first (scripts/test.sh does)")
    });
    assert!(
        dir.join("model.safetensors").is_file(),
        "SENTINEL_TEST_MODEL_DIR={} holds no model.safetensors: run scripts/ensure-model.sh",
        dir.display()
    );
    dir
}

pub fn embedder() -> Arc<Embedder> {
    static EMBEDDER: OnceLock<Arc<Embedder>> = OnceLock::new();
    EMBEDDER.get_or_init(|| Arc::new(Embedder::load(&model_dir()).expect("the model loads"))).clone()
}
