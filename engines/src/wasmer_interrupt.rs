//! Keeps wasmer's deadline signal from unwinding native code.
//!
//! wasmer 7.4 stops a guest by sending SIGUSR1 to the thread running it; its
//! handler then unwinds the guest stack wherever the thread is on it. Not
//! only guest code runs there: wasmer's own Rust code does too (around every
//! host call it borrows a thread-local `RefCell` and takes a `DashMap` shard
//! lock of its interrupt registry), and a signal landing there unwinds it
//! with the borrow or the lock still held. The next call on that thread then
//! panics with "RefCell already borrowed" inside a destructor (an abort), or
//! every thread waits forever on the shard lock. Both were seen in the
//! deadline tests under load.
//!
//! So this module puts a filter in front of wasmer's SIGUSR1 handler: when
//! the interrupted instruction is in native code (any executable segment of
//! the program or of a shared library loaded at start-up), wasmer's handler
//! runs on a copy of the signal context whose stack pointer is outside every
//! guest stack. It then consumes the request as usual (resets its per-thread
//! target, keeps the store marked interrupted) but does not unwind; the
//! guest is stopped at its next host-call return (wasmer checks the mark
//! there) or by the watchdog's next signal. Guest code is JIT-compiled into
//! anonymous memory, never into those segments, so a signal landing there
//! still unwinds at once.
//!
//! Linux on x86-64 and aarch64 only (where the context layout is known);
//! elsewhere wasmer's handler is left alone.

/// Installs the filter once, after wasmer's own handlers; call before any
/// interrupt can be sent.
pub(crate) fn install() {
    imp::install();
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod imp {
    use std::ffi::{c_int, c_void};
    use std::sync::{Once, OnceLock};

    /// wasmer's SIGUSR1 disposition, called by the filter.
    struct Prev(libc::sigaction);
    // SAFETY: plain data (a handler address, flags and a signal mask), only
    // read after it is set.
    unsafe impl Sync for Prev {}
    unsafe impl Send for Prev {}

    static PREV: OnceLock<Prev> = OnceLock::new();
    /// Executable segments of the loaded ELF objects: native code.
    static NATIVE: OnceLock<Vec<(usize, usize)>> = OnceLock::new();

    pub(super) fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // wasmer installs its handlers here (once per process).
            wasmer::sys::vm::init_traps();
            let _ = NATIVE.set(native_code());
            // SAFETY: `sigaction` with valid pointers; the previous disposition
            // is saved before the filter is installed, so the filter always
            // finds it.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGUSR1, std::ptr::null(), &mut old) != 0
                    || old.sa_flags & libc::SA_SIGINFO == 0
                {
                    // Not wasmer's handler: leave things as they are.
                    return;
                }
                let _ = PREV.set(Prev(old));
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = filter as *const () as usize;
                new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut new.sa_mask);
                libc::sigaction(libc::SIGUSR1, &new, std::ptr::null_mut());
            }
        });
    }

    fn native_code() -> Vec<(usize, usize)> {
        unsafe extern "C" fn each(
            info: *mut libc::dl_phdr_info,
            _size: usize,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `dl_iterate_phdr` passes a valid `info` whose
            // `dlpi_phdr` has `dlpi_phnum` entries, and our `data`.
            unsafe {
                let out = &mut *(data as *mut Vec<(usize, usize)>);
                let info = &*info;
                for i in 0..info.dlpi_phnum as usize {
                    let ph = &*info.dlpi_phdr.add(i);
                    if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                        let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
                        out.push((start, start + ph.p_memsz as usize));
                    }
                }
            }
            0
        }
        let mut out: Vec<(usize, usize)> = Vec::new();
        // SAFETY: the callback only reads what it is given and writes `out`.
        unsafe { libc::dl_iterate_phdr(Some(each), &mut out as *mut _ as *mut c_void) };
        out
    }

    fn is_native(pc: usize) -> bool {
        NATIVE
            .get()
            .is_some_and(|r| r.iter().any(|&(s, e)| (s..e).contains(&pc)))
    }

    #[cfg(target_arch = "x86_64")]
    fn pc_sp(uc: &mut libc::ucontext_t) -> (usize, &mut i64) {
        let g = &mut uc.uc_mcontext.gregs;
        let pc = g[libc::REG_RIP as usize] as usize;
        (pc, &mut g[libc::REG_RSP as usize])
    }

    #[cfg(target_arch = "aarch64")]
    fn pc_sp(uc: &mut libc::ucontext_t) -> (usize, &mut u64) {
        let m = &mut uc.uc_mcontext;
        (m.pc as usize, &mut m.sp)
    }

    /// Async-signal-safe: reads two `OnceLock`s set before installation,
    /// copies the context on the signal stack, calls wasmer's handler.
    unsafe extern "C" fn filter(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
        let Some(prev) = PREV.get() else { return };
        // SAFETY: `install` saved wasmer's handler, an `SA_SIGINFO` one.
        let wasmer: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(prev.0.sa_sigaction) };
        // SAFETY: the kernel passes a valid `ucontext_t` to an `SA_SIGINFO`
        // handler; the copy is a plain struct read.
        let mut copy = unsafe { std::ptr::read(ctx as *const libc::ucontext_t) };
        let (pc, sp) = pc_sp(&mut copy);
        if is_native(pc) {
            // Outside every guest stack: wasmer consumes the request without
            // unwinding. The real context is left as it is.
            *sp = 0;
            wasmer(sig, info, &mut copy as *mut libc::ucontext_t as *mut c_void);
        } else {
            wasmer(sig, info, ctx);
        }
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod imp {
    pub(super) fn install() {}
}
