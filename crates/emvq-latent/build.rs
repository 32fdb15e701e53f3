//! Embeds the LibTorch library folder as an rpath so this crate's tests and
//! binaries start without `LD_LIBRARY_PATH` (see `emvq_tensor::runtime`).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=EMVQ_LIBTORCH_LIB={lib}");
    }
}
