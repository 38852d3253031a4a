//! Op × dtype coverage against LiteRT (issue 12, point 3): every single-op case of
//! `switchyard_testkit::single_op` (the cases of docs/coverage/litert_builtin.json) that
//! LiteRT's built-in resolver accepts is run in both Switchyard CPU registries.
//!
//! Where Switchyard prepares a kernel, its outputs must match LiteRT's built-in kernels
//! (quantized within one step, float within 1e-4 relative); a kernel that runs and
//! disagrees, or panics, fails the test (but for KNOWN_MISMATCHES, each with its cause,
//! to be fixed in the kernels). Where Switchyard has no kernel the case is
//! counted as not covered; the table of both is printed (`--nocapture`). All LiteRT runs
//! share one Python process, so the whole test takes seconds.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{OpResolver, Tensor, npy};
use switchyard_testkit::single_op::{all_cases, probe_litert};
use switchyard_testkit::{compare, default_tolerance, switchyard_run};
use switchyard_tests::ops_doc::KNOWN_MISMATCHES;

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Matches,
    NoKernel(String),
    Differs(String),
}

fn run_case(
    model: &[u8],
    inputs: &[Tensor],
    expected: &[Tensor],
    r: Arc<dyn OpResolver>,
) -> Outcome {
    let ran = catch_unwind(AssertUnwindSafe(|| switchyard_run(model, inputs, r)));
    let actual = match ran {
        Err(_) => return Outcome::Differs("panicked".into()),
        Ok(Err(e)) => return Outcome::NoKernel(e),
        Ok(Ok(a)) => a,
    };
    if actual.len() != expected.len() {
        return Outcome::Differs(format!(
            "{} outputs, LiteRT {}",
            actual.len(),
            expected.len()
        ));
    }
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        if let Err(msg) = compare(a, e, default_tolerance(e.dtype)) {
            return Outcome::Differs(format!("output {i}: {msg}"));
        }
    }
    Outcome::Matches
}

#[test]
fn single_op_cases_match_litert_where_supported() {
    let cases = all_cases();
    let dir = tempfile::tempdir().expect("temp dir");
    probe_litert(&cases, dir.path(), &dir.path().join("report.json"), true)
        .unwrap_or_else(|e| panic!("LiteRT probe: {e}"));
    let resolvers: Vec<(&str, Arc<dyn OpResolver>)> = vec![
        ("reference", Arc::new(CpuResolver::reference())),
        ("optimized", Arc::new(CpuResolver::optimized())),
    ];
    let mut failures = Vec::new();
    let mut known_seen = Vec::new();
    let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut accepted, mut covered) = (0usize, [0usize; 2]);
    for (i, case) in cases.iter().enumerate() {
        let mut expected = Vec::new();
        while let Ok(t) = npy::read(
            dir.path()
                .join(format!("case_{i}_out{}.npy", expected.len())),
        ) {
            expected.push(t);
        }
        if expected.is_empty() {
            continue; // LiteRT's built-in resolver refuses this combination
        }
        accepted += 1;
        let name = format!("{} {}{}", case.op.name(), case.dtype, case.variant);
        let mut marks = Vec::new();
        for (k, (rname, r)) in resolvers.iter().enumerate() {
            match run_case(&case.model, &case.inputs, &expected, r.clone()) {
                Outcome::Matches => {
                    covered[k] += 1;
                    marks.push(format!("{rname}: ok"));
                }
                Outcome::NoKernel(e) => marks.push(format!("{rname}: no kernel ({e})")),
                Outcome::Differs(e) => {
                    if KNOWN_MISMATCHES.iter().any(|(k, _)| *k == name) {
                        known_seen.push(name.clone());
                        marks.push(format!("{rname}: differs (known)"));
                    } else {
                        failures.push(format!("{name} [{rname}]: {e}"));
                        marks.push(format!("{rname}: DIFFERS"));
                    }
                }
            }
        }
        table.insert(name, marks);
    }
    for (name, marks) in &table {
        println!("{name:<48} {}", marks.join("; "));
    }
    println!(
        "LiteRT accepts {accepted} of {} cases; Switchyard matches {} (reference) and {} (optimized)",
        cases.len(),
        covered[0],
        covered[1]
    );
    assert!(
        accepted > 300,
        "the probe found too few accepted cases: {accepted}"
    );
    for (k, why) in KNOWN_MISMATCHES {
        assert!(
            known_seen.iter().any(|n| n == k),
            "{k} is listed as a known mismatch ({why}) but now matches or no longer runs: \
             remove it from KNOWN_MISMATCHES"
        );
    }
    assert!(
        failures.is_empty(),
        "{} kernel(s) run but disagree with LiteRT:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
