//! An MoE block's weights on the device, uploaded once.

use super::{Device, DeviceExpertMap, GpuElement};
use crate::config::MoeConfig;
use crate::cpu::layer::{check_rank_weights, check_weights, MoeWeights};
use crate::error::Result;
use crate::expert_map::ExpertMap;
use crate::raw::{RawExpertMap, RawLayerWeights, RawSharedExpert};
use cudarc::driver::{CudaSlice, CudaStream, CudaView, DevicePtr, SyncOnDrop};

/// One shared expert's weights on the device (layouts as in
/// [`SharedExpertWeights`](crate::cpu::layer::SharedExpertWeights)).
#[derive(Debug)]
pub struct GpuSharedExpertWeights<T> {
    gate_up: CudaSlice<T>,
    down: CudaSlice<T>,
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

    /// Sigmoid gate `[H]`, when the config asks for one.
    pub fn gate(&self) -> Option<CudaView<'_, T>> {
        self.gate.as_ref().map(CudaSlice::as_view)
    }
}

/// An MoE block's weights on the device, in the crate's fused layout (see
/// [`MoeWeights`]), with the config they were validated against, and for one rank of an
/// expert-parallel layer its expert map.
#[derive(Debug)]
pub struct GpuMoeWeights<T> {
    config: MoeConfig,
    router: CudaSlice<T>,
    correction_bias: Option<CudaSlice<f32>>,
    gate_up: CudaSlice<T>,
    down: CudaSlice<T>,
    shared: Vec<GpuSharedExpertWeights<T>>,
    expert_map: Option<DeviceExpertMap>,
}

impl<T: GpuElement> GpuMoeWeights<T> {
    /// Validate `weights` against `config` (exactly the checks of
    /// [`CpuMoeLayer::new`](crate::cpu::layer::CpuMoeLayer::new)) and copy them to `dev`, once.
    ///
    /// The copies wait for the host data (a pageable upload); do this at load time, not inside a
    /// forward. Errors: the validation's [`MoeError`](crate::MoeError)s, or [`MoeError::Cuda`]
    /// (for instance out of device memory).
    ///
    /// [`MoeError::Cuda`]: crate::MoeError::Cuda
    pub fn upload(dev: &Device, config: &MoeConfig, weights: &MoeWeights<T>) -> Result<Self> {
        check_weights(config, weights)?;
        Self::copy(dev, config, weights, None)
    }

    /// [`GpuMoeWeights::upload`] for one rank of an expert-parallel layer: `weights` hold this
    /// rank's routed experts only, as for
    /// [`CpuMoeLayer::with_expert_map`](crate::cpu::layer::CpuMoeLayer::with_expert_map), whose
    /// checks apply.
    pub fn upload_rank(
        dev: &Device,
        config: &MoeConfig,
        weights: &MoeWeights<T>,
        expert_map: &ExpertMap,
    ) -> Result<Self> {
        check_rank_weights(config, weights, Some(expert_map))?;
        let map = DeviceExpertMap::upload(dev, expert_map)?;
        Self::copy(dev, config, weights, Some(map))
    }

    /// Copy validated weights to `dev`.
    fn copy(
        dev: &Device,
        config: &MoeConfig,
        weights: &MoeWeights<T>,
        expert_map: Option<DeviceExpertMap>,
    ) -> Result<Self> {
        let stream = dev.stream();
        let shared = weights
            .shared
            .iter()
            .map(|s| {
                Ok(GpuSharedExpertWeights {
                    gate_up: stream.clone_htod(&s.gate_up)?,
                    down: stream.clone_htod(&s.down)?,
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
            gate_up: stream.clone_htod(&weights.gate_up)?,
            down: stream.clone_htod(&weights.down)?,
            shared,
            expert_map,
        })
    }
}

impl<T> GpuMoeWeights<T> {
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

    /// Routed experts' fused gate-up projections `[E, 2I, H]` (`[E, I, H]` when not gated).
    pub fn gate_up(&self) -> CudaView<'_, T> {
        self.gate_up.as_view()
    }

    /// Routed experts' down projections `[E, H, I]`.
    pub fn down(&self) -> CudaView<'_, T> {
        self.down.as_view()
    }

    /// The shared experts, one per entry of [`MoeConfig::shared_experts`].
    pub fn shared(&self) -> &[GpuSharedExpertWeights<T>] {
        &self.shared
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
        let mut ptr = |s: &'a CudaSlice<T>| {
            let (p, g) = s.device_ptr(stream);
            guards.push(g);
            p
        };
        let router = ptr(&self.router);
        let gate_up = ptr(&self.gate_up);
        let down = ptr(&self.down);
        let shared = self
            .shared
            .iter()
            .map(|s| RawSharedExpert {
                gate_up: ptr(&s.gate_up),
                down: ptr(&s.down),
                gate: s.gate.as_ref().map(&mut ptr),
            })
            .collect();
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
        let raw = RawLayerWeights {
            router,
            correction_bias,
            gate_up,
            down,
            shared,
            expert_map,
        };
        (raw, guards)
    }

    /// Check that every buffer was allocated in `dev`'s context.
    pub(crate) fn check_device(&self, dev: &Device) -> Result<()> {
        dev.check_owns("router weight", &self.router)?;
        if let Some(b) = &self.correction_bias {
            dev.check_owns("correction bias", b)?;
        }
        dev.check_owns("expert gate_up weights", &self.gate_up)?;
        dev.check_owns("expert down weights", &self.down)?;
        if let Some(m) = &self.expert_map {
            dev.check_owns("expert map", m.device())?;
        }
        for s in &self.shared {
            dev.check_owns("shared expert gate_up weight", &s.gate_up)?;
            dev.check_owns("shared expert down weight", &s.down)?;
            if let Some(g) = &s.gate {
                dev.check_owns("shared expert gate", g)?;
            }
        }
        Ok(())
    }
}
