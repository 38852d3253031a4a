//! Shared helpers of the end-to-end tests: where the real models, their LiteRT golden
//! outputs and the built binaries are.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

pub mod crafted;
pub mod spawn;

use switchyard_interpreter::{Tensor, npy};
pub use switchyard_testkit::{golden_dir, models_dir, repo_root};

pub mod daemon;
pub mod ops_doc;

/// The anchor models (fetched by scripts/fetch_models.py), by file stem.
pub const MODELS: &[&str] = &[
    "mp_face_detection_short_range",
    "mp_hand_landmark_lite",
    "mp_iris_landmark",
    "mp_pose_detection",
    "mp_selfie_segmentation",
    "mww_okay_nabu",
    "oww_embedding_model",
    "oww_hey_jarvis",
    "oww_melspectrogram",
    "tfm_sine_float",
];

/// Path of a real model; panics with the setup instructions when it is missing.
pub fn model_path(stem: &str) -> PathBuf {
    let p = models_dir().join(format!("{stem}.tflite"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (the README's test command does)",
        p.display()
    );
    p
}

/// `golden/<stem>/<file>` as a tensor, or None when LiteRT did not write it.
pub fn golden(stem: &str, file: &str) -> Option<Tensor> {
    let dir = golden_dir().join(stem);
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/setup.sh (the README's test command does)",
        dir.display()
    );
    let p = dir.join(file);
    p.exists()
        .then(|| npy::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// Numbered golden files `<prefix>_<i><suffix>.npy` for i = 0.. until one is missing.
pub fn golden_series(stem: &str, prefix: &str, suffix: &str) -> Vec<Tensor> {
    (0..)
        .map_while(|i| golden(stem, &format!("{prefix}_{i}{suffix}.npy")))
        .collect()
}

/// A binary of this workspace (`switchyard`, `switchyardd`), built into the same target
/// directory as the running test (`cargo build --workspace` builds them; the README's
/// test command does that first).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test binary> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test.sh does)",
        p.display()
    );
    p
}
