//! `switchyard loadtest` end to end on a small mix: a real daemon and real app
//! processes (client library, frames in shared memory) on one side, each app with its
//! own LiteRT interpreter on the other, in one run. Two seconds per side: this checks
//! the benchmark's machinery (processes, protocol, frame accounting, memory sampling),
//! not performance, which `docs/PERFORMANCE.md` reports from full runs.

use std::process::Command;

use serde_json::Value;
use switchyard_tests::{model_path, workspace_binary};

#[test]
fn loadtest_runs_both_sides_with_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("mix.toml");
    std::fs::write(
        &workload,
        format!(
            "name = \"mini\"\nduration_s = 2.0\nthreads = 1\n\
             [[apps]]\nname = \"wake-word\"\ntenant = \"voice\"\nmodel = {:?}\n\
             fps = 50.0\ndeadline_ms = 20.0\npriority = \"realtime\"\n\
             [[apps]]\nname = \"embedding\"\ntenant = \"indexer\"\nmodel = {:?}\n\
             back_to_back = true\npriority = \"background\"\n",
            model_path("mww_okay_nabu"),
            model_path("oww_embedding_model"),
        ),
    )
    .unwrap();
    let out = dir.path().join("out.json");
    let run = Command::new(workspace_binary("switchyard"))
        .args(["loadtest", "--workload"])
        .arg(&workload)
        .args(["--duration", "2", "--repeat", "1", "--alone", "1", "--json"])
        .arg(&out)
        .output()
        .expect("start switchyard");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("switchyard / litert"), "{stdout}");
    assert!(
        stdout.contains("background throughput in the mix / alone"),
        "{stdout}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        let side = r["side"].as_str().unwrap();
        let apps = r["apps"].as_array().unwrap();
        assert_eq!(apps.len(), 2, "{side}");
        let wake = &apps[0];
        // 50 Hz for 2 s.
        assert_eq!(wake["frames"].as_u64(), Some(100), "{side}: {wake}");
        assert!(wake["met"].as_u64().unwrap() > 0, "{side}: {wake}");
        let met = wake["met"].as_u64().unwrap();
        let accounted = wake["completed"].as_u64().unwrap()
            + wake["dropped"].as_u64().unwrap()
            + wake["refused"].as_u64().unwrap()
            + wake["failed"].as_u64().unwrap();
        assert!(met <= accounted && accounted <= 100, "{side}: {wake}");
        assert!(apps[1]["completed"].as_u64().unwrap() > 0, "{side}");
        let mem = &r["memory"];
        assert!(mem["pss_kib"].as_u64().unwrap() > 0, "{side}: {mem}");
        let procs = mem["processes"].as_array().unwrap();
        let with_daemon = procs.iter().any(|p| p[0] == "switchyardd");
        assert_eq!(with_daemon, side == "switchyard", "{side}: {procs:?}");
    }
    // The background app alone, once per side.
    let alone = v["alone"].as_array().unwrap();
    assert_eq!(alone.len(), 2, "{alone:?}");
    for a in alone {
        assert_eq!(a["app"], "embedding");
        assert!(a["throughput"].as_f64().unwrap() > 0.0, "{a}");
    }
}
