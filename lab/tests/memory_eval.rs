//! Semantic memory on its labelled set (`lab/memory`, from
//! `scripts/make-memory-pairs.py`), at the shipped thresholds: the floors the
//! issue set, checked on every test run so a change to the text template,
//! the thresholds or the retrieval cannot slip under them unnoticed.

use std::path::{Path, PathBuf};

use nodes::intake::JoinConfig;

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("SENTINEL_TEST_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        panic!("SENTINEL_TEST_MODEL_DIR is not set: run `export SENTINEL_TEST_MODEL_DIR=\"$(scripts/ensure-model.sh)\"` first (scripts/test.sh does)")
    });
    assert!(dir.join("model.safetensors").is_file(), "no model in {}: run scripts/ensure-model.sh", dir.display());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_and_retrieval_meet_their_floors_on_the_labelled_set() {
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("memory");
    let r = lab::memory_eval::evaluate(&set, &model_dir(), &JoinConfig::default()).await.expect("evaluates");
    eprintln!(
        "dedup: precision {:.3}, recall {:.3} ({} tp, {} fp, {} fn); retrieval recall@5 {:.3}",
        r.precision, r.recall, r.true_positives, r.false_positives, r.false_negatives, r.recall_at_5
    );
    for m in &r.mistakes {
        eprintln!("  {m}");
    }
    assert!(r.pairs >= 300, "at least 300 labelled pairs, got {}", r.pairs);
    for kind in ["reworded", "cascade", "same_service", "downstream_unrelated", "unrelated"] {
        assert!(
            r.by_kind.iter().any(|k| k.kind == kind && k.pairs >= 30),
            "30 or more `{kind}` pairs: {:?}",
            r.by_kind
        );
    }
    assert!(r.precision >= 0.95, "dedup precision {:.3} < 0.95", r.precision);
    assert!(r.recall >= 0.90, "dedup recall {:.3} < 0.90", r.recall);
    assert!(r.recall_at_5 >= 0.90, "retrieval recall@5 {:.3} < 0.90", r.recall_at_5);
}
