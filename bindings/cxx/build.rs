//! Generates the C++ side of the bridge in src/lib.rs (cxx-build) and compiles it into the crate.
//! The header C++ includes, `dualwrite-cxx/src/lib.rs.h`, and cxx's `rust/cxx.h` are written to
//! `$OUT_DIR/cxxbridge/include/` (tests/cxx_workflow.rs and scripts/install read them from there).

fn main() {
    cxx_build::bridge("src/lib.rs").std("c++17").compile("dualwrite-cxx-bridge");
    println!("cargo:rerun-if-changed=src/lib.rs");
}
