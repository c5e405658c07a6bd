//! The emulated device: an H200 (sm_90) by default, or an A100 (sm_80) with `PTX_EMU_DEVICE=a100`,
//! and the attributes the driver reports for it.

/// The properties of an emulated GPU model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Name reported by `cuDeviceGetName`; says that the device is emulated.
    pub name: &'static str,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// Threads per block.
    pub max_threads_per_block: u32,
    /// Threads resident per SM.
    pub max_threads_per_sm: u32,
    /// Blocks resident per SM.
    pub max_blocks_per_sm: u32,
    /// Shared memory per block without the opt-in attribute.
    pub smem_per_block: u32,
    /// Shared memory per block with `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` raised.
    pub smem_per_block_optin: u32,
    /// Shared memory per SM.
    pub smem_per_sm: u32,
    /// Shared memory the driver reserves per block.
    pub smem_reserved_per_block: u32,
    /// 32-bit registers per SM (and per block).
    pub regs_per_sm: u32,
    /// L2 cache bytes.
    pub l2_bytes: u32,
    /// Device memory bytes reported (host memory backs the allocations).
    pub total_memory: u64,
    /// SM clock in kHz.
    pub clock_khz: u32,
    /// Memory clock in kHz.
    pub memory_clock_khz: u32,
    /// Memory bus width in bits.
    pub bus_width: u32,
}

impl DeviceSpec {
    /// An emulated H200 SXM (sm_90, 132 SMs, 227 KiB of opt-in shared memory per block).
    pub const H200: DeviceSpec = DeviceSpec {
        name: "NVIDIA H200 (emulated by ptx-emu)",
        compute_capability: (9, 0),
        sm_count: 132,
        max_threads_per_block: 1024,
        max_threads_per_sm: 2048,
        max_blocks_per_sm: 32,
        smem_per_block: 48 * 1024,
        smem_per_block_optin: 227 * 1024,
        smem_per_sm: 228 * 1024,
        smem_reserved_per_block: 1024,
        regs_per_sm: 65536,
        l2_bytes: 50 * 1024 * 1024,
        total_memory: 150_011_084_800,
        clock_khz: 1_980_000,
        memory_clock_khz: 3_201_000,
        bus_width: 6144,
    };

    /// An emulated A100 SXM 80 GB (sm_80, 108 SMs, 163 KiB of opt-in shared memory per block).
    pub const A100: DeviceSpec = DeviceSpec {
        name: "NVIDIA A100-SXM4-80GB (emulated by ptx-emu)",
        compute_capability: (8, 0),
        sm_count: 108,
        max_threads_per_block: 1024,
        max_threads_per_sm: 2048,
        max_blocks_per_sm: 32,
        smem_per_block: 48 * 1024,
        smem_per_block_optin: 163 * 1024,
        smem_per_sm: 164 * 1024,
        smem_reserved_per_block: 1024,
        regs_per_sm: 65536,
        l2_bytes: 40 * 1024 * 1024,
        total_memory: 85_899_345_920,
        clock_khz: 1_410_000,
        memory_clock_khz: 1_593_000,
        bus_width: 5120,
    };

    /// The device chosen by `PTX_EMU_DEVICE` (`h200`, the default, or `a100`).
    pub fn from_env() -> Result<DeviceSpec, String> {
        DeviceSpec::named(std::env::var("PTX_EMU_DEVICE").as_deref().unwrap_or(""))
    }

    /// The device called `name` (`h200`, or empty, or `a100`, in any case).
    pub fn named(name: &str) -> Result<DeviceSpec, String> {
        match name.to_ascii_lowercase().as_str() {
            "" | "h200" => Ok(DeviceSpec::H200),
            "a100" => Ok(DeviceSpec::A100),
            other => Err(format!("PTX_EMU_DEVICE={other}: expected `h200` or `a100`")),
        }
    }

    /// The SM version as a number (90 for 9.0).
    pub fn sm(&self) -> u32 {
        self.compute_capability.0 * 10 + self.compute_capability.1
    }

    /// The value of device attribute `attr` (CUdevice_attribute), or None for an attribute the
    /// emulator does not know.
    pub fn attribute(&self, attr: u32) -> Option<i64> {
        let v: i64 = match attr {
            1 => self.max_threads_per_block as i64, // MAX_THREADS_PER_BLOCK
            2 | 3 => 1024,                          // MAX_BLOCK_DIM_X/Y
            4 => 64,                                // MAX_BLOCK_DIM_Z
            5 => i32::MAX as i64,                   // MAX_GRID_DIM_X
            6 | 7 => 65535,                         // MAX_GRID_DIM_Y/Z
            8 => self.smem_per_block as i64,        // MAX_SHARED_MEMORY_PER_BLOCK
            9 => 65536,                             // TOTAL_CONSTANT_MEMORY
            10 => 32,                               // WARP_SIZE
            11 => i32::MAX as i64,                  // MAX_PITCH
            12 => self.regs_per_sm as i64,          // MAX_REGISTERS_PER_BLOCK
            13 => self.clock_khz as i64,            // CLOCK_RATE
            14 => 512,                              // TEXTURE_ALIGNMENT
            15 => 1,                                // GPU_OVERLAP
            16 => self.sm_count as i64,             // MULTIPROCESSOR_COUNT
            17 => 0,                                // KERNEL_EXEC_TIMEOUT
            18 => 0,                                // INTEGRATED
            19 => 1,                                // CAN_MAP_HOST_MEMORY
            20 => 0,                                // COMPUTE_MODE (default)
            21..=30 => 0,                           // textures and surfaces: not emulated
            31 => 1,                                // CONCURRENT_KERNELS
            32 => 0,                                // ECC_ENABLED
            33..=35 => 0,                           // PCI_BUS_ID, PCI_DEVICE_ID, TCC_DRIVER
            36 => self.memory_clock_khz as i64,     // MEMORY_CLOCK_RATE
            37 => self.bus_width as i64,            // GLOBAL_MEMORY_BUS_WIDTH
            38 => self.l2_bytes as i64,             // L2_CACHE_SIZE
            39 => self.max_threads_per_sm as i64,   // MAX_THREADS_PER_MULTIPROCESSOR
            40 => 2,                                // ASYNC_ENGINE_COUNT
            41 => 1,                                // UNIFIED_ADDRESSING
            42..=74 => 0,                           // textures, surfaces, PCI domain
            75 => self.compute_capability.0 as i64, // COMPUTE_CAPABILITY_MAJOR
            76 => self.compute_capability.1 as i64, // COMPUTE_CAPABILITY_MINOR
            77 => 0,                                // MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH
            78 => 1,                                // STREAM_PRIORITIES_SUPPORTED
            79 | 80 => 1,                           // GLOBAL/LOCAL_L1_CACHE_SUPPORTED
            81 => self.smem_per_sm as i64,          // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
            82 => self.regs_per_sm as i64,          // MAX_REGISTERS_PER_MULTIPROCESSOR
            83 => 0,                                // MANAGED_MEMORY: not emulated
            84 | 85 => 0,                           // MULTI_GPU_BOARD(_GROUP_ID)
            86 => 0,                                // HOST_NATIVE_ATOMIC_SUPPORTED
            87 => 2,                                // SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO
            88..=94 => 0,                           // pageable/managed access, stream mem ops
            95 => 1,                                // COOPERATIVE_LAUNCH
            96 => 0,                                // COOPERATIVE_MULTI_DEVICE_LAUNCH
            97 => self.smem_per_block_optin as i64, // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
            98..=105 => 0,
            106 => self.max_blocks_per_sm as i64, // MAX_BLOCKS_PER_MULTIPROCESSOR
            107 => 0,
            108 => 0, // MAX_PERSISTING_L2_CACHE_SIZE
            109 => 0, // MAX_ACCESS_POLICY_WINDOW_SIZE
            110 => 0,
            111 => self.smem_reserved_per_block as i64, // RESERVED_SHARED_MEMORY_PER_BLOCK
            112..=114 => 0,
            115 => 1, // MEMORY_POOLS_SUPPORTED
            116..=119 => 0,
            120..=140 => 0,
            _ => return None,
        };
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h200_reports_its_shape() {
        let h = DeviceSpec::H200;
        assert_eq!(h.attribute(16), Some(132));
        assert_eq!(h.attribute(97), Some(232_448));
        assert_eq!(h.attribute(8), Some(49_152));
        assert_eq!(h.attribute(75), Some(9));
        assert_eq!(h.sm(), 90);
        assert!(h.name.contains("emulated"));
        assert_eq!(DeviceSpec::A100.sm(), 80);
        assert_eq!(DeviceSpec::named("A100"), Ok(DeviceSpec::A100));
        assert_eq!(DeviceSpec::A100.attribute(97), Some(166_912));
        assert_eq!(DeviceSpec::named(""), Ok(DeviceSpec::H200));
        assert!(DeviceSpec::named("v100").is_err());
        assert_eq!(h.attribute(10_000), None);
    }
}
