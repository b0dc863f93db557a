//! The embedder against the model's reference implementation: vectors that
//! sentence-transformers computed for the same texts with the same files
//! (`scripts/reference-embeddings.py` wrote them).

mod support;

use memory::embed::{cosine, Inference, DIMENSIONS};

#[derive(serde::Deserialize)]
struct Reference {
    max_seq_length: usize,
    texts: Vec<Text>,
}

#[derive(serde::Deserialize)]
struct Text {
    text: String,
    tokens: usize,
    vector: Vec<f32>,
}

fn reference() -> Reference {
    let raw = include_str!("data/reference-embeddings.json");
    serde_json::from_str(raw).expect("reference-embeddings.json parses")
}

/// Every reference text through `embedder`: unit length, and cosine
/// ≥ 0.999 with its reference vector. Returns the lowest cosine.
fn check_against_reference(embedder: &memory::Embedder) -> f32 {
    let reference = reference();
    assert_eq!(reference.max_seq_length, memory::embed::MAX_TOKENS);
    assert!(reference.texts.len() >= 20, "at least 20 reference texts");
    assert!(
        reference.texts.iter().any(|t| t.tokens > memory::embed::MAX_TOKENS),
        "one text is longer than the window, so truncation is checked"
    );
    let mut worst = (f32::MAX, String::new());
    for t in &reference.texts {
        let v = embedder.embed(&t.text).expect("embeds");
        assert_eq!(v.len(), DIMENSIONS);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
        let c = cosine(&v, &t.vector);
        if c < worst.0 {
            worst = (c, t.text.chars().take(60).collect());
        }
        assert!(
            c >= 0.999,
            "{}: cosine {c:.6} < 0.999 for {:?}",
            embedder.inference(),
            t.text.chars().take(80).collect::<String>()
        );
    }
    eprintln!("{}: lowest cosine with the reference: {:.6} ({:?})", embedder.inference(), worst.0, worst.1);
    worst.0
}

#[test]
fn every_reference_text_embeds_to_the_reference_vector() {
    check_against_reference(&support::embedder());
}

#[test]
fn candle_embeds_every_reference_text_to_the_reference_vector() {
    // Where the CPU has AVX-512 BF16 the embedder runs its own encoder;
    // candle, which runs everywhere else, is held to the same reference.
    let embedder = memory::Embedder::load_with(&support::model_dir(), Inference::Candle).expect("the model loads");
    assert_eq!(embedder.inference(), "candle");
    let lowest = check_against_reference(&embedder);
    assert!(lowest > 0.99999, "candle runs the model in single precision: lowest cosine {lowest}");
}

#[test]
fn a_batch_embeds_each_text_as_alone() {
    // Padding a batch to its longest text must not change a shorter text's vector.
    let reference = reference();
    let embedder = support::embedder();
    let texts: Vec<&str> = reference.texts.iter().take(12).map(|t| t.text.as_str()).collect();
    let batch = embedder.embed_batch(&texts).expect("embeds");
    assert_eq!(batch.len(), texts.len());
    for (t, v) in reference.texts.iter().zip(&batch) {
        let c = cosine(v, &t.vector);
        assert!(c >= 0.999, "in a batch: cosine {c:.6} for {:?}", t.text);
    }
}

#[test]
fn a_missing_model_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = memory::Embedder::load(dir.path()).expect_err("no model there");
    let msg = err.to_string();
    assert!(msg.contains("config.json"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn the_encoder_runs_where_the_cpu_has_avx512_bf16() {
    // So that on such a machine (CI's included) the tests above hold the
    // encoder, not candle, to the reference.
    #[cfg(target_arch = "x86_64")]
    let capable = std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    let capable = false;
    let want = if capable { "AVX-512 BF16 encoder" } else { "candle" };
    assert_eq!(support::embedder().inference(), want);
}
