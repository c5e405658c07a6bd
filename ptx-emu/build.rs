//! Gives the driver library the soname `libcuda.so`, the first name cudarc asks the dynamic loader
//! for, so that a process which has loaded this library by path gets it back from
//! `dlopen("libcuda.so")` (glibc matches already-loaded objects by soname).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so");
    }
}
