//! SRTP allocates nothing per packet: once a leg's keys are set up, protecting and unprotecting
//! many RTP and RTCP packets of every profile (and refusing bad ones) makes no heap allocation.
//!
//! Two counters watch the measuring thread: a counting global allocator (as in `alloc.rs`) sees
//! Rust's allocations, and `malloc`, `calloc` and `realloc`, defined in this test binary, see
//! every C allocation too, aws-lc's included (the executable's definitions take precedence over
//! libc's, and forward to glibc's `__libc_*` entry points).
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;

use relay::packet::rtp::Ssrc;
use relay::srtp::{Egress, Error, Ingress, Keys, MasterKey, Profile};

thread_local! {
    /// Set while this thread runs a measured loop. Counters are per thread, so tests running in
    /// parallel do not count each other.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static RUST_ALLOCS: Cell<u64> = const { Cell::new(0) };
    static C_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn armed() -> bool {
    ARMED.try_with(Cell::get).unwrap_or(false)
}

fn count(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    if armed() {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
    }
}

/// Counts allocations of the armed thread; forwards everything to the system allocator.
struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&RUST_ALLOCS);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(&RUST_ALLOCS);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&RUST_ALLOCS);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

unsafe extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
}

/// Interposes libc's `malloc` for this test binary.
///
/// # Safety
/// As `malloc(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    count(&C_ALLOCS);
    // SAFETY: glibc's own malloc, with the caller's arguments.
    unsafe { __libc_malloc(size) }
}

/// Interposes libc's `calloc` for this test binary.
///
/// # Safety
/// As `calloc(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    count(&C_ALLOCS);
    // SAFETY: glibc's own calloc, with the caller's arguments.
    unsafe { __libc_calloc(n, size) }
}

/// Interposes libc's `realloc` for this test binary.
///
/// # Safety
/// As `realloc(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    count(&C_ALLOCS);
    // SAFETY: glibc's own realloc, with the caller's arguments.
    unsafe { __libc_realloc(ptr, size) }
}

/// Packets per profile and size in the measured window.
const PACKETS: u16 = 5_000;

/// Runs `f` with the counters armed; returns (Rust, C) allocations it made.
fn measure(f: impl FnOnce()) -> (u64, u64) {
    let (r, c) = (RUST_ALLOCS.with(Cell::get), C_ALLOCS.with(Cell::get));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    (
        RUST_ALLOCS.with(Cell::get) - r,
        C_ALLOCS.with(Cell::get) - c,
    )
}

fn master(profile: Profile) -> MasterKey {
    let key: Vec<u8> = (0..profile.key_len() as u8).collect();
    let salt: Vec<u8> = (0..profile.salt_len() as u8).map(|b| b ^ 0xa5).collect();
    MasterKey::new(profile, &key, &salt).unwrap()
}

/// A clear RTP packet of `len` bytes with a one-word extension.
fn rtp(len: usize) -> Vec<u8> {
    let mut p = vec![
        0x90, 111, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44, 0xbe, 0xde, 0, 1,
    ];
    p.extend_from_slice(&[0x10, 0xaa, 0, 0]);
    p.resize(len, 0x5c);
    p
}

#[test]
fn the_counters_see_rust_and_c_allocations() {
    let (rust, _) = measure(|| drop(std::hint::black_box(vec![0u8; 64])));
    assert!(rust > 0, "the global allocator counter saw nothing");
    // Expanding keys allocates inside aws-lc (its AEAD and cipher contexts).
    let (_, c) = measure(|| drop(Keys::new(&master(Profile::AeadAes128Gcm)).unwrap()));
    assert!(c > 0, "the malloc interposer saw no aws-lc allocation");
}

#[test]
fn protect_and_unprotect_allocate_nothing() {
    for profile in Profile::ALL {
        let m = master(profile);
        let mut egress = Egress::new(Keys::new(&m).unwrap());
        let sibling = egress.sibling();
        let mut ingress = Ingress::new(Keys::new(&m).unwrap());
        let mut out = vec![0u8; 1500];
        let mut spare = vec![0u8; 1500];
        let rr = {
            let mut p = vec![0x81, 201, 0, 7, 0x11, 0x22, 0x33, 0x44];
            p.resize(32, 0);
            p
        };
        // One sequence for the SSRC across both sizes: restarting it would be index reuse.
        let mut seq = 0u16;
        for len in [200usize, 1200] {
            let mut clear = rtp(len);
            let step = |clear: &mut Vec<u8>, seq: &mut u16| {
                clear[2..4].copy_from_slice(&seq.to_be_bytes());
                *seq = seq.wrapping_add(1);
            };
            // Warm-up, outside the measured window: the first packet of the SSRC, and the first
            // failed authentication on this thread (aws-lc allocates its per-thread error queue
            // the first time an operation fails on a thread, once).
            step(&mut clear, &mut seq);
            let n = egress.protect_rtp(&clear, &mut out).unwrap();
            out[n - 1] ^= 1;
            assert_eq!(ingress.unprotect_rtp(&mut out[..n]), Err(Error::AuthFailed));
            let n = egress.protect_rtp(&clear, &mut out).unwrap_err();
            assert_eq!(n, Error::IndexReuse);

            let mut refused = 0u32;
            let (rust, c) = measure(|| {
                for _ in 0..PACKETS {
                    // Copy into a slot, then open in place.
                    step(&mut clear, &mut seq);
                    let n = egress.protect_rtp(&clear, &mut out).unwrap();
                    assert_eq!(ingress.unprotect_rtp(&mut out[..n]), Ok(clear.len()));
                    // The replay, and a forgery, are refused.
                    let n = egress.protect_rtp(&clear, &mut spare).unwrap_err();
                    assert_eq!(n, Error::IndexReuse);
                    // In place.
                    step(&mut clear, &mut seq);
                    spare[..clear.len()].copy_from_slice(&clear);
                    let n = egress
                        .protect_rtp_in_place(&mut spare, clear.len())
                        .unwrap();
                    out[..n].copy_from_slice(&spare[..n]);
                    spare[20] ^= 1;
                    if ingress.unprotect_rtp(&mut spare[..n]) == Err(Error::AuthFailed) {
                        refused += 1;
                    }
                    assert_eq!(ingress.unprotect_rtp(&mut out[..n]), Ok(clear.len()));
                    assert_eq!(ingress.unprotect_rtp(&mut out[..n]), Err(Error::Replayed));
                    // SRTCP from both siblings.
                    let e = if seq.is_multiple_of(2) {
                        &egress
                    } else {
                        &sibling
                    };
                    let n = e.protect_rtcp(&rr, &mut out).unwrap();
                    assert_eq!(ingress.unprotect_rtcp(&mut out[..n]), Ok(rr.len()));
                }
            });
            assert_eq!(refused, u32::from(PACKETS));
            assert!(
                ingress
                    .rtp_state(Ssrc(0x1122_3344))
                    .unwrap()
                    .highest()
                    .unwrap()
                    > 0
            );
            eprintln!(
                "{profile} {len} B: {} packets, {rust} Rust and {c} C allocations",
                2 * PACKETS
            );
            assert_eq!((rust, c), (0, 0), "{profile} {len} B allocated per packet");
        }
    }
}
