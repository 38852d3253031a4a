//! `switchyard placement` and `switchyard simulate` on the real models and the shipped
//! workloads: per-node reasons, SVG output, the policies' advantage on the contended
//! workload (virtual clock, CPU prior: deterministic), and clear errors on bad input.

use std::process::Command;

use serde_json::Value;
use switchyard_tests::{model_path, repo_root, workspace_binary};

fn switchyard(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(workspace_binary("switchyard"))
        .args(args)
        .output()
        .expect("start switchyard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = switchyard(args);
    assert!(ok, "switchyard {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).expect("valid JSON")
}

#[test]
fn placement_explains_every_node() {
    let model = model_path("mp_face_detection_short_range");
    let m = model.to_str().unwrap();
    let v = json(&["placement", m, "--json", "--assume-allowed", "--no-measure"]);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 164);
    for n in nodes {
        assert!(!n["why"].as_str().unwrap().is_empty(), "{n}");
    }
    let convs: Vec<&Value> = nodes.iter().filter(|n| n["op"] == "CONV_2D").collect();
    assert!(
        convs.iter().all(|n| n["processor"] == "gpu"),
        "float convs go to the gpu"
    );
    let folded = nodes.iter().filter(|n| n["processor"].is_null()).count();
    assert_eq!(folded, 74, "fp16 weight DEQUANTIZE nodes fold at load");

    // Without a GPU delegate in this build and no --assume-allowed: all on the CPU,
    // and the reason says so.
    let v = json(&["placement", m, "--json", "--no-measure"]);
    let conv = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["op"] == "CONV_2D")
        .unwrap()
        .clone();
    assert_eq!(conv["processor"], "cpu");
    assert!(
        conv["why"]
            .as_str()
            .unwrap()
            .contains("gpu: not allowlisted"),
        "{conv}"
    );
}

#[test]
fn placement_draws_an_svg() {
    let model = model_path("mww_okay_nabu");
    let v = json(&[
        "placement",
        model.to_str().unwrap(),
        "--json",
        "--no-measure",
    ]);
    // Nodes folded at load (no partition, no processor) are counted in the caption, not
    // drawn.
    let nodes = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !(n["partition"].is_null() && n["processor"].is_null()))
        .count();
    let (ok, svg, err) = switchyard(&[
        "placement",
        model.to_str().unwrap(),
        "--svg",
        "--no-measure",
    ]);
    assert!(ok, "{err}");
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    // One box per node that runs, the background and four legend swatches.
    assert_eq!(svg.matches("<rect").count(), nodes + 5);
    assert!(svg.contains("constant nodes folded at load are not drawn"));
}

/// The comparison is fair: fixed placements get the same admission control (they
/// refuse and drop what cannot make its deadline), and migration is a switch. Profile
/// priors and two cores keep the figures independent of this machine.
#[test]
fn policies_beat_fixed_placements_on_the_contended_workload() {
    let w = repo_root().join("workloads/contended.toml");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "simulate",
            "--workload",
            w.to_str().unwrap(),
            "--json",
            "--prior-cpu",
            "--cores",
            "2",
        ];
        args.extend_from_slice(extra);
        json(&args)
    };
    let v = run(&[]);
    let reports = v["reports"].as_array().unwrap();
    let frames: Vec<u64> = reports
        .iter()
        .map(|r| r["overall"]["frames"].as_u64().unwrap())
        .collect();
    assert!(
        frames.windows(2).all(|w| w[0] == w[1]),
        "one trace: {frames:?}"
    );
    for r in reports.iter().filter(|r| r["fixed"] == true) {
        assert!(
            r["overall"]["rejected"].as_u64().unwrap() > 0,
            "{} is overloaded and gets admission control: {}",
            r["strategy"],
            r["overall"]
        );
    }
    let ratio = v["ratio"].as_f64().unwrap();
    assert!(ratio >= 1.0, "best policy / best fixed = {ratio}");
    let best = v["best_policy"][1].as_f64().unwrap();
    assert!(best > 95.0, "{}", v["best_policy"]);
    // Without migration each stage stays on its planned processor: the gain shrinks.
    let pinned = run(&["--no-migration"]);
    let pinned_best = pinned["best_policy"][1].as_f64().unwrap();
    assert!(pinned_best < best, "{pinned_best} vs {best}");
}

#[test]
fn light_workload_is_met_by_everyone() {
    let w = repo_root().join("workloads/light.toml");
    let v = json(&["simulate", "--workload", w.to_str().unwrap(), "--json"]);
    for r in v["reports"].as_array().unwrap() {
        assert_eq!(
            r["overall"]["slo_pct"].as_f64().unwrap(),
            100.0,
            "{}",
            r["strategy"]
        );
    }
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nduration_s = -1.0\napps = []\n").unwrap();
    let (ok, _, err) = switchyard(&["simulate", "--workload", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("duration_s"), "{err}");

    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        "name = \"x\"\nduration_s = 1.0\n[[apps]]\nname = \"a\"\ntenant = \"t\"\nmodel = \"nope.tflite\"\nfps = 1.0\ndeadline_ms = 10.0\n",
    )
    .unwrap();
    let (ok, _, err) = switchyard(&["simulate", "--workload", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("nope.tflite"), "{err}");

    let junk = dir.path().join("junk.tflite");
    std::fs::write(&junk, b"not a model").unwrap();
    let (ok, _, err) = switchyard(&["placement", junk.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.starts_with("error:"), "{err}");
}

#[test]
fn placement_validates_the_emulated_delegates_and_persists_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("allowlist.json");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[scheduler]\nallowlist_path = {:?}\n",
            list.to_str().unwrap()
        ),
    )
    .unwrap();
    let model = model_path("mww_okay_nabu");
    let args = [
        "placement",
        model.to_str().unwrap(),
        "--json",
        "--no-measure",
        "--validate",
        "--config",
        cfg.to_str().unwrap(),
    ];
    let v = json(&args);
    let conv = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["op"] == "CONV_2D")
        .unwrap()
        .clone();
    let why = conv["why"].as_str().unwrap();
    // Either outcome of a real validation is fine; an unvalidated one is not.
    let judged = why.contains("dsp (emulated): not allowlisted: blocked")
        || (conv["processor"] == "dsp" && why.contains("cost:"));
    assert!(judged, "{why}");
    let stored = std::fs::read_to_string(&list).expect("allowlist written");
    assert!(stored.contains("dsp (emulated)"), "{stored}");
    assert!(
        stored.contains("emulated-dsp"),
        "fingerprint recorded: {stored}"
    );

    // Reloaded: the same decisions without --validate.
    let v2 = json(
        &args[..args.len() - 3]
            .iter()
            .copied()
            .chain(["--config", cfg.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    let conv2 = v2["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["op"] == "CONV_2D")
        .unwrap()
        .clone();
    assert_eq!(conv2["processor"], conv["processor"]);
    assert!(
        !conv2["why"].as_str().unwrap().contains("not yet validated"),
        "{conv2}"
    );
}
