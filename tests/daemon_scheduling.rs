//! End-to-end: the real `switchyardd` places a real int8 model over emulated devices,
//! learns and persists its allowlist, and keeps answering correctly when a device lies
//! or hangs. The allowlist is read from the daemon's state directory, where it persists.
// The old client entry points (string ids, parallel output vectors) are deprecated;
// these tests still exercise them until they move to `Model`/`Run`.
#![allow(deprecated)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_client::{DataType, Tensor, blocking::Client};
use switchyard_tests::{golden, model_path, workspace_binary};

const STEM: &str = "mww_okay_nabu";

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, extra: &str) -> Daemon {
        let socket = dir.join("run/switchyard.sock");
        let _ = std::fs::remove_file(&socket);
        let config = dir.join("switchyard.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\ngrace_ms = 3000\n\
                 [scheduler]\npartition_timeout_ms = 200\nvalidation_runs = 2\n{extra}",
                socket.display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
        let child = Command::new(workspace_binary("switchyardd"))
            .arg("--config")
            .arg(&config)
            .env("SWITCHYARD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "switchyardd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { child, socket }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the daemon's background validation of `id` (a first load answers on the
/// CPU plan before it ends), so what follows sees the final placement and allowlist.
fn wait_placed(c: &mut Client, id: &str) {
    let status = c.wait_placed(id, Duration::from_secs(300)).unwrap();
    assert_ne!(status.validation, "validating", "validation never ended");
    assert_ne!(status.validation, "failed", "{}", status.validation_reason);
}

/// The first request on a fresh daemon (the model is stateful) must give LiteRT's
/// builtin-kernel output exactly, whatever the placement.
fn load_and_check(d: &Daemon) {
    let mut c = Client::connect_unix(&d.socket).unwrap();
    let m = c.load_model_file(model_path(STEM)).unwrap();
    wait_placed(&mut c, &m.id);
    let x = golden(STEM, "input_0.npy").expect("golden input");
    let want = golden(STEM, "output_0.ref.npy").expect("golden output");
    let xv = x.view();
    let dt = DataType::try_from(m.inputs[0].dtype).unwrap();
    let input = Tensor::new(
        dt,
        xv.shape.iter().map(|&s| s as u64).collect(),
        xv.bytes.to_vec(),
    )
    .unwrap();
    let out = c.run(&m.id, &[input]).unwrap();
    assert_eq!(out.outputs.len(), 1);
    assert_eq!(
        out.outputs[0].data,
        want.view().bytes,
        "output differs from LiteRT"
    );
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(workspace_binary("switchyard"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "switchyard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (delegate, fingerprint, verdict, reason, cpu_s) per learned decision.
fn allowlist(dir: &Path) -> Vec<(String, String, String, String, f64)> {
    let text = std::fs::read_to_string(dir.join("state/allowlist.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries = v["entries"].as_object().expect("entries");
    entries
        .iter()
        .map(|(k, e)| {
            let delegate = k.rsplit_once('@').map(|(_, d)| d).unwrap_or("").to_owned();
            (
                delegate,
                e["fingerprint"].as_str().unwrap_or("").to_owned(),
                e["verdict"].as_str().unwrap_or("").to_owned(),
                e["reason"].as_str().unwrap_or("").to_owned(),
                e["cpu_s"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect()
}

#[test]
fn lying_npu_is_blocked_healthy_dsp_judged_and_decisions_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = "[devices.npu.fault]\nwrong_result_rate = 1.0\n";
    let d = Daemon::start(dir.path(), faulty);
    load_and_check(&d);
    // The CLI shows the same decisions and the plan the daemon placed the model with.
    let listed = cli(&[
        "allowlist",
        "--json",
        "--socket",
        d.socket.to_str().unwrap(),
    ]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let blocked_npu = listed["entries"].as_array().unwrap().iter().any(|e| {
        e["processor"].as_str().unwrap_or("").starts_with("npu")
            && e["verdict"] == "blocked"
            && e["reason"].as_str().unwrap_or("").contains("wrong results")
    });
    assert!(blocked_npu, "{listed}");
    let model = model_path(STEM);
    let placed = cli(&[
        "placement",
        model.to_str().unwrap(),
        "--json",
        "--socket",
        d.socket.to_str().unwrap(),
    ]);
    let placed: serde_json::Value = serde_json::from_str(&placed).unwrap();
    let nodes = placed["nodes"].as_array().expect("nodes");
    assert!(!nodes.is_empty());
    assert!(
        nodes.iter().all(|n| n["processor"] != "npu"),
        "a blocked npu got nodes: {placed}"
    );
    drop(d);
    let first = allowlist(dir.path());
    let npu: Vec<_> = first.iter().filter(|e| e.0.starts_with("npu")).collect();
    let dsp: Vec<_> = first.iter().filter(|e| e.0.starts_with("dsp")).collect();
    assert!(!npu.is_empty(), "the npu was never tried: {first:?}");
    for e in &npu {
        assert_eq!(e.2, "blocked", "{e:?}");
        assert!(e.3.contains("wrong results"), "{e:?}");
    }
    assert!(!dsp.is_empty(), "the dsp was never tried: {first:?}");
    for e in &dsp {
        assert!(
            (e.2 == "allowed" && e.3.contains("faster")) || e.3.contains("not faster"),
            "{e:?}"
        );
    }

    // Same state dir, same drivers: reloaded, not measured again.
    let d = Daemon::start(dir.path(), faulty);
    load_and_check(&d);
    drop(d);
    assert_eq!(allowlist(dir.path()), first, "decisions were re-measured");

    // A new NPU driver: its decisions are validated again, the DSP's are kept.
    let d = Daemon::start(
        dir.path(),
        &format!("[devices.npu]\ndriver_version = \"emulated-npu-2.0\"\n{faulty}"),
    );
    load_and_check(&d);
    drop(d);
    let third = allowlist(dir.path());
    for e in third.iter().filter(|e| e.0.starts_with("npu")) {
        assert!(e.1.contains("emulated-npu-2.0"), "not re-validated: {e:?}");
        assert_eq!(e.2, "blocked", "{e:?}");
    }
    let dsp_again: Vec<_> = third.iter().filter(|e| e.0.starts_with("dsp")).collect();
    assert_eq!(dsp_again, dsp);
}

#[test]
fn hanging_npu_is_blocked_and_requests_complete() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        "[devices.dsp]\nenabled = false\n[devices.npu.fault]\nhang_rate = 1.0\n",
    );
    load_and_check(&d);
    drop(d);
    let list = allowlist(dir.path());
    assert!(!list.is_empty());
    for e in &list {
        assert!(e.0.starts_with("npu"), "{e:?}");
        assert_eq!(e.2, "blocked", "{e:?}");
        assert!(e.3.contains("timed out"), "{e:?}");
    }
}

/// A model heavy enough that one run takes milliseconds (the arbiter test needs a
/// deadline clearly below the measured run time).
const HEAVY: &str = "mp_pose_detection";

#[test]
fn arbiter_refuses_a_hopeless_deadline_with_the_reason_and_serves_the_rest() {
    use switchyard_client::{Priority, RunOptions};
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        "[devices.npu]\nenabled = false\n[devices.dsp]\nenabled = false\n",
    );
    let mut c = Client::connect_unix(&d.socket).unwrap();
    let m = c.load_model_file(model_path(HEAVY)).unwrap();
    wait_placed(&mut c, &m.id);
    let inputs: Vec<Tensor> = m
        .inputs
        .iter()
        .map(|t| {
            let dt = DataType::try_from(t.dtype).unwrap();
            Tensor::new(dt, t.shape.clone(), vec![0; dt.byte_len(&t.shape).unwrap()]).unwrap()
        })
        .collect();
    let mut fastest = u64::MAX;
    for _ in 0..3 {
        let out = c.run(&m.id, &inputs).unwrap();
        fastest = fastest.min(out.timing.run_us);
    }
    assert!(
        fastest > 2_000,
        "{HEAVY} runs in {fastest} us: too fast for a 1 ms deadline to be hopeless"
    );
    // The daemon's estimate is the measured run time; a deadline far below it is
    // refused up front, with the reason, instead of being missed.
    let e = c
        .run_with(
            &m.id,
            &inputs,
            RunOptions {
                priority: Priority::Realtime,
                deadline_ms: 1,
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::DeadlineExceeded), "{e}");
    assert!(e.to_string().contains("deadline"), "{e}");
    let ok = c
        .run_with(
            &m.id,
            &inputs,
            RunOptions {
                priority: Priority::Background,
                deadline_ms: 600_000,
            },
        )
        .unwrap();
    assert_eq!(ok.outputs.len(), m.outputs.len());
}
