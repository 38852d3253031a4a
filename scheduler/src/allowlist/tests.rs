//! The allowlist against a fault-injecting delegate (modelled on TFLite's
//! dummy_delegate): wrong results, hangs and errors end up blocked; an accurate, fast
//! delegate is allowed; decisions survive a restart; a new driver is validated again.

use std::sync::atomic::Ordering;

use switchyard_interpreter::Partition;

use super::*;
use crate::testing::{Fault, FaultDelegate, chain};

fn placed(model: &Model, d: Arc<FaultDelegate>) -> PlacedPartition {
    PlacedPartition {
        partition: Partition::from_nodes(0, &model.subgraphs[0], vec![0, 1]),
        delegate: d,
        timeout: Some(Duration::from_millis(20)),
    }
}

fn input() -> Vec<Tensor> {
    let v: Vec<f32> = (0..64).map(|i| (i as f32).sin()).collect();
    vec![Tensor::from_f32(vec![64], &v).unwrap()]
}

/// The partition's CPU time as the daemon would serve it (optimized kernels, warm).
fn cpu_time(model: &Arc<Model>) -> f64 {
    let info = crate::graph::GraphInfo::analyse(model.clone()).unwrap();
    let m = info.measure_cpu(3, 1).unwrap();
    m.per_node_s.iter().flatten().sum()
}

fn judge(fault: Fault) -> Entry {
    let model = chain();
    let p = placed(&model, FaultDelegate::new(fault, "fault-1"));
    let cpu = cpu_time(&model);
    validate_partition(model, p, &input(), 3, Tolerance::default(), cpu).unwrap()
}

#[test]
fn a_good_fast_delegate_is_allowed() {
    let e = judge(Fault::None);
    assert_eq!(e.verdict, Verdict::Allowed, "{}", e.reason);
    assert_eq!(e.max_error, 0.0);
    assert_eq!(e.runs, 4, "one warm-up and three timed runs");
    assert!(e.cpu_s > 0.0 && e.delegate_s < e.cpu_s, "{e:?}");
}

#[test]
fn wrong_results_are_blocked() {
    let e = judge(Fault::WrongResult);
    assert_eq!(e.verdict, Verdict::Blocked);
    assert!(e.reason.contains("wrong results"), "{}", e.reason);
    assert!(e.max_error > 1e-3);
}

#[test]
fn hangs_are_blocked_as_timeouts() {
    let e = judge(Fault::Hang);
    assert_eq!(e.verdict, Verdict::Blocked);
    assert_eq!(e.timeouts, 4, "{}", e.reason);
    assert!(e.reason.contains("timed out"), "{}", e.reason);
}

#[test]
fn errors_are_blocked() {
    let e = judge(Fault::Error);
    assert_eq!(e.verdict, Verdict::Blocked);
    assert_eq!(e.failures, 4, "the warm-up's failure counts too");
    assert!(e.reason.contains("injected error"), "{}", e.reason);
}

#[test]
fn accurate_but_slower_is_blocked() {
    let e = judge(Fault::Slow);
    assert_eq!(e.verdict, Verdict::Blocked);
    assert!(e.reason.contains("not faster"), "{}", e.reason);
}

#[test]
fn decisions_persist_and_a_new_fingerprint_revalidates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.json");
    let model = chain();
    let good = FaultDelegate::new(Fault::None, "drv-1");
    {
        let mut list = Allowlist::open(&path).unwrap();
        let e = check_or_validate(
            &mut list,
            "model-sha",
            model.clone(),
            placed(&model, good.clone()),
            &input(),
            2,
            Tolerance::default(),
            cpu_time(&model),
        )
        .unwrap();
        assert_eq!(e.verdict, Verdict::Allowed);
    }
    assert_eq!(good.compiles.load(Ordering::SeqCst), 1);

    // Restart: the decision is reloaded, nothing runs again.
    let mut list = Allowlist::open(&path).unwrap();
    let k = key("model-sha", "fault");
    assert!(matches!(list.lookup(&k, "drv-1"), Lookup::Allowed(_)));
    check_or_validate(
        &mut list,
        "model-sha",
        model.clone(),
        placed(&model, good.clone()),
        &input(),
        2,
        Tolerance::default(),
        cpu_time(&model),
    )
    .unwrap();
    assert_eq!(good.compiles.load(Ordering::SeqCst), 1);

    // A driver update that breaks results: stale, validated again, now blocked.
    let broken = FaultDelegate::new(Fault::WrongResult, "drv-2");
    assert!(matches!(list.lookup(&k, "drv-2"), Lookup::Stale(_)));
    let e = check_or_validate(
        &mut list,
        "model-sha",
        model.clone(),
        placed(&model, broken.clone()),
        &input(),
        2,
        Tolerance::default(),
        cpu_time(&model),
    )
    .unwrap();
    assert_eq!(broken.compiles.load(Ordering::SeqCst), 1);
    assert_eq!(e.verdict, Verdict::Blocked);
    let reloaded = Allowlist::open(&path).unwrap();
    assert!(matches!(reloaded.lookup(&k, "drv-2"), Lookup::Blocked(_)));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|f| !f
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp.")),
        "no temporary file left behind"
    );
}

#[test]
fn a_corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.json");
    std::fs::write(&path, b"{ not json").unwrap();
    let err = Allowlist::open(&path).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
}
