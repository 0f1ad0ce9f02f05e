//! A small WASI preview 1 implementation on the engine-neutral host table.
//!
//! It grants nothing: no files, preopens, arguments, environment or sockets;
//! those calls return the proper errno (`BADF` for descriptors that do not
//! exist, `NOTCAPABLE` for operations stdio lacks the right for). stdout and
//! stderr go to a caller-supplied [`LogSink`] one line at a time
//! ([`StdioLines`]); one `fd_write` takes at most [`MAX_WRITE_BYTES`] (a
//! short write, as WASI allows); stdin reads as empty. Clocks (realtime,
//! monotonic) and `random_get` work. `poll_oneoff` sleeps on clock
//! subscriptions (Go's and TinyGo's `time.Sleep`) at most until the call's
//! deadline ([`crate::Caller::deadline`]), then fails the call with
//! [`HostError::Deadline`]. `proc_exit(code)` unwinds the guest with
//! [`HostError::Exit`], reported as [`crate::TrapReason::Exit`]; `Exit(0)`
//! from `_start` is success (see [`crate::Trap::is_success_exit`]).
//!
//! Every function is registered under both `wasi_snapshot_preview1` and
//! `wasi_unstable`.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Caller, FuncType, HostError, HostFunctions, Val, ValType};

/// The module names this implementation registers.
pub const MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// Which output stream a guest wrote to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasiStream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

/// Receives what the guest writes to stdout / stderr (the plugin's log): one
/// call per line, without its newline (see [`StdioLines`]).
pub type LogSink = Arc<dyn Fn(WasiStream, &[u8]) + Send + Sync>;

/// Most bytes one `fd_write` takes; the guest gets the count in `nwritten`
/// and writes the rest with another call, as after any short write. Bounds
/// what one call copies however its iovecs repeat a region of memory.
pub const MAX_WRITE_BYTES: usize = 64 << 10;

/// Most iovecs one `fd_write` looks at (POSIX `IOV_MAX` on Linux).
pub const MAX_IOVECS: u32 = 1024;

/// Most bytes of an unfinished line kept per stream; past it they are
/// logged as one record, so a guest cannot grow the buffer without bound.
pub const MAX_PENDING_LINE: usize = 64 << 10;

/// Line buffers of one instance's stdout and stderr.
///
/// Guests write a line in pieces (Rust's `memory allocation of N bytes
/// failed` is three `fd_write`s); each complete line becomes one [`LogSink`]
/// record. The engine calls [`StdioLines::flush`] when an outermost guest
/// call returns, and dropping the buffers flushes too, so an unfinished line
/// is logged once the guest is done writing.
#[derive(Default)]
pub struct StdioLines {
    pending: [Vec<u8>; 2],
    sink: Option<LogSink>,
}

impl std::fmt::Debug for StdioLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioLines")
            .field("stdout", &self.pending[0].len())
            .field("stderr", &self.pending[1].len())
            .finish()
    }
}

impl StdioLines {
    /// Adds what the guest wrote to `stream`; every completed line goes to `sink`.
    pub fn write(&mut self, sink: &LogSink, stream: WasiStream, mut bytes: &[u8]) {
        if self.sink.is_none() {
            self.sink = Some(sink.clone());
        }
        let pending = &mut self.pending[stream as usize];
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            if pending.is_empty() {
                sink(stream, &bytes[..nl]);
            } else {
                pending.extend_from_slice(&bytes[..nl]);
                sink(stream, pending);
                pending.clear();
            }
            bytes = &bytes[nl + 1..];
        }
        pending.extend_from_slice(bytes);
        while pending.len() >= MAX_PENDING_LINE {
            sink(stream, &pending[..MAX_PENDING_LINE]);
            pending.drain(..MAX_PENDING_LINE);
        }
    }

    /// Logs the unfinished lines, if any.
    pub fn flush(&mut self) {
        let Some(sink) = &self.sink else { return };
        for (i, stream) in [WasiStream::Stdout, WasiStream::Stderr]
            .into_iter()
            .enumerate()
        {
            if !self.pending[i].is_empty() {
                sink(stream, &self.pending[i]);
                self.pending[i].clear();
            }
        }
    }
}

impl Drop for StdioLines {
    fn drop(&mut self) {
        self.flush();
    }
}

/// WASI errno values used here.
pub mod errno {
    /// Success.
    pub const SUCCESS: i32 = 0;
    /// Bad file descriptor.
    pub const BADF: i32 = 8;
    /// Bad address.
    pub const FAULT: i32 = 21;
    /// Invalid argument.
    pub const INVAL: i32 = 28;
    /// Function not supported.
    pub const NOSYS: i32 = 52;
    /// Not supported.
    pub const NOTSUP: i32 = 58;
    /// Invalid seek.
    pub const SPIPE: i32 = 70;
    /// Capabilities insufficient.
    pub const NOTCAPABLE: i32 = 76;
}

static MONO_BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;
const FILETYPE_CHARACTER_DEVICE: u8 = 2;

fn realtime_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Offset of the monotonic clock, so a guest never reads 0.
const MONO_OFFSET: u64 = 1_000_000_000;

fn monotonic_nanos() -> u64 {
    MONO_BASE.elapsed().as_nanos() as u64 + MONO_OFFSET
}

fn fault(_: HostError) -> i32 {
    errno::FAULT
}

/// Gathers the bytes of an iovec array, at most [`MAX_WRITE_BYTES`] from the
/// first [`MAX_IOVECS`] entries (the caller reports a short write).
fn gather(c: &dyn Caller, iovs: u32, n: u32) -> Result<Vec<u8>, HostError> {
    let mut out = Vec::new();
    for i in 0..n.min(MAX_IOVECS) {
        let left = MAX_WRITE_BYTES - out.len();
        if left == 0 {
            break;
        }
        let base = iovs.checked_add(i.checked_mul(8).ok_or(HostError::msg("iovec overflow"))?);
        let base = base.ok_or(HostError::msg("iovec overflow"))?;
        let ptr = c.read_u32(base)?;
        let len = c.read_u32(
            base.checked_add(4)
                .ok_or(HostError::msg("iovec overflow"))?,
        )?;
        out.extend_from_slice(&c.read(ptr, len.min(left as u32))?);
    }
    Ok(out)
}

fn i(args: &[Val], k: usize) -> i32 {
    args[k].i32().unwrap_or(0)
}

fn u(args: &[Val], k: usize) -> u32 {
    i(args, k) as u32
}

/// Errno for a file operation on `fd`: stdio lacks the right, others do not exist.
fn fd_refused(fd: i32) -> i32 {
    if (0..=2).contains(&fd) {
        errno::NOTCAPABLE
    } else {
        errno::BADF
    }
}

type Body = dyn Fn(&mut dyn Caller, &[Val]) -> Result<i32, HostError> + Send + Sync;

/// Returns the WASI functions, writing stdout/stderr to `sink`.
pub fn functions(sink: LogSink) -> HostFunctions {
    use ValType::{I32, I64};
    let mut defs: Vec<(&'static str, Vec<ValType>, Arc<Body>)> = Vec::new();
    let mut def = |name: &'static str, params: &[ValType], f: Arc<Body>| {
        defs.push((name, params.to_vec(), f))
    };

    // Arguments and environment: none.
    let zero_sizes: Arc<Body> = Arc::new(|c, a| {
        let r = c
            .write_u32(u(a, 0), 0)
            .and_then(|_| c.write_u32(u(a, 1), 0));
        Ok(r.map(|_| errno::SUCCESS).unwrap_or_else(fault))
    });
    let nothing: Arc<Body> = Arc::new(|_, _| Ok(errno::SUCCESS));
    def("args_sizes_get", &[I32, I32], zero_sizes.clone());
    def("environ_sizes_get", &[I32, I32], zero_sizes);
    def("args_get", &[I32, I32], nothing.clone());
    def("environ_get", &[I32, I32], nothing.clone());

    // Clocks.
    def(
        "clock_res_get",
        &[I32, I32],
        Arc::new(|c, a| {
            Ok(match i(a, 0) {
                0 | 1 => c
                    .write_u64(u(a, 1), 1_000)
                    .map(|_| errno::SUCCESS)
                    .unwrap_or_else(fault),
                2 | 3 => errno::NOTSUP,
                _ => errno::INVAL,
            })
        }),
    );
    def(
        "clock_time_get",
        &[I32, I64, I32],
        Arc::new(|c, a| {
            let t = match i(a, 0) {
                0 => realtime_nanos(),
                1 => monotonic_nanos(),
                2 | 3 => return Ok(errno::NOTSUP),
                _ => return Ok(errno::INVAL),
            };
            Ok(c.write_u64(u(a, 2), t)
                .map(|_| errno::SUCCESS)
                .unwrap_or_else(fault))
        }),
    );

    // stdio.
    def(
        "fd_write",
        &[I32, I32, I32, I32],
        Arc::new(move |c, a| {
            let stream = match i(a, 0) {
                1 => WasiStream::Stdout,
                2 => WasiStream::Stderr,
                0 => return Ok(errno::NOTCAPABLE),
                _ => return Ok(errno::BADF),
            };
            let bytes = match gather(c, u(a, 1), u(a, 2)) {
                Ok(b) => b,
                Err(_) => return Ok(errno::FAULT),
            };
            if c.write_u32(u(a, 3), bytes.len() as u32).is_err() {
                return Ok(errno::FAULT);
            }
            if !bytes.is_empty() {
                c.stdio().write(&sink, stream, &bytes);
            }
            Ok(errno::SUCCESS)
        }),
    );
    def(
        "fd_read",
        &[I32, I32, I32, I32],
        Arc::new(|c, a| {
            Ok(match i(a, 0) {
                // stdin is empty: EOF.
                0 => c
                    .write_u32(u(a, 3), 0)
                    .map(|_| errno::SUCCESS)
                    .unwrap_or_else(fault),
                fd => fd_refused(fd),
            })
        }),
    );
    def(
        "fd_close",
        &[I32],
        Arc::new(|_, a| {
            Ok(if (0..=2).contains(&i(a, 0)) {
                errno::SUCCESS
            } else {
                errno::BADF
            })
        }),
    );
    // stdio cannot seek (SPIPE); every other descriptor does not exist (BADF).
    let not_seekable: Arc<Body> = Arc::new(|_, a| {
        Ok(if (0..=2).contains(&i(a, 0)) {
            errno::SPIPE
        } else {
            errno::BADF
        })
    });
    def("fd_seek", &[I32, I64, I32, I32], not_seekable.clone());
    def("fd_tell", &[I32, I32], not_seekable);
    def(
        "fd_fdstat_get",
        &[I32, I32],
        Arc::new(|c, a| {
            let fd = i(a, 0);
            if !(0..=2).contains(&fd) {
                return Ok(errno::BADF);
            }
            let rights = if fd == 0 {
                RIGHT_FD_READ
            } else {
                RIGHT_FD_WRITE
            };
            let mut stat = [0u8; 24];
            stat[0] = FILETYPE_CHARACTER_DEVICE;
            stat[8..16].copy_from_slice(&rights.to_le_bytes());
            Ok(c.write(u(a, 1), &stat)
                .map(|_| errno::SUCCESS)
                .unwrap_or_else(fault))
        }),
    );
    // No preopened directories: every probe says BADF, ending the scan.
    def(
        "fd_prestat_get",
        &[I32, I32],
        Arc::new(|_, _| Ok(errno::BADF)),
    );
    def(
        "fd_prestat_dir_name",
        &[I32, I32, I32],
        Arc::new(|_, _| Ok(errno::BADF)),
    );

    // Process, randomness, scheduling.
    def(
        "random_get",
        &[I32, I32],
        Arc::new(|c, a| {
            let (mut ptr, mut left) = (u(a, 0), u(a, 1));
            let mut buf = [0u8; 4096];
            while left > 0 {
                let n = left.min(buf.len() as u32);
                if getrandom::fill(&mut buf[..n as usize]).is_err() {
                    return Ok(errno::NOSYS);
                }
                if c.write(ptr, &buf[..n as usize]).is_err() {
                    return Ok(errno::FAULT);
                }
                ptr = ptr.wrapping_add(n);
                left -= n;
            }
            Ok(errno::SUCCESS)
        }),
    );
    def("sched_yield", &[], nothing);
    def("poll_oneoff", &[I32, I32, I32, I32], Arc::new(poll_oneoff));
    def("proc_raise", &[I32], Arc::new(|_, _| Ok(errno::NOSYS)));

    // File-descriptor operations that need a capability stdio lacks.
    let fd_ops: [(&'static str, &[ValType]); 15] = [
        ("fd_advise", &[I32, I64, I64, I32]),
        ("fd_allocate", &[I32, I64, I64]),
        ("fd_datasync", &[I32]),
        ("fd_fdstat_set_flags", &[I32, I32]),
        ("fd_fdstat_set_rights", &[I32, I64, I64]),
        ("fd_filestat_get", &[I32, I32]),
        ("fd_filestat_set_size", &[I32, I64]),
        ("fd_filestat_set_times", &[I32, I64, I64, I32]),
        ("fd_pread", &[I32, I32, I32, I64, I32]),
        ("fd_pwrite", &[I32, I32, I32, I64, I32]),
        ("fd_readdir", &[I32, I32, I32, I64, I32]),
        ("fd_renumber", &[I32, I32]),
        ("fd_sync", &[I32]),
        ("sock_accept", &[I32, I32, I32]),
        ("sock_shutdown", &[I32, I32]),
    ];
    for (name, params) in fd_ops {
        def(name, params, Arc::new(|_, a| Ok(fd_refused(i(a, 0)))));
    }
    let sock_io: [(&'static str, &[ValType]); 2] = [
        ("sock_recv", &[I32, I32, I32, I32, I32, I32]),
        ("sock_send", &[I32, I32, I32, I32, I32]),
    ];
    for (name, params) in sock_io {
        def(name, params, Arc::new(|_, a| Ok(fd_refused(i(a, 0)))));
    }
    // Path operations: there is no directory descriptor to resolve them against.
    let path_ops: [(&'static str, &[ValType]); 10] = [
        ("path_create_directory", &[I32, I32, I32]),
        ("path_filestat_get", &[I32, I32, I32, I32, I32]),
        (
            "path_filestat_set_times",
            &[I32, I32, I32, I32, I64, I64, I32],
        ),
        ("path_link", &[I32, I32, I32, I32, I32, I32, I32]),
        ("path_open", &[I32, I32, I32, I32, I32, I64, I64, I32, I32]),
        ("path_readlink", &[I32, I32, I32, I32, I32, I32]),
        ("path_remove_directory", &[I32, I32, I32]),
        ("path_rename", &[I32, I32, I32, I32, I32, I32]),
        ("path_symlink", &[I32, I32, I32, I32, I32]),
        ("path_unlink_file", &[I32, I32, I32]),
    ];
    for (name, params) in path_ops {
        def(name, params, Arc::new(|_, _| Ok(errno::BADF)));
    }

    let mut table = HostFunctions::new();
    for module in MODULES {
        for (name, params, body) in &defs {
            let body = body.clone();
            table.add(
                module,
                name,
                FuncType::new(params.clone(), [I32]),
                move |c, a, r| {
                    r[0] = Val::I32(body(c, a)?);
                    Ok(())
                },
            );
        }
        table.add(module, "proc_exit", FuncType::new([I32], []), |_, a, _| {
            Err(HostError::Exit(i(a, 0)))
        });
    }
    table
}

/// Size of a preview 1 `subscription` in guest memory.
const SUBSCRIPTION_SIZE: u64 = 48;
/// Size of a preview 1 `event` in guest memory.
const EVENT_SIZE: u64 = 32;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
/// Subscriptions `poll_oneoff` decodes between two looks at the deadline, so
/// a huge subscription array cannot keep a host call running past it.
const DEADLINE_STRIDE: u32 = 1024;

/// When one subscription is ready.
enum Ready {
    /// At this instant; `None` is never (a timeout past what `Instant` holds).
    At(Option<Instant>),
    /// At once, with this errno and `nbytes` (stdio, unsupported clocks).
    Now { error: i32, nbytes: u64 },
}

/// One decoded subscription.
struct Subscription {
    userdata: u64,
    tag: u8,
    ready: Ready,
}

/// The time every subscription of one `poll_oneoff` is measured from.
struct PollStart {
    now: Instant,
    realtime: u64,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Decodes subscription `k` of the array at `base` (its bounds were checked);
/// `None` for an unknown tag (the whole call fails with `INVAL`).
fn read_subscription(
    c: &dyn Caller,
    base: u32,
    k: u32,
    start: &PollStart,
) -> Result<Option<Subscription>, HostError> {
    let mut b = [0u8; SUBSCRIPTION_SIZE as usize];
    c.read_into(base + k * SUBSCRIPTION_SIZE as u32, &mut b)?;
    let userdata = le_u64(&b, 0);
    let tag = b[8];
    // The union starts at 16: a clock's id, or an fd_read/fd_write's fd.
    let id = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    let ready = match tag {
        EVENTTYPE_CLOCK => {
            let timeout = le_u64(&b, 24);
            let abstime = u16::from_le_bytes([b[40], b[41]]) & SUBCLOCKFLAGS_ABSTIME != 0;
            let at = |base: Instant, nanos: u64| {
                Ready::At(base.checked_add(Duration::from_nanos(nanos)))
            };
            match (id, abstime) {
                (0 | 1, false) => at(start.now, timeout),
                (0, true) => at(start.now, timeout.saturating_sub(start.realtime)),
                // The guest's monotonic readings are MONO_BASE + elapsed + offset.
                (1, true) => at(*MONO_BASE, timeout.saturating_sub(MONO_OFFSET)),
                // The CPU-time clocks, as clock_time_get answers them.
                (2 | 3, _) => Ready::Now {
                    error: errno::NOTSUP,
                    nbytes: 0,
                },
                _ => Ready::Now {
                    error: errno::INVAL,
                    nbytes: 0,
                },
            }
        }
        // stdin is empty (reads return EOF at once) and stdout/stderr take
        // every write, so both are ready now; `nbytes` 1 as wasmtime reports.
        EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => {
            let ok = if tag == EVENTTYPE_FD_READ {
                id == 0
            } else {
                id == 1 || id == 2
            };
            Ready::Now {
                error: if ok { errno::SUCCESS } else { errno::BADF },
                nbytes: ok as u64,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Subscription {
        userdata,
        tag,
        ready,
    }))
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Blocks the calling thread until `t`. Host functions are synchronous, so
/// this holds the worker thread that runs the guest call for as long as the
/// guest sleeps (at most its call deadline); a later redesign moves guest
/// calls off the async workers.
fn sleep_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        std::thread::sleep(t - now);
    }
}

/// Subscription `k`, or how `poll_oneoff` ends instead: the deadline passed (checked every
/// [`DEADLINE_STRIDE`] subscriptions, so a huge array cannot outlive it), an unknown tag
/// (`INVAL`) or memory out of range (`FAULT`).
fn subscription_at(
    c: &dyn Caller,
    subs: u32,
    k: u32,
    start: &PollStart,
    deadline: Option<Instant>,
) -> Result<Subscription, Result<i32, HostError>> {
    if k % DEADLINE_STRIDE == DEADLINE_STRIDE - 1 && past(deadline) {
        return Err(Err(HostError::Deadline));
    }
    match read_subscription(c, subs, k, start) {
        Ok(Some(sub)) => Ok(sub),
        Ok(None) => Err(Ok(errno::INVAL)),
        Err(_) => Err(Ok(errno::FAULT)),
    }
}

/// `poll_oneoff(in, out, nsubscriptions, nevents) -> errno`, WASI preview 1.
///
/// Clock subscriptions (realtime and monotonic, relative or absolute) wait;
/// `fd_read` on stdin and `fd_write` on stdout/stderr are ready at once,
/// other descriptors are ready at once with `BADF`, the CPU-time clocks with
/// `NOTSUP` and unknown clocks with `INVAL` (per-event errors, as
/// wasi-common reported them; wasmtime-wasi's preview 1 fails the whole call
/// with that errno instead, which leaves the guest no other event). With nothing ready at once, the call sleeps
/// until the earliest clock, then reports every subscription that is ready
/// (`nevents` counts only those). A wait that would end past the guest
/// call's deadline ([`Caller::deadline`]) sleeps until the deadline and
/// fails with [`HostError::Deadline`], so a guest sleeping too long stops as
/// a runaway loop would. `nsubscriptions` 0 or an unknown tag: `INVAL`;
/// arrays outside memory: `FAULT`.
fn poll_oneoff(c: &mut dyn Caller, a: &[Val]) -> Result<i32, HostError> {
    let (subs, events, n, nevents) = (u(a, 0), u(a, 1), u(a, 2), u(a, 3));
    if n == 0 {
        return Ok(errno::INVAL);
    }
    let size = c.memory_size();
    if subs as u64 + n as u64 * SUBSCRIPTION_SIZE > size
        || events as u64 + n as u64 * EVENT_SIZE > size
        || nevents as u64 + 4 > size
    {
        return Ok(errno::FAULT);
    }
    let deadline = c.deadline();
    let start = PollStart {
        now: Instant::now(),
        realtime: realtime_nanos(),
    };

    // Pass 1: the earliest wake-up, unless something is ready at once. The
    // array is read twice rather than copied, so its size costs no host memory.
    let mut earliest: Option<Instant> = None;
    let mut at_once = false;
    for k in 0..n {
        let sub = match subscription_at(c, subs, k, &start, deadline) {
            Ok(sub) => sub,
            Err(stop) => return stop,
        };
        match sub.ready {
            Ready::Now { .. } => at_once = true,
            Ready::At(Some(t)) if t <= start.now => at_once = true,
            Ready::At(Some(t)) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
            Ready::At(None) => {}
        }
    }
    if !at_once {
        match (earliest, deadline) {
            (Some(t), Some(d)) if t > d => {
                sleep_until(d);
                return Err(HostError::Deadline);
            }
            (Some(t), _) => sleep_until(t),
            (None, Some(d)) => {
                sleep_until(d);
                return Err(HostError::Deadline);
            }
            // Never ready and no deadline to end the wait (outside a guest
            // call): refused rather than blocking the thread for good.
            (None, None) => return Ok(errno::INVAL),
        }
    }

    // Pass 2: one event per ready subscription, in subscription order.
    let now = Instant::now();
    let mut count = 0u32;
    for k in 0..n {
        let sub = match subscription_at(c, subs, k, &start, deadline) {
            Ok(sub) => sub,
            Err(stop) => return stop,
        };
        let (error, nbytes) = match sub.ready {
            Ready::Now { error, nbytes } => (error, nbytes),
            Ready::At(Some(t)) if t <= now => (errno::SUCCESS, 0),
            Ready::At(_) => continue,
        };
        let mut e = [0u8; EVENT_SIZE as usize];
        e[0..8].copy_from_slice(&sub.userdata.to_le_bytes());
        e[8..10].copy_from_slice(&(error as u16).to_le_bytes());
        e[10] = sub.tag;
        e[16..24].copy_from_slice(&nbytes.to_le_bytes());
        // flags (u16 at 24) stay 0: no hangup is reported.
        if c.write(events + count * EVENT_SIZE as u32, &e).is_err() {
            return Ok(errno::FAULT);
        }
        count += 1;
    }
    Ok(c.write_u32(nevents, count)
        .map(|_| errno::SUCCESS)
        .unwrap_or_else(fault))
}
