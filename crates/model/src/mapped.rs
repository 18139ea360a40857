//! Weights that stay in the page cache: a CPU tensor whose buffer is the tensor's bytes in its
//! safetensors file, mapped copy-on-write, so a model stored in its run dtype is neither copied
//! nor zeroed at load and every process that loads it shares the same pages.
//!
//! candle's CPU tensors own a `Vec`, which is freed through the global allocator. A `Vec` over
//! mapped memory is therefore only sound when the global allocator knows such buffers: a binary
//! opts in by installing [`MappedAwareAlloc`] (helixlab's CLI does, around mimalloc), which
//! passes every other pointer to the allocator it wraps and, for a buffer inside a mapping,
//! drops the buffer's hold on the mapping instead (unmapped when the last one goes). Without
//! it (a library user's own binary, this crate's unit tests) weights are read into ordinary
//! buffers. `HELIXLAB_NO_MMAP=1` turns mapping off in any binary.
//!
//! The mapping is private and writable, so a write to a weight (candle does not write to its
//! inputs, but nothing here depends on that) copies the page instead of changing the file.
//! What this module does not do: map files on other platforms than Unix, or map tensors whose
//! offset in the file is not aligned to their element type (those are read).

use std::alloc::{GlobalAlloc, Layout};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Set on the first allocation through [`MappedAwareAlloc`]: the wrapper is the global
/// allocator of this process.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Cleared by [`set_enabled`] (tests) or `HELIXLAB_NO_MMAP`.
static DISABLED: AtomicBool = AtomicBool::new(false);
/// Bounds of every live mapping, so that ordinary frees skip the lock.
static LOW: AtomicUsize = AtomicUsize::new(usize::MAX);
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// Live mappings: (start, length, holds), holds 0 for a free slot. A fixed table, because the
/// allocator takes this lock: nothing done under it may allocate.
const SLOTS: usize = 1024;
static REGIONS: Mutex<[(usize, usize, usize); SLOTS]> = Mutex::new([(0, 0, 0); SLOTS]);
/// Slots ever used (a high-water mark): scans stop there, since frees inside the mapped
/// address range (other allocations can lie between mappings) take this path.
static USED: AtomicUsize = AtomicUsize::new(0);

fn used() -> usize {
    USED.load(Ordering::Acquire)
}

/// A global allocator that also frees buffers made over file mappings by this module; every
/// other call goes to `A`.
///
/// ```ignore
/// #[global_allocator]
/// static GLOBAL: helixlab_model::mapped::MappedAwareAlloc<mimalloc::MiMalloc> =
///     helixlab_model::mapped::MappedAwareAlloc(mimalloc::MiMalloc);
/// ```
pub struct MappedAwareAlloc<A>(pub A);

fn in_mapping(p: usize) -> bool {
    p >= LOW.load(Ordering::Acquire) && p < HIGH.load(Ordering::Acquire) && {
        let regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
        regions[..used()]
            .iter()
            .any(|&(s, l, n)| n > 0 && p >= s && p < s + l)
    }
}

/// Drops one hold on the mapping that contains `p`; unmaps it with the last.
fn release(p: usize) {
    let mut regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = regions[..used()]
        .iter_mut()
        .find(|&&mut (s, l, n)| n > 0 && p >= s && p < s + l)
    {
        r.2 -= 1;
        if r.2 == 0 {
            // SAFETY: (r.0, r.1) is a mapping this module made, and no buffer in it is left.
            unsafe { libc::munmap(r.0 as *mut libc::c_void, r.1) };
        }
    }
}

// SAFETY: allocation is delegated to `A`; only pointers inside this module's mappings, which
// `A` never returned, are handled here.
unsafe impl<A: GlobalAlloc> GlobalAlloc for MappedAwareAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        self.0.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.0.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_mapping(ptr as usize) {
            release(ptr as usize);
        } else {
            self.0.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_mapping(ptr as usize) {
            return self.0.realloc(ptr, layout, new_size);
        }
        let new = self
            .0
            .alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            release(ptr as usize);
        }
        new
    }
}

/// Whether weights can be mapped in this process.
pub fn available() -> bool {
    INSTALLED.load(Ordering::Relaxed)
        && !DISABLED.load(Ordering::Relaxed)
        && std::env::var_os("HELIXLAB_NO_MMAP").is_none()
}

/// Turns mapping on or off for later loads in this process (it is on wherever
/// [`MappedAwareAlloc`] is the global allocator).
pub fn set_enabled(on: bool) {
    DISABLED.store(!on, Ordering::Relaxed);
}

/// One file mapped whole; buffers made from it hold it until they are freed.
pub(crate) struct Mapping {
    start: usize,
    len: usize,
}

impl Mapping {
    /// Maps `file` (`len` bytes) private and copy-on-write.
    pub fn new(file: &File, len: usize) -> std::io::Result<Arc<Self>> {
        // SAFETY: a fresh private mapping of a file we hold open; like every user of mapped
        // files we assume nobody truncates the checkpoint while it is in use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = p as usize;
        {
            let mut regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
            match regions.iter().position(|r| r.2 == 0) {
                Some(i) => {
                    regions[i] = (start, len, 1);
                    USED.fetch_max(i + 1, Ordering::AcqRel);
                }
                None => {
                    drop(regions);
                    // SAFETY: the mapping just made, not yet shared.
                    unsafe { libc::munmap(p, len) };
                    return Err(std::io::Error::other("too many mapped weight files"));
                }
            }
        }
        LOW.fetch_min(start, Ordering::AcqRel);
        HIGH.fetch_max(start + len, Ordering::AcqRel);
        Ok(Arc::new(Self { start, len }))
    }

    /// A `Vec` over `count` values of `T` at byte `offset`, or `None` if they are not aligned
    /// for `T` or do not lie inside the file.
    pub fn vec<T: Copy>(&self, offset: usize, count: usize) -> Option<Vec<T>> {
        let bytes = count.checked_mul(std::mem::size_of::<T>())?;
        let p = self.start.checked_add(offset)?;
        if count == 0 || p % std::mem::align_of::<T>() != 0 || offset + bytes > self.len {
            return None;
        }
        let mut regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
        let r = regions.iter_mut().find(|r| r.2 > 0 && r.0 == self.start)?;
        r.2 += 1;
        // SAFETY: the range is inside a live mapping of initialised file bytes, aligned for
        // `T` (plain numbers: any bit pattern is valid); MappedAwareAlloc, the global
        // allocator whenever this is called (see `available`), frees it by releasing the hold
        // taken just above.
        Some(unsafe { Vec::from_raw_parts(p as *mut T, count, count) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        release(self.start);
    }
}
