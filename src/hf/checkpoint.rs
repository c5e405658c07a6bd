//! Safetensors checkpoints, memory-mapped: one `model.safetensors`, or the shards listed by
//! `model.safetensors.index.json`.
//!
//! Shards are opened (mapped, header parsed) the first time a tensor in them is read, so loading one layer
//! of a checkpoint with hundreds of shards touches only the shards that hold it. Tensors stored as `BF16`,
//! `F16` or `F32` are converted to the element type asked for while they are copied out of the map (one
//! rounding at most); any other stored type is a [`MoeError::TensorDType`].
//!
//! Mapping a file is only sound while no other process truncates or rewrites it; checkpoints are treated
//! as read-only, as every inference engine does.

use crate::dtype::{DType, Element};
use crate::error::{MoeError, Result};
use crate::tensor::HostTensor;
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The sharded checkpoint's index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// What the header says about one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    /// The stored element type when the crate can read it (`None` for I64, FP8, ...).
    pub dtype: Option<DType>,
    /// The stored element type as the safetensors header names it (`BF16`, `F32`, `I64`, `F8_E4M3`, ...).
    pub stored: String,
    /// The stored shape.
    pub shape: Vec<usize>,
    /// The bytes it occupies in the file.
    pub bytes: usize,
    /// The file holding it.
    pub file: PathBuf,
}

/// The stored types plain (unquantized) weights may have.
pub(crate) const PLAIN_TYPES: &str = "BF16, F16 or F32";

/// One memory-mapped safetensors file with its parsed header.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    metadata: Metadata,
}

fn crate_dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::BF16 => Some(DType::BF16),
        Dtype::F16 => Some(DType::F16),
        _ => None,
    }
}

fn shape_len(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl SafetensorsFile {
    /// Map `path` and parse its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |error| MoeError::Io {
            path: path.clone(),
            error,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < 8 {
            return Err(MoeError::MalformedFile {
                path,
                message: format!("{len} bytes is too short for a safetensors file"),
            });
        }
        // SAFETY: the map is read-only and the file is treated as immutable while it is mapped (see the
        // module documentation); every access goes through bounds-checked slices of the map.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| MoeError::MalformedFile {
                path: path.clone(),
                message: format!("bad safetensors header: {e}"),
            })?;
        Ok(SafetensorsFile {
            path,
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor key in the file, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.metadata.tensors().into_keys().collect();
        k.sort();
        k
    }

    /// Whether the file holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.metadata.info(key).is_some()
    }

    fn info(&self, key: &str) -> Result<&TensorInfo> {
        self.metadata
            .info(key)
            .ok_or_else(|| MoeError::MissingTensor {
                key: key.to_string(),
                file: self.path.display().to_string(),
            })
    }

    /// The stored dtype and shape of `key`.
    pub fn meta(&self, key: &str) -> Result<TensorMeta> {
        let info = self.info(key)?;
        Ok(TensorMeta {
            dtype: crate_dtype(info.dtype),
            stored: format!("{:?}", info.dtype),
            shape: info.shape.clone(),
            bytes: info.data_offsets.1 - info.data_offsets.0,
            file: self.path.clone(),
        })
    }

    /// Check that `key` is stored with shape `expected` (a [`MoeError::TensorShape`] naming the key
    /// and file otherwise).
    pub fn check_shape(&self, key: &str, expected: &[usize]) -> Result<()> {
        let info = self.info(key)?;
        if info.shape != expected {
            return Err(MoeError::TensorShape {
                key: key.to_string(),
                file: self.path.display().to_string(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        Ok(())
    }

    /// The stored bytes and dtype of `key`, checked against `expected` when given.
    fn raw(&self, key: &str, expected: Option<&[usize]>) -> Result<(DType, &[u8], &[usize])> {
        if let Some(want) = expected {
            self.check_shape(key, want)?;
        }
        let info = self.info(key)?;
        let file = || self.path.display().to_string();
        let dtype = crate_dtype(info.dtype).ok_or_else(|| MoeError::TensorDType {
            key: key.to_string(),
            file: file(),
            found: format!("{:?}", info.dtype),
            expected: PLAIN_TYPES.into(),
        })?;
        Ok((dtype, self.data(key, info)?, &info.shape))
    }

    /// The stored bytes of `key` (`info`'s).
    fn data(&self, key: &str, info: &TensorInfo) -> Result<&[u8]> {
        let (a, b) = info.data_offsets;
        // read_metadata has checked that every tensor's byte length matches its shape and dtype, and
        // that the offsets lie inside the file; the checked sums keep a bad header an error anyway.
        self.data_start
            .checked_add(a)
            .zip(self.data_start.checked_add(b))
            .and_then(|(a, b)| self.mmap.get(a..b))
            .ok_or_else(|| MoeError::MalformedFile {
                path: self.path.clone(),
                message: format!("the data of `{key}` lies outside the file"),
            })
    }

    /// Copy the stored bytes of `key`, which must have shape `expected` and the stored type `stored`
    /// (as safetensors names it, `F8_E4M3` say), into `out` (one byte per element).
    pub fn read_codes_into(
        &self,
        key: &str,
        expected: &[usize],
        stored: &str,
        out: &mut [u8],
    ) -> Result<()> {
        self.check_shape(key, expected)?;
        let info = self.info(key)?;
        let found = format!("{:?}", info.dtype);
        if found != stored {
            return Err(MoeError::TensorDType {
                key: key.to_string(),
                file: self.path.display().to_string(),
                found,
                expected: stored.to_string(),
            });
        }
        let bytes = self.data(key, info)?;
        if bytes.len() != out.len() {
            return Err(MoeError::shape(
                format!("output buffer for `{key}`"),
                format!("{} bytes", bytes.len()),
                format!("{} bytes", out.len()),
            ));
        }
        out.copy_from_slice(bytes);
        Ok(())
    }

    /// Read `key`, which must have shape `expected`, converting to `W` into `out` (whose length must be
    /// the shape's element count).
    pub fn read_into<W: Element>(
        &self,
        key: &str,
        expected: &[usize],
        out: &mut [W],
    ) -> Result<()> {
        let (dtype, bytes, _) = self.raw(key, Some(expected))?;
        if shape_len(expected) != Some(out.len()) {
            return Err(MoeError::shape(
                format!("output buffer for `{key}`"),
                format!("{expected:?}"),
                format!("{} elements", out.len()),
            ));
        }
        convert(dtype, bytes, out);
        Ok(())
    }

    /// Read `key`, which must have shape `expected`, converted to `W`. The stored shape is checked
    /// before anything is allocated, so the allocation is bounded by the file's size, never by
    /// `expected` alone.
    pub fn read<W: Element>(&self, key: &str, expected: &[usize]) -> Result<Vec<W>> {
        self.check_shape(key, expected)?;
        let n = shape_len(expected)
            .ok_or_else(|| MoeError::SizeOverflow(format!("elements of `{key}` {expected:?}")))?;
        let mut out = vec![W::default(); n];
        self.read_into(key, expected, &mut out)?;
        Ok(out)
    }

    /// Read `key` in its stored dtype and shape.
    pub fn tensor(&self, key: &str) -> Result<HostTensor> {
        let (dtype, bytes, shape) = self.raw(key, None)?;
        let n = bytes.len() / dtype.size_in_bytes();
        let shape = shape.to_vec();
        match dtype {
            DType::F32 => HostTensor::from_vec(key, shape, typed::<f32>(dtype, bytes, n)),
            DType::BF16 => HostTensor::from_vec(key, shape, typed::<bf16>(dtype, bytes, n)),
            DType::F16 => HostTensor::from_vec(key, shape, typed::<f16>(dtype, bytes, n)),
        }
    }
}

fn typed<W: Element>(dtype: DType, bytes: &[u8], n: usize) -> Vec<W> {
    let mut v = vec![W::default(); n];
    convert(dtype, bytes, &mut v);
    v
}

/// Decode little-endian `bytes` of type `dtype` into `out`, converting to `W`.
fn convert<W: Element>(dtype: DType, bytes: &[u8], out: &mut [W]) {
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = W::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = W::from_f32(bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32());
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = W::from_f32(f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32());
            }
        }
    }
}

/// A shard of a sharded checkpoint, opened on first use.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    file: Mutex<Option<Arc<SafetensorsFile>>>,
}

#[derive(Debug)]
enum Source {
    Single(Arc<SafetensorsFile>),
    Sharded {
        index: PathBuf,
        /// Tensor key to shard number.
        weight_map: HashMap<String, usize>,
        shards: Vec<Shard>,
    },
}

/// A model directory's weights: `model.safetensors`, or else the shards of
/// `model.safetensors.index.json`.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    source: Source,
}

impl Checkpoint {
    /// Open the checkpoint in `dir`: map `model.safetensors` when it exists, otherwise read the index
    /// (shards are mapped when first read). [`MoeError::NoCheckpoint`] when there is neither.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Ok(Checkpoint {
                source: Source::Single(Arc::new(SafetensorsFile::open(&single)?)),
                dir,
            });
        }
        let index = dir.join(INDEX_FILE);
        if !index.exists() {
            if !dir.is_dir() {
                return Err(MoeError::Io {
                    path: dir,
                    error: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "not an existing directory",
                    ),
                });
            }
            return Err(MoeError::NoCheckpoint { dir });
        }
        let text = std::fs::read_to_string(&index).map_err(|error| MoeError::Io {
            path: index.clone(),
            error,
        })?;
        let (weight_map, shards) = parse_index(&text, &index, &dir)?;
        Ok(Checkpoint {
            dir,
            source: Source::Sharded {
                index,
                weight_map,
                shards,
            },
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the checkpoint is sharded (has an index).
    pub fn is_sharded(&self) -> bool {
        matches!(self.source, Source::Sharded { .. })
    }

    /// The weight files: the single file, or every shard the index names.
    pub fn files(&self) -> Vec<PathBuf> {
        match &self.source {
            Source::Single(f) => vec![f.path.clone()],
            Source::Sharded { shards, .. } => shards.iter().map(|s| s.path.clone()).collect(),
        }
    }

    /// Whether the checkpoint has `key` (for a sharded checkpoint: whether the index lists it).
    pub fn contains(&self, key: &str) -> bool {
        match &self.source {
            Source::Single(f) => f.contains(key),
            Source::Sharded { weight_map, .. } => weight_map.contains_key(key),
        }
    }

    /// Every tensor key, sorted (for a sharded checkpoint: every key the index lists).
    pub fn keys(&self) -> Vec<String> {
        match &self.source {
            Source::Single(f) => f.keys(),
            Source::Sharded { weight_map, .. } => {
                let mut k: Vec<String> = weight_map.keys().cloned().collect();
                k.sort();
                k
            }
        }
    }

    /// The opened file holding `key`.
    fn file_of(&self, key: &str) -> Result<Arc<SafetensorsFile>> {
        match &self.source {
            Source::Single(f) => Ok(f.clone()),
            Source::Sharded {
                index,
                weight_map,
                shards,
            } => {
                let n = *weight_map.get(key).ok_or_else(|| MoeError::MissingTensor {
                    key: key.to_string(),
                    file: index.display().to_string(),
                })?;
                let shard = &shards[n];
                let mut slot = shard.file.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(f) = slot.as_ref() {
                    return Ok(f.clone());
                }
                let f = Arc::new(SafetensorsFile::open(&shard.path)?);
                *slot = Some(f.clone());
                Ok(f)
            }
        }
    }

    /// The stored dtype, shape and file of `key`.
    pub fn meta(&self, key: &str) -> Result<TensorMeta> {
        self.file_of(key)?.meta(key)
    }

    /// Check that `key` exists with shape `expected` ([`MoeError::MissingTensor`] or
    /// [`MoeError::TensorShape`] otherwise), reading only the header.
    pub fn check_shape(&self, key: &str, expected: &[usize]) -> Result<()> {
        self.file_of(key)?.check_shape(key, expected)
    }

    /// Read `key`, which must have shape `expected`, converted to `W`, into `out`.
    pub fn read_into<W: Element>(
        &self,
        key: &str,
        expected: &[usize],
        out: &mut [W],
    ) -> Result<()> {
        self.file_of(key)?.read_into(key, expected, out)
    }

    /// Read `key`, which must have shape `expected`, converted to `W`.
    pub fn read<W: Element>(&self, key: &str, expected: &[usize]) -> Result<Vec<W>> {
        self.file_of(key)?.read(key, expected)
    }

    /// Copy the stored bytes of `key` (shape `expected`, stored type `stored`) into `out`
    /// ([`SafetensorsFile::read_codes_into`]).
    pub fn read_codes_into(
        &self,
        key: &str,
        expected: &[usize],
        stored: &str,
        out: &mut [u8],
    ) -> Result<()> {
        self.file_of(key)?
            .read_codes_into(key, expected, stored, out)
    }

    /// Read `key` in its stored dtype and shape.
    pub fn tensor(&self, key: &str) -> Result<HostTensor> {
        self.file_of(key)?.tensor(key)
    }
}

/// Parse an index: `{"weight_map": {key: file, ...}, ...}`, with every file inside `dir`.
fn parse_index(
    text: &str,
    index: &Path,
    dir: &Path,
) -> Result<(HashMap<String, usize>, Vec<Shard>)> {
    let malformed = |message: String| MoeError::MalformedFile {
        path: index.to_path_buf(),
        message,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("it has no `weight_map` object".into()))?;
    let mut weight_map = HashMap::with_capacity(map.len());
    let mut shards: Vec<Shard> = Vec::new();
    let mut shard_no: HashMap<&str, usize> = HashMap::new();
    for (key, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| malformed(format!("weight_map[`{key}`] is not a file name: {file}")))?;
        let n = match shard_no.get(file) {
            Some(&n) => n,
            None => {
                let rel = Path::new(file);
                let inside =
                    !file.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
                if !inside {
                    return Err(malformed(format!(
                        "weight_map[`{key}`] names `{file}`, which is not a file inside the model directory"
                    )));
                }
                shards.push(Shard {
                    path: dir.join(rel),
                    file: Mutex::new(None),
                });
                shard_no.insert(file, shards.len() - 1);
                shards.len() - 1
            }
        };
        weight_map.insert(key.clone(), n);
    }
    Ok((weight_map, shards))
}
