//! Compiles the self-test's function from WAT, so `emberd` carries one tiny module
//! without building the sample functions (`ember-examples` builds a whole wasm32
//! workspace). The WAT is the examples' echo reactor: one source for both.

fn main() {
    let source = "../../examples/wat/echo-reactor.wat";
    println!("cargo:rerun-if-changed={source}");
    let wasm = wat::parse_file(source).unwrap_or_else(|e| panic!("{source}: {e}"));
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("selftest.wasm"), wasm).expect("writing selftest.wasm");
}
