//! `switchyard run --local` on real models writes DIR/output_<i>.npy in subgraph-0 output
//! order, equal to LiteRT's outputs; bad arguments fail with a message, not a panic.

use std::process::Command;

use switchyard_interpreter::npy;
use switchyard_testkit::{compare, default_tolerance};
use switchyard_tests::{golden_dir, golden_series, model_path, workspace_binary};

#[test]
fn run_local_writes_outputs_in_order() {
    for stem in ["mp_hand_landmark_lite", "oww_melspectrogram"] {
        let out = tempfile::tempdir().expect("tempdir");
        let input = golden_dir().join(stem).join("input_0.npy");
        let status = Command::new(workspace_binary("switchyard"))
            .args(["run", "--local"])
            .arg(model_path(stem))
            .arg("--inputs")
            .arg(&input)
            .arg("--out")
            .arg(out.path())
            .status()
            .expect("start switchyard");
        assert!(status.success(), "{stem}: switchyard run failed");
        let expected = golden_series(stem, "output", ".ref");
        assert!(!expected.is_empty());
        for (i, e) in expected.iter().enumerate() {
            let path = out.path().join(format!("output_{i}.npy"));
            let a = npy::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            compare(&a, e, default_tolerance(e.dtype))
                .unwrap_or_else(|msg| panic!("{stem} output {i}: {msg}"));
        }
        assert!(
            !out.path()
                .join(format!("output_{}.npy", expected.len()))
                .exists()
        );
    }
}

#[test]
fn run_local_rejects_a_wrong_input_with_a_message() {
    let out = tempfile::tempdir().expect("tempdir");
    let wrong = golden_dir().join("tfm_sine_float").join("input_0.npy");
    let result = Command::new(workspace_binary("switchyard"))
        .args(["run", "--local"])
        .arg(model_path("mp_iris_landmark"))
        .arg("--inputs")
        .arg(&wrong)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("start switchyard");
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("error:"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// Shapes are strict as in LiteRT: a face-detection frame (1x128x128x3) given to the
/// iris model (1x64x64x3, no dynamic dimensions) is refused naming both shapes, unless
/// `--resize` asks for the model to be resized.
#[test]
fn run_local_refuses_a_differing_shape_unless_resized() {
    let out = tempfile::tempdir().expect("tempdir");
    let frame = golden_dir()
        .join("mp_face_detection_short_range")
        .join("input_0.npy");
    let run = |extra: &[&str]| {
        Command::new(workspace_binary("switchyard"))
            .args(["run", "--local"])
            .args(extra)
            .arg(model_path("mp_iris_landmark"))
            .arg("--inputs")
            .arg(&frame)
            .arg("--out")
            .arg(out.path())
            .output()
            .expect("start switchyard")
    };
    let refused = run(&[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("[1, 128, 128, 3]") && stderr.contains("[1, 64, 64, 3]"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("--resize"), "stderr: {stderr}");
    assert!(!out.path().join("output_0.npy").exists());
    let resized = run(&["--resize"]);
    assert!(
        resized.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&resized.stderr)
    );
    assert!(out.path().join("output_0.npy").exists());
}
