//! The Python client package (`client-python/`) and standard grpcio clients against a
//! real `switchyardd`: grpcio with default channel options over the Unix socket (the
//! socket path as :authority) and over TCP with a token, grpc.health.v1, reflection v1
//! and v1alpha, face detection against LiteRT's outputs, shared memory over memfd and
//! SCM_RIGHTS, strict shapes, priority and deadline, a session streaming the wake-word
//! model against LiteRT's series.
//!
//! The Python tests are `client-python/tests/test_client.py` (unittest); the package
//! is installed into the project venv by scripts/setup.sh.

use std::process::Command;

use switchyard_testkit::python;
use switchyard_tests::daemon::{Daemon, free_port, wait_until};
use switchyard_tests::repo_root;

#[test]
fn python_client_and_grpcio_against_the_daemon() {
    let importable = Command::new(python())
        .args([
            "-c",
            "import switchyard, grpc, grpc_health, grpc_reflection",
        ])
        .current_dir(std::env::temp_dir())
        .status()
        .expect("run the venv's python");
    assert!(
        importable.success(),
        "the Python client is not installed in .venv: run scripts/setup.sh (the README's test command does)"
    );
    let port = free_port();
    let token = "python-test-token-0123456789";
    let d = Daemon::start(&format!(
        "tcp = \"127.0.0.1:{port}\"\n\
         [[daemon.tokens]]\ntoken = \"{token}\"\ntenant = \"python\"\n\
         [daemon.quota]\nmodels = 16\n"
    ));
    let addr = format!("127.0.0.1:{port}");
    wait_until("the TCP listener", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let out = Command::new(python())
        .args(["-m", "unittest", "-v", "test_client"])
        .current_dir(repo_root().join("client-python/tests"))
        .env("SWITCHYARD_TEST_SOCKET", &d.socket)
        .env("SWITCHYARD_TEST_TCP", &addr)
        .env("SWITCHYARD_TEST_TOKEN", token)
        .env("SWITCHYARD_TEST_ROOT", repo_root())
        .output()
        .expect("run the Python tests");
    let log = String::from_utf8_lossy(&out.stderr);
    println!("{log}");
    assert!(out.status.success(), "Python tests failed:\n{log}");
    assert!(log.contains("Ran 9 tests"), "{log}");
    assert!(d.stop().success());
}
