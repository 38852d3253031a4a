//! The metrics endpoint: a real daemon with `daemon.metrics` on TCP, some runs, some
//! refusals, then a Prometheus scrape whose counts must match — per tenant for an
//! admin, nothing of other tenants for a tenant token or an anonymous scrape — and
//! `switchyard top --once` showing the same rows.

use std::io::{Read, Write};
use std::process::Command;

use switchyard_client::blocking::Client;
use switchyard_client::{Run, Tensor};
use switchyard_interpreter::example_models::add_constant;
use switchyard_tests::daemon::{Daemon, free_port, wait_until};
use switchyard_tests::workspace_binary;

const ADMIN: &str = "metrics-admin-token-0123456789";
const APP: &str = "metrics-app-token-0123456789";

fn scrape(addr: &str, token: Option<&str>) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    reply
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn scrape_after_runs_shows_the_right_counts_to_the_right_readers() {
    let grpc_port = free_port();
    let metrics_port = free_port();
    let d = Daemon::start(&format!(
        "tcp = \"127.0.0.1:{grpc_port}\"\nmetrics = \"127.0.0.1:{metrics_port}\"\n\
         [[daemon.tokens]]\ntoken = \"{ADMIN}\"\ntenant = \"ops\"\nadmin = true\n\
         [[daemon.tokens]]\ntoken = \"{APP}\"\ntenant = \"app\"\n"
    ));
    let addr = format!("127.0.0.1:{metrics_port}");
    wait_until("the metrics endpoint", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    // Root is an admin uid, but its runs are counted under its own tenant, uid:0.
    let c = Client::connect_unix(&d.socket).unwrap();
    let model = c.load_bytes("adder", add_constant(1.0)).unwrap();
    let x = || Tensor::from_slice(&[1, 4], &[1.0f32; 4]).unwrap();
    for i in 0..3 {
        model
            .run(Run::new().input(x()).request_id(format!("m-{i}")))
            .unwrap();
    }
    let wrong = Tensor::from_slice(&[1, 2], &[1.0f32; 2]).unwrap();
    let e = model.run(Run::new().input(wrong)).unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
    assert!(
        e.to_string().contains("[1, 4]") && e.to_string().contains("[1, 2]"),
        "{e}"
    );
    let pool = c.shm_pool(4096).unwrap();
    let held = pool.alloc(100).unwrap();

    let all = scrape(&addr, Some(ADMIN));
    let tenant = format!("tenant=\"uid:0\",model=\"{}\"", model.id());
    assert_eq!(
        value(
            &all,
            &format!("switchyard_requests_total{{{tenant},name=\"adder\",outcome=\"ok\"}}")
        ),
        Some(3.0),
        "{all}"
    );
    assert_eq!(
        value(
            &all,
            &format!("switchyard_requests_total{{{tenant},name=\"adder\",outcome=\"failed\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &all,
            "switchyard_refusals_total{tenant=\"uid:0\",reason=\"invalid_argument\"}"
        ),
        Some(1.0),
        "{all}"
    );
    assert_eq!(
        value(&all, &format!("switchyard_run_seconds_count{{{tenant}}}")),
        Some(3.0)
    );
    assert_eq!(
        value(&all, &format!("switchyard_queue_seconds_count{{{tenant}}}")),
        Some(3.0)
    );
    assert!(
        value(
            &all,
            "switchyard_processor_busy_seconds_total{processor=\"cpu\"}"
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        value(&all, "switchyard_tenant_regions{tenant=\"uid:0\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&all, "switchyard_tenant_region_bytes{tenant=\"uid:0\"}"),
        Some(4096.0)
    );
    assert_eq!(
        value(&all, "switchyard_tenant_models{tenant=\"uid:0\"}"),
        Some(1.0)
    );
    assert_eq!(value(&all, "switchyard_models_prepared"), Some(1.0));

    // Another tenant and an anonymous reader see daemon-wide figures only.
    for reader in [Some(APP), None] {
        let theirs = scrape(&addr, reader);
        assert!(
            !theirs.contains("uid:0"),
            "{reader:?} sees another tenant:\n{theirs}"
        );
        assert_eq!(value(&theirs, "switchyard_models_prepared"), Some(1.0));
    }
    // An unknown token is refused.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nAuthorization: Bearer nope-nope-nope-nope\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");

    // `switchyard top` shows the same rows (root: an admin on the Unix socket).
    let top = Command::new(workspace_binary("switchyard"))
        .args(["top", "--once", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{screen}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let row = screen
        .lines()
        .find(|l| l.contains(model.id()))
        .unwrap_or_else(|| panic!("no row for the model:\n{screen}"));
    assert!(
        row.contains("adder") && row.split_whitespace().any(|w| w == "3"),
        "{row}"
    );
    assert!(screen.contains("invalid_argument"), "{screen}");
    drop(held);
    assert!(d.stop().success());
}
