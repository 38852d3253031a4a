//! The C client: builds `client-c/examples/face_detect.c` against `switchyard.h` and
//! `libswitchyard.so` with the system C compiler and runs it against a real daemon:
//! face detection inline and through shared memory (same bytes), outputs against
//! LiteRT's, and a wrong shape refused with a code and a message; and
//! `wake_word.c`, a session streaming the wake-word model.

use std::process::Command;

use switchyard_tests::daemon::Daemon;
use switchyard_tests::{golden, model_path, repo_root, workspace_binary};

const FACE: &str = "mp_face_detection_short_range";

#[test]
fn c_example_runs_face_detection_against_the_daemon() {
    let lib = workspace_binary("libswitchyard.so");
    let lib_dir = lib.parent().expect("target dir");
    let d = Daemon::start("");
    let scratch = d.dir.path();
    let exe = scratch.join("face_detect");
    let built = Command::new("cc")
        .arg("-std=c11")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(repo_root().join("client-c/include"))
        .arg(repo_root().join("client-c/examples/face_detect.c"))
        .arg("-L")
        .arg(lib_dir)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(["-lswitchyard", "-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("run cc");
    assert!(
        built.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let input = golden(FACE, "input_0.npy").expect("golden input");
    let raw = scratch.join("input.f32");
    std::fs::write(&raw, input.data.as_slice()).unwrap();
    let out_dir = scratch.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let run = Command::new(&exe)
        .arg(&d.socket)
        .arg(model_path(FACE))
        .arg(&raw)
        .arg(&out_dir)
        .output()
        .expect("run face_detect");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "face_detect failed: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("inline == shm"), "{stdout}");
    assert!(
        stdout.contains("wrong shape: INVALID_ARGUMENT")
            && stdout.contains("[1, 128, 128, 3]")
            && stdout.contains("[1, 64, 64, 3]"),
        "{stdout}"
    );
    for i in 0..2 {
        let want = golden(FACE, &format!("output_{i}.npy")).expect("golden output");
        let got = std::fs::read(out_dir.join(format!("output_{i}.bin"))).unwrap();
        let want = want.data.as_slice();
        assert_eq!(got.len(), want.len(), "output {i} length");
        let f = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        for (k, (g, w)) in f(&got).iter().zip(f(want)).enumerate() {
            assert!(
                (g - w).abs() <= 1e-3 + 1e-3 * w.abs(),
                "output {i}[{k}]: C client {g}, LiteRT {w}"
            );
        }
    }
    assert!(d.stop().success());
}

/// Sessions from C: `client-c/examples/wake_word.c` streams the wake-word model's 64
/// golden steps through one session (each output within one step of LiteRT's), resets
/// it (step 0 answers as at first), and closes it (then NOT_FOUND).
#[test]
fn c_example_streams_a_session_like_litert() {
    let lib = workspace_binary("libswitchyard.so");
    let lib_dir = lib.parent().expect("target dir");
    let d = Daemon::start("");
    let scratch = d.dir.path();
    let exe = scratch.join("wake_word");
    let built = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(repo_root().join("client-c/include"))
        .arg(repo_root().join("client-c/examples/wake_word.c"))
        .arg("-L")
        .arg(lib_dir)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(["-lswitchyard", "-o"])
        .arg(&exe)
        .output()
        .expect("run cc");
    assert!(
        built.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stem = "mww_okay_nabu";
    let seq = golden(stem, "seq_input_0.npy").expect("golden sequence");
    let want = golden(stem, "seq_output_0.ref.npy").expect("golden outputs");
    let steps = seq.shape[0];
    let raw = scratch.join("steps.i8");
    std::fs::write(&raw, seq.data.as_slice()).unwrap();
    let out = scratch.join("out.bin");
    let run = Command::new(&exe)
        .arg(&d.socket)
        .arg(model_path(stem))
        .arg(&raw)
        .arg(steps.to_string())
        .arg(&out)
        .output()
        .expect("run wake_word");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "wake_word failed: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("after reset fresh"), "{stdout}");
    assert!(stdout.contains("after close: NOT_FOUND"), "{stdout}");
    let got = std::fs::read(&out).unwrap();
    let want = want.data.as_slice();
    assert_eq!(got.len(), want.len());
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.abs_diff(*w) <= 1, "step {t}: C session {g}, LiteRT {w}");
    }
    assert!(want.iter().any(|&w| w != 0), "the sequence never fires");
    assert!(d.stop().success());
}
