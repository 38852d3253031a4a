//! Writes docs/ops.md (see tests/common/ops_doc.rs).
//!
//! usage: cargo run -p switchyard-tests --bin gen_ops_doc

fn main() {
    let path = switchyard_tests::repo_root().join("docs/ops.md");
    if let Err(e) = std::fs::write(&path, switchyard_tests::ops_doc::render()) {
        eprintln!("gen_ops_doc: {}: {e}", path.display());
        std::process::exit(1);
    }
    println!("gen_ops_doc: wrote {}", path.display());
}
