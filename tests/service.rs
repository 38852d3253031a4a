//! Service integration: `switchyardd` started as systemd starts it with
//! `dist/systemd/switchyardd*.socket` — both sockets created and listening before the
//! daemon runs, passed as descriptors 3 and 4 with LISTEN_FDS/LISTEN_PID/
//! LISTEN_FDNAMES — and readiness reported over NOTIFY_SOCKET (sd_notify).

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use switchyard_client::blocking::Client;
use switchyard_client::{Run, Tensor};
use switchyard_tests::daemon::terminate;
use switchyard_tests::workspace_binary;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn socket_activated_start_with_both_sockets_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("switchyard.sock");
    let shm_socket = dir.path().join("switchyard.shm");
    // What systemd does for the .socket units: bind and listen before the service runs.
    let grpc = UnixListener::bind(&socket).unwrap();
    let shm = UnixListener::bind(&shm_socket).unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // The listeners must survive exec; bash (dash takes single-digit descriptors only)
    // moves them to 3 and 4 and execs the
    // daemon, so LISTEN_PID ($$) is the daemon's pid, as systemd sets it.
    for l in [&grpc, &shm] {
        fcntl(l, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    }
    let config = dir.path().join("switchyard.toml");
    // The configured socket is elsewhere: the inherited ones must win.
    std::fs::write(
        &config,
        format!(
            "[daemon]\nsocket = \"{}\"\n",
            dir.path().join("unused/other.sock").display()
        ),
    )
    .unwrap();
    let script = format!(
        "exec 20<&{g} 21<&{s}; exec {g}<&- {s}<&-; exec 3<&20 4<&21 20<&- 21<&-; \
         LISTEN_PID=$$ exec \"$0\" --config \"$1\"",
        g = grpc.as_raw_fd(),
        s = shm.as_raw_fd()
    );
    let child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .arg(workspace_binary("switchyardd"))
        .arg(&config)
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "grpc:shm")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("SWITCHYARD_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // The test's own copies: only the daemon accepts from now on.
    drop(grpc);
    drop(shm);

    let ready = recv(&notify);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.0.id())),
        "{ready} (daemon pid {})",
        child.0.id()
    );
    assert!(
        !dir.path().join("unused/other.sock").exists(),
        "the daemon bound its own socket"
    );

    // Clients reach it through the inherited sockets, shared memory included.
    let c = Client::connect_unix(&socket).unwrap();
    let bytes = add_one_model();
    let model = c.load_bytes("add", bytes).unwrap();
    let pool = c.shm_pool(4096).unwrap();
    let x = pool
        .tensor(&Tensor::from_slice(&[1, 4], &[1.0f32, 2.0, 3.0, 4.0]).unwrap())
        .unwrap();
    let out = model.run(Run::new().input_shm(&x)).unwrap();
    assert_eq!(
        out.tensors[0].to_vec::<f32>().unwrap(),
        vec![2.0, 3.0, 4.0, 5.0]
    );

    let status = terminate(&mut child.0);
    assert!(status.success(), "{status:?}");
    let stopping = recv(&notify);
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    // The socket files belong to the service manager.
    assert!(socket.exists() && shm_socket.exists());
}

/// The daemon is killed if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `y = x + 1` on a 1x4 float tensor.
fn add_one_model() -> Vec<u8> {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{Activation, BuiltinOp, DType, OpKind, OpOptions};
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, 4]);
    let k = sg.constant_f32("one", &[1, 4], &[1.0; 4]);
    let y = sg.tensor("y", DType::F32, &[1, 4]);
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(x), Some(k)],
        &[y],
        OpOptions::Activation(Activation::None),
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    mb.finish()
}
