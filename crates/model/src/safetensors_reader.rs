//! Safetensors files: the header of every shard is parsed and checked at open (names, types,
//! shapes, byte ranges inside the file), and a tensor's bytes are touched only when it is asked
//! for. A tensor is the file's own bytes, mapped (see `mapped`: no copy, no zeroing, pages
//! shared with the page cache and other processes), where the binary allows it; otherwise it is
//! read with positioned reads into a fresh buffer.
//!
//! Why not candle's `MmapedSafetensors`: it copies every tensor out of the map into a new
//! buffer while the mapped pages stay resident, so a 12 GB checkpoint peaked near twice its
//! size. What this module does not do: write safetensors, or convert types (see `weights`).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::mapped::{self, Mapping};

/// The largest header we accept (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// Where one tensor's bytes are.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    shard: usize,
    /// Stored type.
    pub dtype: DType,
    /// Stored shape.
    pub shape: Vec<usize>,
    /// Absolute byte offset in the file.
    offset: u64,
}

struct Shard {
    path: PathBuf,
    file: File,
    /// The whole file mapped, where the binary allows it (see `mapped`).
    mapping: Option<Arc<Mapping>>,
}

/// The tensors of one or more safetensors files (shards of one checkpoint).
pub(crate) struct SafetensorsShards {
    shards: Vec<Shard>,
    entries: HashMap<String, Entry>,
}

fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

impl SafetensorsShards {
    /// Reads and checks the header of every file; no tensor data is read.
    pub fn open(files: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(files.len());
        let mut entries: HashMap<String, Entry> = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            let bad = |message: String| ModelError::BadFile {
                path: path.clone(),
                message,
            };
            let file = File::open(path).map_err(|e| bad(e.to_string()))?;
            let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
            let mut n = [0u8; 8];
            file.read_exact_at(&mut n, 0)
                .map_err(|_| bad(format!("{len} bytes: too short for a safetensors header")))?;
            let n = u64::from_le_bytes(n);
            if n > MAX_HEADER || 8 + n > len {
                return Err(bad(format!(
                    "header length {n} does not fit the file ({len} bytes): not a safetensors \
                     file, or truncated"
                )));
            }
            let mut header = vec![0u8; n as usize];
            file.read_exact_at(&mut header, 8)
                .map_err(|e| bad(e.to_string()))?;
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
                .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
            let data_start = 8 + n;
            let data_len = len - data_start;
            for (name, info) in v {
                if name == "__metadata__" {
                    continue;
                }
                let field = |f: &str| {
                    info.get(f)
                        .ok_or_else(|| bad(format!("tensor {name}: no `{f}` in the header")))
                };
                let type_name = field("dtype")?.as_str().unwrap_or_default().to_string();
                let dtype = dtype_of(&type_name).ok_or_else(|| {
                    bad(format!(
                        "tensor {name}: stored type {type_name:?} is not supported (F64, F32, \
                         F16, BF16, I64, U32, U8)"
                    ))
                })?;
                let shape: Vec<usize> = serde_json::from_value(field("shape")?.clone())
                    .map_err(|e| bad(format!("tensor {name}: bad `shape`: {e}")))?;
                let [start, end]: [u64; 2] = serde_json::from_value(field("data_offsets")?.clone())
                    .map_err(|e| bad(format!("tensor {name}: bad `data_offsets`: {e}")))?;
                let want = shape
                    .iter()
                    .try_fold(dtype.size_in_bytes() as u64, |a, &d| {
                        a.checked_mul(d as u64)
                    });
                if start > end || end > data_len || Some(end - start) != want {
                    return Err(bad(format!(
                        "tensor {name}: bytes {start}..{end} do not hold a {type_name} tensor of \
                         shape {shape:?} inside the file's {data_len} data bytes (truncated or \
                         corrupt)"
                    )));
                }
                let entry = Entry {
                    shard: i,
                    dtype,
                    shape,
                    offset: data_start + start,
                };
                if let Some(prev) = entries.insert(name.clone(), entry) {
                    return Err(bad(format!(
                        "tensor {name} is also in {}",
                        files[prev.shard].display()
                    )));
                }
            }
            // A failed map (address space, a file system that cannot map) falls back to reads.
            let mapping = if mapped::available() {
                Mapping::new(&file, len as usize).ok()
            } else {
                None
            };
            shards.push(Shard {
                path: path.clone(),
                file,
                mapping,
            });
        }
        Ok(Self { shards, entries })
    }

    /// Every tensor with where it is.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// The tensor `name` on the CPU in its stored type.
    pub fn load(&self, name: &str) -> Result<Tensor> {
        let e = self.entries.get(name).ok_or_else(|| {
            ModelError::BadRequest(format!("no tensor {name} in the safetensors files"))
        })?;
        let shard = &self.shards[e.shard];
        let count: usize = e.shape.iter().product();
        let t = match e.dtype {
            DType::F64 => read::<f64>(shard, e, count)?,
            DType::F32 => read::<f32>(shard, e, count)?,
            DType::F16 => read::<half::f16>(shard, e, count)?,
            DType::BF16 => read::<half::bf16>(shard, e, count)?,
            DType::I64 => read::<i64>(shard, e, count)?,
            DType::U32 => read::<u32>(shard, e, count)?,
            DType::U8 => read::<u8>(shard, e, count)?,
            other => unreachable!("{other:?} is refused at open"),
        };
        Ok(t)
    }
}

/// Reads `count` little-endian values of `T` at the entry's offset into a new tensor.
///
/// Large tensors are read in 16 MB pieces by several threads, into memory asked for as huge
/// pages: most of a load is the kernel faulting in and filling fresh pages, 4 KB at a time
/// otherwise, on one core.
fn read<T: candle_core::WithDType>(shard: &Shard, e: &Entry, count: usize) -> Result<Tensor> {
    use rayon::prelude::*;
    if let Some(v) = shard
        .mapping
        .as_ref()
        .and_then(|m| m.vec::<T>(e.offset as usize, count))
    {
        return Ok(Tensor::from_vec(v, e.shape.as_slice(), &Device::Cpu)?);
    }
    const PIECE: usize = 16 << 20;
    let mut v: Vec<T> = Vec::with_capacity(count);
    let len = count * std::mem::size_of::<T>();
    // SAFETY: the spare capacity is `count` values of a plain numeric type (every bit pattern
    // valid); it is exposed as bytes only to be filled by the reads, and the length is set
    // after the reads have filled all of it.
    unsafe {
        let bytes = std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, len);
        if len >= 4 * PIECE {
            advise_huge_pages(bytes);
        }
        bytes
            .par_chunks_mut(PIECE)
            .enumerate()
            .try_for_each(|(i, piece)| {
                shard
                    .file
                    .read_exact_at(piece, e.offset + (i * PIECE) as u64)
            })
            .map_err(|err| ModelError::BadFile {
                path: shard.path.clone(),
                message: format!("reading a tensor's {len} bytes: {err}"),
            })?;
        v.set_len(count);
    }
    Ok(Tensor::from_vec(v, e.shape.as_slice(), &Device::Cpu)?)
}

/// Asks the kernel for transparent huge pages over the 2 MB-aligned interior of `buf` (a hint:
/// where THP is off, nothing changes).
fn advise_huge_pages(buf: &mut [u8]) {
    const HUGE: usize = 2 << 20;
    let start = (buf.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (buf.as_ptr() as usize + buf.len()) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside `buf`, memory this process owns; MADV_HUGEPAGE changes
        // how it is backed, not its contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(target_endian = "big")]
compile_error!("safetensors are little-endian; this reader copies bytes as they are");

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;
    use std::path::Path;

    fn write(path: &Path, tensors: &[(&str, Tensor)]) {
        let m: Map<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&m, path).unwrap();
    }

    #[test]
    fn reads_what_candle_wrote_in_every_stored_type() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let p = tmp.path().join("m.safetensors");
        write(
            &p,
            &[
                ("a", a.clone()),
                ("b", a.to_dtype(DType::BF16).unwrap()),
                ("c", a.to_dtype(DType::F16).unwrap()),
            ],
        );
        let s = SafetensorsShards::open(&[p]).unwrap();
        for (name, dtype) in [("a", DType::F32), ("b", DType::BF16), ("c", DType::F16)] {
            let t = s.load(name).unwrap();
            assert_eq!(t.dtype(), dtype);
            assert_eq!(t.dims(), &[3, 4]);
            let back: Vec<Vec<f32>> = t.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
            assert_eq!(back, a.to_vec2::<f32>().unwrap());
        }
    }

    #[test]
    fn a_truncated_file_names_the_tensor_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.safetensors");
        write(
            &p,
            &[(
                "w",
                Tensor::zeros((64, 64), DType::F32, &Device::Cpu).unwrap(),
            )],
        );
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
        let e = SafetensorsShards::open(std::slice::from_ref(&p))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tensor w") && e.contains("truncated"), "{e}");
        std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk").unwrap();
        let e = SafetensorsShards::open(&[p]).err().unwrap().to_string();
        assert!(e.contains("header length"), "{e}");
    }

    #[test]
    fn a_tensor_in_two_shards_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let z = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let (p1, p2) = (
            tmp.path().join("1.safetensors"),
            tmp.path().join("2.safetensors"),
        );
        write(&p1, &[("w", z.clone())]);
        write(&p2, &[("w", z)]);
        let e = SafetensorsShards::open(&[p1, p2])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tensor w is also in"), "{e}");
    }
}
