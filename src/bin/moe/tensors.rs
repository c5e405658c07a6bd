//! Reading the input hidden states and writing the outputs (atomically: temporary file, then rename).

use anyhow::{bail, Context, Result};
use moe_kernels::hf::SafetensorsFile;
use moe_kernels::HostTensor;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::common::parent_dir;

/// The name of the input and output hidden-states tensor.
pub const HIDDEN: &str = "hidden_states";

/// Read `hidden_states` `[T, H]` (f32, bf16 or f16) from the safetensors file `path`.
pub fn read_hidden_states(path: &Path, hidden_size: usize) -> Result<HostTensor> {
    let file = SafetensorsFile::open(path).context("cannot read the input")?;
    if !file.contains(HIDDEN) {
        let keys = file.keys();
        let has = if keys.is_empty() {
            "it holds no tensors".to_string()
        } else {
            let shown: Vec<String> = keys.iter().take(8).map(|k| format!("`{k}`")).collect();
            let more = if keys.len() > 8 { ", ..." } else { "" };
            format!("it holds {}{more}", shown.join(", "))
        };
        bail!("input {} has no tensor `{HIDDEN}` ({has})", path.display());
    }
    let t = file.tensor(HIDDEN).context("cannot read the input")?;
    match *t.shape() {
        [_, h] if h == hidden_size => Ok(t),
        _ => bail!(
            "input tensor `{HIDDEN}` in {} has shape {:?}, expected [T, {hidden_size}] (tokens, the model's \
             hidden_size)",
            path.display(),
            t.shape()
        ),
    }
}

/// One output tensor: name, dtype, shape, little-endian bytes.
pub struct OutTensor {
    /// Its name.
    pub name: &'static str,
    /// Its safetensors dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its data, little-endian.
    pub bytes: Vec<u8>,
}

impl OutTensor {
    /// An `F32` tensor.
    pub fn f32(name: &'static str, shape: Vec<usize>, v: &[f32]) -> Self {
        OutTensor {
            name,
            dtype: Dtype::F32,
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// An `I32` tensor.
    pub fn i32(name: &'static str, shape: Vec<usize>, v: &[i32]) -> Self {
        OutTensor {
            name,
            dtype: Dtype::I32,
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// A file removed when dropped unless kept (so an error or a panic leaves nothing behind).
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Write `tensors` with `metadata` to `out` as safetensors: into a temporary file beside it, then renamed
/// over `out`, so `out` either does not change or is complete.
pub fn write_atomic(
    out: &Path,
    tensors: &[OutTensor],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name, v))
                .with_context(|| format!("cannot lay out output tensor `{}`", t.name))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes =
        safetensors::serialize(views, Some(metadata)).context("cannot serialise the output")?;

    let name = out
        .file_name()
        .with_context(|| format!("output {} is not a file name", out.display()))?;
    let tmp = TempFile {
        path: parent_dir(out).join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        )),
        keep: false,
    };
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp.path)?;
        f.write_all(&bytes)?;
        f.sync_all()
    };
    write().with_context(|| format!("cannot write output {}", out.display()))?;
    fs::rename(&tmp.path, out).with_context(|| format!("cannot write output {}", out.display()))?;
    let mut tmp = tmp;
    tmp.keep = true;
    Ok(())
}
