//! The handles of the CUDA libraries an engine's device opens next to the driver's context.
//!
//! candle's `CudaDevice` creates a cuBLAS handle and a cuRAND generator on its stream when it is
//! made, and candle-core links cuBLAS, cuBLASLt, cuRAND and NVRTC by name. So that such an engine
//! runs on the emulated GPU, the emulator's library (linked as each of those names, see
//! `scripts/with-emulated-gpu`) exports the handles' life cycle: create, bind to a stream, seed,
//! destroy. An unknown or destroyed handle is refused with the library's own status, not undefined
//! behaviour.
//!
//! The libraries' computations (GEMMs, random numbers) are not emulated and not exported: a program
//! that calls one fails to link against the emulator, rather than running and computing nothing.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};
use std::sync::{Mutex, MutexGuard};

/// `cublasStatus_t`.
pub type CublasStatus = c_int;
/// `curandStatus_t`.
pub type CurandStatus = c_int;

const CUBLAS_STATUS_SUCCESS: CublasStatus = 0;
const CUBLAS_STATUS_NOT_INITIALIZED: CublasStatus = 1;
const CUBLAS_STATUS_INVALID_VALUE: CublasStatus = 7;
const CURAND_STATUS_SUCCESS: CurandStatus = 0;
const CURAND_STATUS_NOT_INITIALIZED: CurandStatus = 101;
const CURAND_STATUS_TYPE_ERROR: CurandStatus = 103;

/// The library a handle belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Library {
    Cublas,
    Curand,
}

/// A live handle: its library and the stream it is bound to (null: the legacy default stream).
struct LibraryHandle {
    library: Library,
    stream: usize,
}

/// The live handles by value, which starts at `FIRST_HANDLE` and counts up (never reused).
struct Handles {
    live: BTreeMap<usize, LibraryHandle>,
    next: usize,
}

/// Well away from null and from small integers a caller might pass by mistake.
const FIRST_HANDLE: usize = 0x4c1b_0000;

static HANDLES: Mutex<Handles> = Mutex::new(Handles {
    live: BTreeMap::new(),
    next: FIRST_HANDLE,
});

fn handles() -> MutexGuard<'static, Handles> {
    HANDLES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A new handle of `library`, written to `out`; false when `out` is null.
unsafe fn create(library: Library, out: *mut *mut c_void) -> bool {
    if out.is_null() {
        return false;
    }
    let mut hs = handles();
    let h = hs.next;
    hs.next += 1;
    hs.live.insert(h, LibraryHandle { library, stream: 0 });
    // SAFETY: `out` is non-null and, by the library's contract, points to a handle to write.
    unsafe { out.write(h as *mut c_void) };
    true
}

/// Applies `f` to the live handle `h` of `library`; false when there is none.
fn with(library: Library, h: *mut c_void, f: impl FnOnce(&mut LibraryHandle)) -> bool {
    match handles().live.get_mut(&(h as usize)) {
        Some(handle) if handle.library == library => {
            f(handle);
            true
        }
        _ => false,
    }
}

/// Destroys the live handle `h` of `library`; false when there is none.
fn destroy(library: Library, h: *mut c_void) -> bool {
    let mut hs = handles();
    let key = h as usize;
    if hs.live.get(&key).is_some_and(|x| x.library == library) {
        hs.live.remove(&key);
        true
    } else {
        false
    }
}

fn cublas(ok: bool) -> CublasStatus {
    if ok {
        CUBLAS_STATUS_SUCCESS
    } else {
        CUBLAS_STATUS_NOT_INITIALIZED
    }
}

fn curand(ok: bool) -> CurandStatus {
    if ok {
        CURAND_STATUS_SUCCESS
    } else {
        CURAND_STATUS_NOT_INITIALIZED
    }
}

/// cublasCreate_v2.
#[no_mangle]
pub unsafe extern "C" fn cublasCreate_v2(handle: *mut *mut c_void) -> CublasStatus {
    // SAFETY: the caller's pointer, as the library's contract has it.
    if unsafe { create(Library::Cublas, handle) } {
        CUBLAS_STATUS_SUCCESS
    } else {
        CUBLAS_STATUS_INVALID_VALUE
    }
}

/// cublasSetStream_v2: binds the handle to `stream`.
#[no_mangle]
pub unsafe extern "C" fn cublasSetStream_v2(
    handle: *mut c_void,
    stream: *mut c_void,
) -> CublasStatus {
    cublas(with(Library::Cublas, handle, |h| {
        h.stream = stream as usize
    }))
}

/// cublasDestroy_v2.
#[no_mangle]
pub unsafe extern "C" fn cublasDestroy_v2(handle: *mut c_void) -> CublasStatus {
    cublas(destroy(Library::Cublas, handle))
}

/// curandCreateGenerator: any generator type of the library (pseudo-random 100 to 199, quasi-random
/// 200 to 299).
#[no_mangle]
pub unsafe extern "C" fn curandCreateGenerator(
    generator: *mut *mut c_void,
    rng_type: c_int,
) -> CurandStatus {
    if !(100..300).contains(&rng_type) {
        return CURAND_STATUS_TYPE_ERROR;
    }
    // SAFETY: the caller's pointer, as the library's contract has it.
    if unsafe { create(Library::Curand, generator) } {
        CURAND_STATUS_SUCCESS
    } else {
        CURAND_STATUS_NOT_INITIALIZED
    }
}

/// curandSetStream: binds the generator to `stream`.
#[no_mangle]
pub unsafe extern "C" fn curandSetStream(
    generator: *mut c_void,
    stream: *mut c_void,
) -> CurandStatus {
    curand(with(Library::Curand, generator, |h| {
        h.stream = stream as usize
    }))
}

/// curandSetPseudoRandomGeneratorSeed: accepted (no numbers are generated).
#[no_mangle]
pub unsafe extern "C" fn curandSetPseudoRandomGeneratorSeed(
    generator: *mut c_void,
    _seed: u64,
) -> CurandStatus {
    curand(with(Library::Curand, generator, |_| {}))
}

/// curandDestroyGenerator.
#[no_mangle]
pub unsafe extern "C" fn curandDestroyGenerator(generator: *mut c_void) -> CurandStatus {
    curand(destroy(Library::Curand, generator))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::null_mut;

    /// The stream a live handle is bound to.
    fn bound_stream(h: *mut c_void) -> Option<*mut c_void> {
        handles()
            .live
            .get(&(h as usize))
            .map(|x| x.stream as *mut c_void)
    }

    #[test]
    fn handles_live_from_create_to_destroy_and_keep_their_stream() {
        let stream = 0x1234 as *mut c_void;
        let (mut blas, mut rng) = (null_mut(), null_mut());
        unsafe {
            assert_eq!(cublasCreate_v2(&mut blas), CUBLAS_STATUS_SUCCESS);
            assert_eq!(curandCreateGenerator(&mut rng, 100), CURAND_STATUS_SUCCESS);
            assert_ne!(blas, rng);
            assert_eq!(cublasSetStream_v2(blas, stream), CUBLAS_STATUS_SUCCESS);
            assert_eq!(bound_stream(blas), Some(stream));
            assert_eq!(bound_stream(rng), Some(null_mut()));
            assert_eq!(curandSetStream(rng, stream), CURAND_STATUS_SUCCESS);
            assert_eq!(
                curandSetPseudoRandomGeneratorSeed(rng, 7),
                CURAND_STATUS_SUCCESS
            );
            // A handle of the other library, or one destroyed, is refused.
            assert_eq!(
                cublasSetStream_v2(rng, stream),
                CUBLAS_STATUS_NOT_INITIALIZED
            );
            assert_eq!(curandDestroyGenerator(blas), CURAND_STATUS_NOT_INITIALIZED);
            assert_eq!(cublasDestroy_v2(blas), CUBLAS_STATUS_SUCCESS);
            assert_eq!(cublasDestroy_v2(blas), CUBLAS_STATUS_NOT_INITIALIZED);
            assert_eq!(bound_stream(blas), None);
            assert_eq!(curandDestroyGenerator(rng), CURAND_STATUS_SUCCESS);
            assert_eq!(cublasCreate_v2(null_mut()), CUBLAS_STATUS_INVALID_VALUE);
            assert_eq!(curandCreateGenerator(&mut rng, 7), CURAND_STATUS_TYPE_ERROR);
        }
    }
}
