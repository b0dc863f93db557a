//! Sentence embeddings in process: all-MiniLM-L6-v2 (a 6-layer BERT, 384
//! dimensions) on candle, tokenised with the model's own `tokenizer.json`,
//! mean-pooled over the real tokens and L2-normalised — what
//! sentence-transformers computes for this model, checked against its
//! reference vectors in `memory/tests/embed.rs`.
//!
//! On x86-64 CPUs with AVX-512 BF16 the model runs on the encoder in
//! `encoder.rs` (bfloat16 weights, single-precision sums: about 3 × faster
//! at the lengths the workflow embeds);
//! elsewhere on candle-transformers' `BertModel`. Both are checked against
//! the reference vectors.
//!
//! The model directory (`scripts/ensure-model.sh` prints one) must hold
//! `config.json`, `model.safetensors` and `tokenizer.json`. Nothing is
//! fetched: without the files there is no embedder, and no semantic memory.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams, TruncationStrategy};

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // SIMD intrinsics; the module's comments give each block's reasoning
mod encoder;

/// Where there is no AVX-512 there is no encoder.
#[cfg(not(target_arch = "x86_64"))]
mod encoder {
    pub(crate) struct Encoder(std::convert::Infallible);

    impl Encoder {
        pub(crate) fn load(
            _: &candle_nn::VarBuilder<'_>,
            _: &candle_transformers::models::bert::Config,
        ) -> candle_core::Result<Option<Encoder>> {
            Ok(None)
        }

        pub(crate) fn embed(&self, _: &[u32], _: &[u32]) -> Vec<f32> {
            match self.0 {}
        }
    }
}

/// The size of every vector the embedder returns.
pub const DIMENSIONS: usize = 384;

/// The model's window, in tokens (sentence-transformers' `max_seq_length`
/// for this model): longer texts are cut, as the reference does.
pub const MAX_TOKENS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model directory {dir}: {what}")]
    Model { dir: PathBuf, what: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("inference: {0}")]
    Inference(#[from] candle_core::Error),
}

/// The model, on one implementation or the other.
enum Model {
    Encoder(encoder::Encoder),
    Candle(BertModel),
}

/// Which implementation of the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inference {
    /// The AVX-512 BF16 encoder where the CPU has it, candle elsewhere.
    Auto,
    /// candle-transformers' `BertModel` in single precision, everywhere.
    Candle,
}

/// A loaded embedding model. Cheap to share behind an `Arc`; `embed` is
/// CPU-bound and blocking (call it from a blocking thread in async code).
pub struct Embedder {
    model: Model,
    tokenizer: Tokenizer,
    dir: PathBuf,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("dir", &self.dir).field("inference", &self.inference()).finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the model in `dir`, to run on the fastest implementation this
    /// CPU has.
    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        Embedder::load_with(dir, Inference::Auto)
    }

    /// Loads the model in `dir`, to run as `inference` says.
    pub fn load_with(dir: &Path, inference: Inference) -> Result<Embedder, EmbedError> {
        let model_err = |what: String| EmbedError::Model { dir: dir.to_owned(), what };
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| model_err(format!("{name}: {e}")));

        let config: Config =
            serde_json::from_slice(&read("config.json")?).map_err(|e| model_err(format!("config.json: {e}")))?;
        if config.hidden_size != DIMENSIONS {
            return Err(model_err(format!(
                "config.json: hidden size {} is not {DIMENSIONS} (not all-MiniLM-L6-v2)",
                config.hidden_size
            )));
        }
        let mut tokenizer =
            Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|e| model_err(format!("tokenizer.json: {e}")))?;
        // The file pads and truncates to 128; the model is used at 256 with
        // no padding (a batch is padded to its longest text below).
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                ..TruncationParams::default()
            }))
            .map_err(|e| model_err(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..PaddingParams::default() }));

        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| model_err(format!("model.safetensors: {e}")))?;
        let weights_err = |e: candle_core::Error| model_err(format!("model.safetensors: {e}"));
        let encoder = match inference {
            Inference::Auto => encoder::Encoder::load(&vb, &config).map_err(weights_err)?,
            Inference::Candle => None,
        };
        let model = match encoder {
            Some(encoder) => Model::Encoder(encoder),
            None => Model::Candle(BertModel::load(vb, &config).map_err(weights_err)?),
        };
        Ok(Embedder { model, tokenizer, dir: dir.to_owned() })
    }

    /// Where the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which implementation runs the model, in words for the start line and
    /// `sentinel bench memory`.
    pub fn inference(&self) -> &'static str {
        match self.model {
            Model::Encoder(_) => "AVX-512 BF16 encoder",
            Model::Candle(_) => "candle",
        }
    }

    /// The unit vector of one text.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(self.embed_batch(&[text])?.pop().expect("one text, one vector"))
    }

    /// Unit vectors of several texts, in order. One forward pass: texts of
    /// similar length batch best.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let model = match &self.model {
            Model::Encoder(encoder) => {
                // One text at a time: no padding to compute (it is on the right).
                return Ok(encodings
                    .iter()
                    .map(|e| {
                        let real = e.get_attention_mask().iter().filter(|&&m| m == 1).count();
                        encoder.embed(&e.get_ids()[..real], &e.get_type_ids()[..real])
                    })
                    .collect());
            }
            Model::Candle(model) => model,
        };
        let len = encodings[0].get_ids().len();
        let (mut ids, mut types, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            types.extend_from_slice(e.get_type_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let shape = (texts.len(), len);
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, shape, &device)?;
        let types = Tensor::from_vec(types, shape, &device)?;
        let mask = Tensor::from_vec(mask, shape, &device)?;
        let hidden = model.forward(&ids, &types, Some(&mask))?; // (batch, len, 384)

        // Mean over the real tokens only, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (batch, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (batch, 384)
        let counts = mask.sum(1)?.clamp(1e-9, f64::INFINITY)?; // (batch, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
        let unit = mean.broadcast_div(&norms)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two unit vectors (their dot product), in [-1, 1].
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
