//! An MoE block's weights on the device, uploaded once: the experts' projections in the layer's
//! type, or as FP8 or MXFP4 codes with their scales ([`GpuExpertStorage`]).

use super::{
    grouped_gemm_quant, Device, DeviceExpertMap, Fp8Weights, GemmElement, GemmEpilogue, GemmOutput,
    GpuElement, GroupedGemmShape, Mxfp4Weights, QuantWeights,
};
use crate::config::MoeConfig;
use crate::cpu::layer::{check_rank_weights, check_weights, ExpertStorage, MoeWeights};
use crate::error::{MoeError, Result};
use crate::expert_map::ExpertMap;
use crate::quant::{f32_to_e8m0, CodeFormat, QuantExperts};
use crate::raw::{RawBiases, RawExpertMap, RawLayerWeights, RawMatrices, RawSharedExpert};
use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, SyncOnDrop};
use std::fmt;
use std::sync::Arc;

/// How the experts' projections of a [`GpuMoeWeights`] are kept on the device: elements of the
/// layer's type (a [`CudaSlice`], the default), or quantized codes with their scales
/// ([`GpuQuantExperts`], run by the weight-only quantized GEMM).
///
/// Sealed: the raw layer knows exactly these.
pub trait GpuExpertStorage: fmt::Debug + Send + Sync + sealed::Storage + Sized {
    /// The device pointers as the raw layer takes them, each read guarded on `stream` (the guards
    /// go to `guards`).
    fn raw<'a>(&'a self, stream: &'a CudaStream, guards: &mut Vec<SyncOnDrop<'a>>) -> RawMatrices;

    /// Check that every buffer was allocated in `dev`'s context.
    fn check_device(&self, dev: &Device, what: &str) -> Result<()>;
}

/// A CPU layer's [`ExpertStorage`] that uploads to a [`GpuExpertStorage`]: `Vec<T>` to a
/// [`CudaSlice`], [`QuantExperts`] to [`GpuQuantExperts`].
pub trait UploadExperts: ExpertStorage + sealed::Upload {
    /// The device storage.
    type Gpu: GpuExpertStorage;

    /// These matrices copied to the device on `stream` (a pageable upload: load time, not a
    /// forward).
    fn upload(&self, stream: &Arc<CudaStream>) -> Result<Self::Gpu>;
}

mod sealed {
    pub trait Storage {}
    impl<T> Storage for cudarc::driver::CudaSlice<T> {}
    impl Storage for super::GpuQuantExperts {}

    pub trait Upload {}
    impl<T> Upload for Vec<T> {}
    impl Upload for crate::quant::QuantExperts {}
}

impl<T: GpuElement> UploadExperts for Vec<T> {
    type Gpu = CudaSlice<T>;

    fn upload(&self, stream: &Arc<CudaStream>) -> Result<CudaSlice<T>> {
        Ok(stream.clone_htod(self)?)
    }
}

impl UploadExperts for QuantExperts {
    type Gpu = GpuQuantExperts;

    fn upload(&self, stream: &Arc<CudaStream>) -> Result<GpuQuantExperts> {
        // Every code format is one the GPU kernels decode (a new one must be added here).
        let scales = match self.format() {
            CodeFormat::Fp8E4M3 => GpuScales::F32(stream.clone_htod(self.scales())?),
            CodeFormat::Mxfp4E2M1 => GpuScales::E8M0(stream.clone_htod(&e8m0_scales(self)?)?),
        };
        Ok(GpuQuantExperts {
            format: self.format(),
            codes: stream.clone_htod(self.codes())?,
            scales,
            group: self.group(),
        })
    }
}

impl<T: GpuElement> GpuExpertStorage for CudaSlice<T> {
    fn raw<'a>(&'a self, stream: &'a CudaStream, guards: &mut Vec<SyncOnDrop<'a>>) -> RawMatrices {
        let (p, g) = self.device_ptr(stream);
        guards.push(g);
        RawMatrices::Plain(p)
    }

    fn check_device(&self, dev: &Device, what: &str) -> Result<()> {
        dev.check_owns(what, self)
    }
}

/// The e8m0 bytes of an MXFP4 [`QuantExperts`]'s scales (each `2^(byte - 127)`), as the MXFP4 GEMM
/// reads them: a quarter of the `f32` scales' bytes. [`MoeError::Unsupported`] for a scale that is
/// no e8m0 value (not a power of two from `2^-127` to `2^127`): the CPU runs those, the GPU does not.
fn e8m0_scales(q: &QuantExperts) -> Result<Vec<u8>> {
    q.scales()
        .iter()
        .enumerate()
        .map(|(index, &s)| {
            f32_to_e8m0(s).ok_or_else(|| {
                MoeError::Unsupported(format!(
                    "MXFP4 scale {index} is {s}, not an e8m0 value (a power of two from 2^-127 \
                     to 2^127), which the GPU kernels keep the scales as; run these experts on \
                     the CPU"
                ))
            })
        })
        .collect()
}

/// A [`QuantExperts`] on the device, for the weight-only quantized GEMM
/// ([`grouped_gemm_quant`](super::grouped_gemm_quant)): its codes as stored, FP8 e4m3 with `f32`
/// scales or MXFP4 e2m1 with e8m0 scale bytes.
#[derive(Debug)]
pub struct GpuQuantExperts {
    format: CodeFormat,
    codes: CudaSlice<u8>,
    scales: GpuScales,
    group: usize,
}

/// The scales of a [`GpuQuantExperts`], one per row and group of columns.
#[derive(Debug)]
enum GpuScales {
    /// FP8's.
    F32(CudaSlice<f32>),
    /// MXFP4's, e8m0 bytes.
    E8M0(CudaSlice<u8>),
}

impl GpuQuantExperts {
    /// The code format.
    pub fn format(&self) -> CodeFormat {
        self.format
    }

    /// The weight-only quantized GEMM ([`grouped_gemm_quant`](super::grouped_gemm_quant)) on these
    /// experts: `out[rows of e] = epilogue(x[rows of e] @ dequant(w[e])^T)`.
    #[allow(clippy::too_many_arguments)]
    pub fn grouped_gemm<T: GemmElement, O: GemmOutput<T>>(
        &self,
        dev: &Device,
        x: &CudaView<'_, T>,
        expert_offsets: Option<&CudaView<'_, i64>>,
        shape: GroupedGemmShape,
        epilogue: GemmEpilogue,
        out: &mut CudaViewMut<'_, O>,
    ) -> Result<()> {
        let codes = self.codes.as_view();
        let group = self.group;
        match &self.scales {
            GpuScales::F32(s) => {
                let scales = s.as_view();
                let w = QuantWeights::Fp8E4M3(Fp8Weights {
                    codes: &codes,
                    scales: &scales,
                    group,
                });
                grouped_gemm_quant(dev, x, expert_offsets, w, shape, epilogue, out)
            }
            GpuScales::E8M0(s) => {
                let scales = s.as_view();
                let w = QuantWeights::Mxfp4E2M1(Mxfp4Weights {
                    codes: &codes,
                    scales: &scales,
                    group,
                });
                grouped_gemm_quant(dev, x, expert_offsets, w, shape, epilogue, out)
            }
        }
    }
}

impl GpuExpertStorage for GpuQuantExperts {
    fn raw<'a>(&'a self, stream: &'a CudaStream, guards: &mut Vec<SyncOnDrop<'a>>) -> RawMatrices {
        let (codes, g) = self.codes.device_ptr(stream);
        guards.push(g);
        let group = self.group;
        match &self.scales {
            GpuScales::F32(s) => {
                let (scales, g) = s.device_ptr(stream);
                guards.push(g);
                RawMatrices::Fp8E4M3 {
                    codes,
                    scales,
                    group,
                }
            }
            GpuScales::E8M0(s) => {
                let (scales, g) = s.device_ptr(stream);
                guards.push(g);
                RawMatrices::Mxfp4E2M1 {
                    codes,
                    scales,
                    group,
                }
            }
        }
    }

    fn check_device(&self, dev: &Device, what: &str) -> Result<()> {
        dev.check_owns(what, &self.codes)?;
        match &self.scales {
            GpuScales::F32(s) => dev.check_owns(what, s),
            GpuScales::E8M0(s) => dev.check_owns(what, s),
        }
    }
}

/// One shared expert's weights on the device (layouts as in
/// [`SharedExpertWeights`](crate::cpu::layer::SharedExpertWeights)), its projections kept as `S`.
#[derive(Debug)]
pub struct GpuSharedExpertWeights<T, S = CudaSlice<T>> {
    gate_up: S,
    down: S,
    gate: Option<CudaSlice<T>>,
}

impl<T> GpuSharedExpertWeights<T> {
    /// Fused gate-up projection `[2 * Is, H]` (gate rows first), `[Is, H]` when not gated.
    pub fn gate_up(&self) -> CudaView<'_, T> {
        self.gate_up.as_view()
    }

    /// Down projection `[H, Is]`.
    pub fn down(&self) -> CudaView<'_, T> {
        self.down.as_view()
    }
}

impl<T, S> GpuSharedExpertWeights<T, S> {
    /// Sigmoid gate `[H]`, when the config asks for one.
    pub fn gate(&self) -> Option<CudaView<'_, T>> {
        self.gate.as_ref().map(CudaSlice::as_view)
    }
}

/// gpt-oss's biases on the device (layouts as in [`MoeBiases`](crate::cpu::layer::MoeBiases)),
/// `f32`.
#[derive(Debug)]
pub struct GpuMoeBiases {
    router: CudaSlice<f32>,
    gate_up: CudaSlice<f32>,
    down: CudaSlice<f32>,
}

impl GpuMoeBiases {
    /// Router bias `[E]`.
    pub fn router(&self) -> CudaView<'_, f32> {
        self.router.as_view()
    }

    /// Routed experts' gate-up bias `[E, 2I]` (gate half first).
    pub fn gate_up(&self) -> CudaView<'_, f32> {
        self.gate_up.as_view()
    }

    /// Routed experts' down bias `[E, H]`.
    pub fn down(&self) -> CudaView<'_, f32> {
        self.down.as_view()
    }
}

/// An MoE block's weights on the device, in the crate's fused layout (see
/// [`MoeWeights`]), with the config they were validated against, and for one rank of an
/// expert-parallel layer its expert map. The experts' projections are kept as `S`: in the layer's
/// type by default, or quantized ([`GpuQuantExperts`], uploaded from a
/// `MoeWeights<T, QuantExperts>`).
#[derive(Debug)]
pub struct GpuMoeWeights<T, S = CudaSlice<T>> {
    config: MoeConfig,
    router: CudaSlice<T>,
    correction_bias: Option<CudaSlice<f32>>,
    gate_up: S,
    down: S,
    shared: Vec<GpuSharedExpertWeights<T, S>>,
    expert_map: Option<DeviceExpertMap>,
    biases: Option<GpuMoeBiases>,
}

impl<T: GpuElement, S: GpuExpertStorage> GpuMoeWeights<T, S> {
    /// Validate `weights` against `config` (exactly the checks of
    /// [`CpuMoeLayer::new`](crate::cpu::layer::CpuMoeLayer::new)) and copy them to `dev`, once.
    ///
    /// The copies wait for the host data (a pageable upload); do this at load time, not inside a
    /// forward. Errors: the validation's [`MoeError`](crate::MoeError)s,
    /// [`MoeError::Unsupported`](crate::MoeError::Unsupported) for experts in a code format the
    /// kernels do not decode (MXFP4), or [`MoeError::Cuda`] (for instance out of device memory).
    ///
    /// [`MoeError::Cuda`]: crate::MoeError::Cuda
    pub fn upload<H: UploadExperts<Gpu = S>>(
        dev: &Device,
        config: &MoeConfig,
        weights: &MoeWeights<T, H>,
    ) -> Result<Self> {
        check_weights(config, weights)?;
        Self::copy(dev, config, weights, None)
    }

    /// [`GpuMoeWeights::upload`] for one rank of an expert-parallel layer: `weights` hold this
    /// rank's routed experts only, as for
    /// [`CpuMoeLayer::with_expert_map`](crate::cpu::layer::CpuMoeLayer::with_expert_map), whose
    /// checks apply.
    pub fn upload_rank<H: UploadExperts<Gpu = S>>(
        dev: &Device,
        config: &MoeConfig,
        weights: &MoeWeights<T, H>,
        expert_map: &ExpertMap,
    ) -> Result<Self> {
        check_rank_weights(config, weights, Some(expert_map))?;
        let map = DeviceExpertMap::upload(dev, expert_map)?;
        Self::copy(dev, config, weights, Some(map))
    }

    /// Copy validated weights to `dev`.
    fn copy<H: UploadExperts<Gpu = S>>(
        dev: &Device,
        config: &MoeConfig,
        weights: &MoeWeights<T, H>,
        expert_map: Option<DeviceExpertMap>,
    ) -> Result<Self> {
        let stream = dev.stream();
        let shared = weights
            .shared
            .iter()
            .map(|s| {
                Ok(GpuSharedExpertWeights {
                    gate_up: s.gate_up.upload(stream)?,
                    down: s.down.upload(stream)?,
                    gate: s.gate.as_ref().map(|g| stream.clone_htod(g)).transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuMoeWeights {
            config: config.clone(),
            router: stream.clone_htod(&weights.router)?,
            correction_bias: weights
                .correction_bias
                .as_ref()
                .map(|b| stream.clone_htod(b))
                .transpose()?,
            gate_up: weights.gate_up.upload(stream)?,
            down: weights.down.upload(stream)?,
            shared,
            expert_map,
            biases: weights
                .biases
                .as_ref()
                .map(|b| -> Result<GpuMoeBiases> {
                    Ok(GpuMoeBiases {
                        router: stream.clone_htod(&b.router)?,
                        gate_up: stream.clone_htod(&b.gate_up)?,
                        down: stream.clone_htod(&b.down)?,
                    })
                })
                .transpose()?,
        })
    }
}

impl<T> GpuMoeWeights<T> {
    /// Routed experts' fused gate-up projections `[E, 2I, H]` (`[E, I, H]` when not gated).
    pub fn gate_up(&self) -> CudaView<'_, T> {
        self.gate_up.as_view()
    }

    /// Routed experts' down projections `[E, H, I]`.
    pub fn down(&self) -> CudaView<'_, T> {
        self.down.as_view()
    }
}

impl<T, S: GpuExpertStorage> GpuMoeWeights<T, S> {
    /// Routed experts' fused gate-up projections `[E, 2I, H]` (`[E, I, H]` when not gated), as
    /// stored.
    pub fn gate_up_stored(&self) -> &S {
        &self.gate_up
    }

    /// Routed experts' down projections `[E, H, I]`, as stored.
    pub fn down_stored(&self) -> &S {
        &self.down
    }

    /// The config the weights were validated against.
    pub fn config(&self) -> &MoeConfig {
        &self.config
    }

    /// Router `[E, H]`.
    pub fn router(&self) -> CudaView<'_, T> {
        self.router.as_view()
    }

    /// Score correction bias `[E]`, when the routing config uses one.
    pub fn correction_bias(&self) -> Option<CudaView<'_, f32>> {
        self.correction_bias.as_ref().map(CudaSlice::as_view)
    }

    /// The shared experts, one per entry of [`MoeConfig::shared_experts`].
    pub fn shared(&self) -> &[GpuSharedExpertWeights<T, S>] {
        &self.shared
    }

    /// gpt-oss's router and expert biases, `None` for the families without.
    pub fn biases(&self) -> Option<&GpuMoeBiases> {
        self.biases.as_ref()
    }

    /// The expert map of a rank's weights, `None` for the whole layer's.
    pub fn expert_map(&self) -> Option<&DeviceExpertMap> {
        self.expert_map.as_ref()
    }

    /// Routed experts these weights hold: all, or the rank's local ones.
    pub(crate) fn num_routed(&self) -> usize {
        self.expert_map
            .as_ref()
            .map_or(self.config.routing.num_experts, |m| m.map().num_local())
    }

    /// The weights as raw pointers, with the guards that order `stream` against other accesses to
    /// them until they are dropped.
    pub(crate) fn raw<'a>(
        &'a self,
        stream: &'a CudaStream,
    ) -> (RawLayerWeights, Vec<SyncOnDrop<'a>>) {
        let mut guards = Vec::new();
        let (router, g) = self.router.device_ptr(stream);
        guards.push(g);
        let gate_up = self.gate_up.raw(stream, &mut guards);
        let down = self.down.raw(stream, &mut guards);
        let mut shared = Vec::with_capacity(self.shared.len());
        for s in &self.shared {
            let gate_up = s.gate_up.raw(stream, &mut guards);
            let down = s.down.raw(stream, &mut guards);
            let gate = s.gate.as_ref().map(|g| {
                let (p, guard) = g.device_ptr(stream);
                guards.push(guard);
                p
            });
            shared.push(RawSharedExpert {
                gate_up,
                down,
                gate,
            });
        }
        let correction_bias = self.correction_bias.as_ref().map(|b| {
            let (p, g) = b.device_ptr(stream);
            guards.push(g);
            p
        });
        let expert_map = self.expert_map.as_ref().map(|m| {
            let (table, g) = m.device().device_ptr(stream);
            guards.push(g);
            RawExpertMap {
                table,
                num_local: m.map().num_local(),
                shared_experts: m.map().shared_experts(),
            }
        });
        let biases = self.biases.as_ref().map(|b| {
            let mut ptr = |s: &'a CudaSlice<f32>| {
                let (p, g) = s.device_ptr(stream);
                guards.push(g);
                p
            };
            RawBiases {
                router: ptr(&b.router),
                gate_up: ptr(&b.gate_up),
                down: ptr(&b.down),
            }
        });
        let raw = RawLayerWeights {
            router,
            correction_bias,
            gate_up,
            down,
            shared,
            expert_map,
            biases,
        };
        (raw, guards)
    }

    /// Check that every buffer was allocated in `dev`'s context.
    pub(crate) fn check_device(&self, dev: &Device) -> Result<()> {
        dev.check_owns("router weight", &self.router)?;
        if let Some(b) = &self.correction_bias {
            dev.check_owns("correction bias", b)?;
        }
        self.gate_up.check_device(dev, "expert gate_up weights")?;
        self.down.check_device(dev, "expert down weights")?;
        if let Some(m) = &self.expert_map {
            dev.check_owns("expert map", m.device())?;
        }
        if let Some(b) = &self.biases {
            dev.check_owns("router bias", &b.router)?;
            dev.check_owns("expert gate_up bias", &b.gate_up)?;
            dev.check_owns("expert down bias", &b.down)?;
        }
        for s in &self.shared {
            s.gate_up
                .check_device(dev, "shared expert gate_up weight")?;
            s.down.check_device(dev, "shared expert down weight")?;
            if let Some(g) = &s.gate {
                dev.check_owns("shared expert gate", g)?;
            }
        }
        Ok(())
    }
}
