//! Per-instruction execution counters of a kernel, accumulated over its launches.

/// Counters of one PTX instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstrStats {
    /// Times a warp issued it (one per group of converged lanes).
    pub warp_execs: u64,
    /// Threads that executed it (guard true), summed over issues.
    pub thread_execs: u64,
    /// Threads present in the issuing groups (guard true or false), summed over issues.
    pub thread_slots: u64,
    /// Global-memory warp requests.
    pub global_requests: u64,
    /// 32-byte sectors those requests touched.
    pub global_sectors: u64,
    /// Distinct bytes the threads asked for (a byte read by several lanes counts once).
    pub global_bytes: u64,
    /// Shared-memory warp requests.
    pub shared_requests: u64,
    /// Shared-memory wavefronts those requests needed (bank conflicts included).
    pub shared_wavefronts: u64,
    /// Wavefronts they would need without bank conflicts.
    pub shared_ideal: u64,
}

impl InstrStats {
    /// Add another instruction's counters.
    pub fn add(&mut self, o: &InstrStats) {
        self.warp_execs += o.warp_execs;
        self.thread_execs += o.thread_execs;
        self.thread_slots += o.thread_slots;
        self.global_requests += o.global_requests;
        self.global_sectors += o.global_sectors;
        self.global_bytes += o.global_bytes;
        self.shared_requests += o.shared_requests;
        self.shared_wavefronts += o.shared_wavefronts;
        self.shared_ideal += o.shared_ideal;
    }
}

/// Distinct 32-byte sectors touched by accesses `(address, bytes)`.
pub(crate) fn sectors(accesses: &mut Vec<u64>) -> u64 {
    accesses.sort_unstable();
    accesses.dedup();
    accesses.len() as u64
}

/// Distinct bytes covered by accesses `(address, bytes)` (lanes reading the same bytes count once).
pub(crate) fn unique_bytes(ranges: &mut [(u64, u32)]) -> u64 {
    ranges.sort_unstable();
    let mut total = 0u64;
    let mut end = 0u64;
    for &(a, n) in ranges.iter() {
        let e = a + n as u64;
        if e > end {
            total += e - a.max(end);
            end = e;
        }
    }
    total
}

/// Shared-memory wavefronts of one warp request: lanes are served in phases (all 32 lanes for
/// accesses of up to 4 bytes, half-warps for 8 bytes, quarter-warps for 16 bytes); within a phase,
/// each of the 32 four-byte banks delivers one distinct word per wavefront (lanes reading the same
/// word share it). Returns (wavefronts, conflict-free ideal). `accesses` holds (lane, shared
/// offset, bytes) of the active lanes.
pub(crate) fn shared_wavefronts(accesses: &[(u32, u64, u32)]) -> (u64, u64) {
    if accesses.is_empty() {
        return (0, 0);
    }
    let size = accesses.iter().map(|a| a.2).max().unwrap_or(4);
    let phase_lanes = match size {
        0..=4 => 32,
        5..=8 => 16,
        _ => 8,
    };
    let mut total = 0u64;
    let mut ideal = 0u64;
    for phase in 0..(32 / phase_lanes) {
        let lo = phase * phase_lanes;
        let mut words: Vec<u64> = Vec::new();
        for &(lane, addr, bytes) in accesses {
            if lane >= lo && lane < lo + phase_lanes {
                let first = addr / 4;
                let last = (addr + bytes.max(1) as u64 - 1) / 4;
                words.extend(first..=last);
            }
        }
        if words.is_empty() {
            continue;
        }
        words.sort_unstable();
        words.dedup();
        let mut per_bank = [0u32; 32];
        for w in &words {
            per_bank[(w % 32) as usize] += 1;
        }
        total += *per_bank.iter().max().unwrap_or(&1) as u64;
        ideal += (words.len() as u64 * 4).div_ceil(128);
    }
    (total, ideal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_conflicts_count_distinct_words_per_bank() {
        // 32 lanes reading consecutive words: one wavefront.
        let linear: Vec<_> = (0..32).map(|l| (l, l as u64 * 4, 4)).collect();
        assert_eq!(shared_wavefronts(&linear), (1, 1));
        // Stride of 32 words: every lane in bank 0, 32 wavefronts.
        let strided: Vec<_> = (0..32).map(|l| (l, l as u64 * 128, 4)).collect();
        assert_eq!(shared_wavefronts(&strided), (32, 1));
        // Broadcast: one word.
        let same: Vec<_> = (0..32).map(|l| (l, 64, 4)).collect();
        assert_eq!(shared_wavefronts(&same), (1, 1));
        // 16-byte accesses, consecutive: four quarter-warp phases, conflict free.
        let v4: Vec<_> = (0..32).map(|l| (l, l as u64 * 16, 16)).collect();
        assert_eq!(shared_wavefronts(&v4), (4, 4));
    }

    #[test]
    fn unique_bytes_merge_overlaps() {
        let mut v = vec![(0, 8), (4, 8), (100, 4), (0, 8)];
        assert_eq!(unique_bytes(&mut v), 12 + 4);
    }

    #[test]
    fn sectors_dedupe() {
        let mut v = vec![0, 0, 1, 3, 3];
        assert_eq!(sectors(&mut v), 3);
    }
}
