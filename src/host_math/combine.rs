//! The combine kernels' work decomposition from `kernels/combine.cuh`.

extern "C" {
    fn moe_host_combine_items(num_tokens: i64, hidden: i64, threads: i64, vec: i64) -> i64;
    fn moe_host_combine_owner(
        item: i64,
        hidden: i64,
        thread: i64,
        threads: i64,
        vec: i64,
        token: *mut i64,
        column: *mut i64,
    );
}

fn i64_of(v: usize) -> i64 {
    i64::try_from(v).expect("combine sizes are validated to fit i64")
}

/// Work items (token, column tile) of a combine of `num_tokens` rows of `hidden` columns with
/// `threads` threads per block, each owning `vec` columns.
pub fn combine_items(num_tokens: usize, hidden: usize, threads: usize, vec: usize) -> usize {
    // SAFETY: a pure function of four integers (threads, vec >= 1 are the caller's to ensure).
    let items = unsafe {
        moe_host_combine_items(
            i64_of(num_tokens),
            i64_of(hidden),
            i64_of(threads),
            i64_of(vec),
        )
    };
    usize::try_from(items).expect("item counts are non-negative")
}

/// The token and first column that thread `thread` owns in work item `item` (the column may be past
/// `hidden`: no work).
pub fn combine_owner(
    item: usize,
    hidden: usize,
    thread: usize,
    threads: usize,
    vec: usize,
) -> (usize, usize) {
    let (mut token, mut column) = (0i64, 0i64);
    // SAFETY: a pure function of five integers writing two results to live locals.
    unsafe {
        moe_host_combine_owner(
            i64_of(item),
            i64_of(hidden),
            i64_of(thread),
            i64_of(threads),
            i64_of(vec),
            &mut token,
            &mut column,
        )
    };
    (
        usize::try_from(token).expect("non-negative token"),
        usize::try_from(column).expect("non-negative column"),
    )
}
