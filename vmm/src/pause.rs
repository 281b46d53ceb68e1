// SPDX-License-Identifier: Apache-2.0
//! Pausing and resuming the VM: `stop` and `cont` on the control socket.
//!
//! A pause is asked for, never waited for, so that no API call waits on a vCPU: [`Pause::stop`]
//! raises a flag, pauses the display device and kicks every vCPU thread with a signal. A kicked
//! vCPU leaves `KVM_RUN` with EINTR, sees the flag and parks until [`Pause::resume`]. The
//! signal handler also sets `immediate_exit` in the vCPU's own `kvm_run`, so that a kick that
//! lands between the flag check and the next `KVM_RUN` still makes that call return at once.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;

use devices::qxl::QxlShared;
use kvm_bindings::kvm_run;

thread_local! {
    /// This thread's `kvm_run`, when it is a vCPU thread; for the kick signal's handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU out of `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_signal: libc::c_int) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own kvm_run mapping, set by the vCPU thread and
        // valid for as long as that thread runs; the handler runs on that thread. A volatile
        // byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the kick signal's handler, once per process.
fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only does async-signal-safe work.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            // No SA_RESTART: KVM_RUN must return EINTR.
            if libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) != 0 {
                log::warn!(
                    "cannot install the vCPU kick signal handler: {}; `stop` will take \
                     effect only at each vCPU's next exit",
                    std::io::Error::last_os_error()
                );
            }
        }
    });
}

/// Registers `run` as the calling vCPU thread's `kvm_run`, for the kick signal.
pub fn register_vcpu_thread(run: *mut kvm_run) {
    KVM_RUN.with(|cell| cell.set(run));
}

/// The VM's run state, shared by the control socket and the vCPU threads.
pub struct Pause {
    /// A pause was asked for; read by each vCPU before each `KVM_RUN`.
    requested: AtomicBool,
    /// The VM is being torn down: parked and kicked vCPUs end their threads.
    ending: AtomicBool,
    parked: Mutex<u8>,
    resumed: Condvar,
    /// The vCPU threads, kept joinable so that their ids stay valid for `pthread_kill`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    display: Option<Arc<QxlShared>>,
}

impl Pause {
    /// A running VM, whose display device (if any) pauses with it.
    pub fn new(display: Option<Arc<QxlShared>>) -> Self {
        install_handler();
        Pause {
            requested: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            parked: Mutex::new(0),
            resumed: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            display,
        }
    }

    /// Adds a vCPU thread to kick on `stop`.
    pub fn add_vcpu_thread(&self, thread: JoinHandle<()>) {
        self.lock_threads().push(thread);
    }

    /// Whether a pause was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Asks every vCPU and the display device to pause; returns at once.
    pub fn stop(&self) {
        {
            let _parked = self.lock_parked();
            if self.requested.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        if let Some(display) = &self.display {
            display.pause();
        }
        for thread in self.lock_threads().iter() {
            // SAFETY: the thread is joinable (its handle is held here, never joined), so its
            // id is valid; the signal's handler is installed.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
        }
    }

    /// Lets parked vCPUs and the display device run again.
    pub fn resume(&self) {
        {
            let _parked = self.lock_parked();
            if !self.requested.swap(false, Ordering::AcqRel) {
                return;
            }
            self.resumed.notify_all();
        }
        if let Some(display) = &self.display {
            display.resume();
        }
    }

    /// Called by a vCPU thread that saw [`Pause::is_requested`]: waits for the resume.
    /// Returns false when the VM is ending instead: the thread must end.
    pub fn park(&self) -> bool {
        let mut parked = self.lock_parked();
        *parked += 1;
        while self.requested.load(Ordering::Acquire) && !self.ending.load(Ordering::Acquire) {
            parked = self.resumed.wait(parked).unwrap_or_else(|e| e.into_inner());
        }
        *parked -= 1;
        !self.ending.load(Ordering::Acquire)
    }

    /// Ends every vCPU thread: kicks them out of `KVM_RUN` (or a pause) and joins them. A
    /// vCPU waiting for a synchronous device request ends when that request completes.
    pub fn end_vcpus(&self) {
        {
            let _parked = self.lock_parked();
            self.ending.store(true, Ordering::Release);
            self.requested.store(true, Ordering::Release);
            self.resumed.notify_all();
        }
        let threads = std::mem::take(&mut *self.lock_threads());
        for thread in &threads {
            // SAFETY: as in `stop`: the thread is joinable and not yet joined.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
        }
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// vCPUs parked right now.
    #[cfg(test)]
    fn parked_vcpus(&self) -> u8 {
        *self.lock_parked()
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, u8> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn eventually(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !cond() {
            std::thread::sleep(Duration::from_millis(2));
        }
        cond()
    }

    #[test]
    fn stop_parks_a_thread_that_checks_and_resume_releases_it() {
        let pause = Arc::new(Pause::new(None));
        let done = Arc::new(AtomicBool::new(false));
        let (p, d) = (pause.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                if p.is_requested() {
                    p.park();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        pause.add_vcpu_thread(thread);

        pause.stop();
        pause.stop();
        assert!(eventually(|| pause.parked_vcpus() == 1));
        pause.resume();
        assert!(eventually(|| pause.parked_vcpus() == 0));
        done.store(true, Ordering::SeqCst);
    }

    #[test]
    fn the_kick_sets_immediate_exit_of_the_signalled_thread_only() {
        let pause = Arc::new(Pause::new(None));
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: kvm_run is plain data; a zeroed one stands in for the mapping.
            let mut run: Box<kvm_run> = Box::new(unsafe { std::mem::zeroed() });
            register_vcpu_thread(&mut *run);
            ready_tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            // SAFETY: reads this thread's own struct, written only by its signal handler.
            let kicked = || unsafe { std::ptr::addr_of!(run.immediate_exit).read_volatile() };
            while kicked() == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            f.store(kicked() == 1, Ordering::SeqCst);
            register_vcpu_thread(std::ptr::null_mut());
        });
        pause.add_vcpu_thread(thread);
        ready.recv().unwrap();
        pause.stop();
        assert!(eventually(|| flag.load(Ordering::SeqCst)));
        pause.resume();
    }
}
