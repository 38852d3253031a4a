//! docs/ops.md is generated from the operator descriptors; this fails when it is stale.

#[test]
fn ops_md_is_current() {
    let path = switchyard_tests::repo_root().join("docs/ops.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    let fresh = switchyard_tests::ops_doc::render();
    assert!(
        on_disk == fresh,
        "docs/ops.md is stale: run `cargo run -p switchyard-tests --bin gen_ops_doc`"
    );
}
