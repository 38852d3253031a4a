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
