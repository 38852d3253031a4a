//! End-to-end: a real `switchyardd` with the GPU delegate (lavapipe in CI) validates a
//! float model on the GPU, serves it from the GPU once the allowlist allows it, and
//! exits cleanly on SIGTERM after GPU use — the daemon once died with SIGSEGV there on a
//! real driver (device teardown at exit). Skips, saying so, where no Vulkan adapter
//! exists and lavapipe is not installed.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_client::{Run, Tensor, blocking::Client};
use switchyard_delegates::GpuDelegate;
use switchyard_tests::{golden, model_path, workspace_binary};

const STEM: &str = "oww_embedding_model";

fn lavapipe_installed() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|d| {
            std::fs::read_dir(d).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
            })
        })
}

/// Whether this machine has a Vulkan adapter (asserted where lavapipe is installed).
fn have_gpu() -> bool {
    match GpuDelegate::new().unavailable_reason() {
        None => true,
        Some(why) => {
            assert!(!lavapipe_installed(), "lavapipe installed but: {why}");
            println!("skipped: no GPU adapter ({why})");
            false
        }
    }
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, run: usize) -> Daemon {
        let socket = dir.join("run/switchyard.sock");
        let _ = std::fs::remove_file(&socket);
        let config = dir.join("switchyard.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\ngrace_ms = 5000\n\
                 [scheduler]\npartition_timeout_ms = 60000\nvalidation_runs = 1\n\
                 [devices.dsp]\nenabled = false\n[devices.npu]\nenabled = false\n",
                socket.display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("daemon{run}.log"));
        let child = Command::new(workspace_binary("switchyardd"))
            .arg("--config")
            .arg(&config)
            .env("SWITCHYARD_LOG", "info")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "switchyardd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { child, socket, log }
    }

    /// SIGTERM, then the exit status and the daemon's log.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "switchyardd did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut log = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        (status, log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads the model, runs LiteRT's golden input, and checks the output within 1e-3 of
/// the output's largest magnitude (the GPU's float sums round differently).
fn load_and_check(d: &Daemon) {
    let mut c = Client::connect_unix(&d.socket).unwrap();
    let m = c.load(model_path(STEM)).unwrap();
    // A first load answers on the CPU plan; the GPU is validated in the background.
    let status = c.wait_placed(m.id(), Duration::from_secs(600)).unwrap();
    assert_eq!(status.validation, "done", "{}", status.validation_reason);
    let x = golden(STEM, "input_0.npy").expect("golden input");
    let want = golden(STEM, "output_0.ref.npy").expect("golden output");
    let xv = x.view();
    let input = Tensor::new(
        m.inputs()[0].dtype,
        xv.shape.iter().map(|&s| s as u64).collect(),
        xv.bytes.to_vec(),
    )
    .unwrap();
    for _ in 0..3 {
        let out = m.run(Run::new().input(input.clone())).unwrap();
        let got: Vec<f32> = out.tensors[0].to_vec().unwrap();
        let want: &[f32] = want.view().f32s().unwrap();
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-30);
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            / scale;
        assert!(err <= 1e-3, "output error {err:e} against LiteRT");
    }
}

fn allowlist_path(dir: &Path) -> PathBuf {
    dir.join("state/allowlist.json")
}

fn gpu_entries(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(allowlist_path(dir)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["entries"]
        .as_object()
        .expect("entries")
        .iter()
        .filter(|(k, _)| k.ends_with("@gpu") || k.ends_with("@gpu-fp16"))
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect()
}

#[test]
fn daemon_serves_on_the_gpu_and_exits_cleanly_on_sigterm() {
    if !have_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // 1. First load: the daemon validates the model on the GPU (fp32 and fp16),
    //    whatever the verdict, then is stopped.
    let d = Daemon::start(dir.path(), 1);
    load_and_check(&d);
    let (status, log) = d.stop();
    assert!(
        status.success(),
        "exit after GPU validation: {status:?} (signal {:?})\n{log}",
        status.signal()
    );
    assert!(log.contains("GPU closed"), "{log}");
    let entries = gpu_entries(dir.path());
    assert!(
        entries
            .iter()
            .any(|(k, e)| k.ends_with("@gpu") && e["runs"].as_u64() > Some(0)),
        "the GPU ran in validation: {entries:?}"
    );
    let fp16 = entries.iter().find(|(k, _)| k.ends_with("@gpu-fp16"));
    if lavapipe_installed() {
        let (_, e) = fp16.expect("lavapipe has shader-f16: the fp16 variant is validated");
        assert!(
            e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("fp16: ")),
            "{e}"
        );
        assert!(e["tolerance"].as_f64() == Some(1e-2), "{e}");
    }

    // 2. An operator allows the fp32 GPU for this model (on lavapipe it is rarely faster
    //    than the CPU) and records it as the fastest; the restarted daemon serves from
    //    the GPU, then is stopped.
    let path = allowlist_path(dir.path());
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, e) in doc["entries"].as_object_mut().unwrap().iter_mut() {
        if k.ends_with("@gpu") {
            e["verdict"] = "allowed".into();
            e["delegate_s"] = 1e-6.into();
        } else if k.ends_with("@gpu-fp16") {
            e["verdict"] = "blocked".into();
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let d = Daemon::start(dir.path(), 2);
    load_and_check(&d);
    let plan = Command::new(workspace_binary("switchyard"))
        .args([
            "placement",
            model_path(STEM).to_str().unwrap(),
            "--json",
            "--socket",
        ])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let on_gpu = plan["partitions"]
        .as_array()
        .map(|p| p.iter().filter(|p| p["delegate"] == "gpu").count())
        .unwrap_or(0);
    assert!(on_gpu > 0, "served from the GPU: {plan}");
    let (status, log) = d.stop();
    assert!(
        status.success(),
        "exit after serving on the GPU: {status:?} (signal {:?})\n{log}",
        status.signal()
    );
    assert!(log.contains("GPU closed"), "{log}");
    assert!(!log.contains("GPU closed while still busy"), "{log}");
}
