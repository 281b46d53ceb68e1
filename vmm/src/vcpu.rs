// SPDX-License-Identifier: Apache-2.0
//! vCPU threads: run the guest and dispatch its port and MMIO exits.
//!
//! The exit path takes no lock besides the one device being accessed, allocates nothing and
//! logs nothing; only a fatal exit, which ends the VM, formats a message.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use devices::bus::Bus;
use devices::ExitRequest;
use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::exit::{VmExit, VmStop};
use crate::pause::{self, Pause};

/// `kvm_run.internal.suberror` for an instruction KVM could not emulate.
const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;

/// The buses a vCPU dispatches exits to.
#[derive(Clone)]
pub struct VcpuBuses {
    /// Port I/O.
    pub io: Arc<Bus>,
    /// MMIO not handled inside KVM.
    pub mmio: Arc<Bus>,
}

/// What to do after one `KVM_RUN`.
enum Step {
    Continue,
    Stop(VmStop),
    InternalError,
}

/// Starts vCPU `id` on a thread named `vcpu{id}`; it parks whenever `pause` asks.
pub fn spawn(
    id: u8,
    mut vcpu: VcpuFd,
    buses: VcpuBuses,
    exit: Arc<VmExit>,
    pause: Arc<Pause>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || {
            pause::register_vcpu_thread(vcpu.get_kvm_run());
            let stop = run_loop(id, &mut vcpu, &buses, &pause);
            pause::register_vcpu_thread(std::ptr::null_mut());
            // None: the VM is being torn down, for a reason already recorded.
            let Some(stop) = stop else { return };
            if let VmStop::VcpuFailed(why) = &stop {
                log::error!("{why}");
            }
            exit.stop(stop);
        })
}

/// Runs the vCPU until the guest or an error stops it, or until the VM is torn down (None).
fn run_loop(id: u8, vcpu: &mut VcpuFd, buses: &VcpuBuses, pause: &Pause) -> Option<VmStop> {
    loop {
        if pause.is_requested() && !pause.park() {
            return None;
        }
        match run_once(vcpu, buses) {
            Step::Continue => {}
            Step::Stop(stop) => return Some(stop),
            Step::InternalError => return Some(internal_error(id, vcpu)),
        }
    }
}

fn run_once(vcpu: &mut VcpuFd, buses: &VcpuBuses) -> Step {
    match vcpu.run() {
        Ok(VcpuExit::IoIn(port, data)) => {
            if !buses.io.read(u64::from(port), data) {
                data.fill(0xff);
            }
        }
        Ok(VcpuExit::IoOut(port, data)) => {
            // Taken first, so that devices can report their exit-to-re-entry time.
            let exited = Instant::now();
            buses.io.write_exit(u64::from(port), data, Some(exited));
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            if !buses.mmio.read(addr, data) {
                data.fill(0xff);
            }
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            buses.mmio.write(addr, data);
        }
        // With the in-kernel local APIC, HLT only exits for a vCPU that KVM parked; it is
        // simply resumed.
        Ok(VcpuExit::Hlt) => {}
        // A triple fault: Linux uses one as its last way to reboot, but it is also how a
        // guest dies of a fault it cannot handle, so it is worth a line.
        Ok(VcpuExit::Shutdown) => {
            log::warn!("the guest triple-faulted; treating it as a reset");
            return Step::Stop(VmStop::Guest(ExitRequest::Reset));
        }
        Ok(VcpuExit::SystemEvent(kind, _)) => return Step::Stop(system_event(kind)),
        Ok(VcpuExit::InternalError) => return Step::InternalError,
        Ok(VcpuExit::FailEntry(reason, cpu)) => {
            let why =
                format!("KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})");
            return Step::Stop(VmStop::VcpuFailed(why));
        }
        Ok(other) => {
            let why = format!("unexpected KVM exit {other:?}");
            return Step::Stop(VmStop::VcpuFailed(why));
        }
        // A kick (see `pause`): the loop looks at the pause flag before going back in.
        Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => vcpu.set_kvm_immediate_exit(0),
        Err(e) => return Step::Stop(VmStop::VcpuFailed(format!("KVM_RUN failed: {e}"))),
    }
    Step::Continue
}

fn system_event(kind: u32) -> VmStop {
    match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => VmStop::Guest(ExitRequest::PowerOff),
        KVM_SYSTEM_EVENT_RESET => VmStop::Guest(ExitRequest::Reset),
        KVM_SYSTEM_EVENT_CRASH => VmStop::VcpuFailed("the guest reported a crash".into()),
        other => VmStop::VcpuFailed(format!("unknown KVM system event {other}")),
    }
}

/// Describes a KVM internal error, naming the usual cause when it is an emulation failure.
fn internal_error(id: u8, vcpu: &mut VcpuFd) -> VmStop {
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active member.
    let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
    let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or_default();

    if suberror != KVM_INTERNAL_ERROR_EMULATION {
        let why = format!("vCPU {id}: KVM internal error {suberror} at RIP {rip:#x}");
        return VmStop::VcpuFailed(why);
    }

    let mut why = format!(
        "vCPU {id}: emulation failure: the host's KVM could not emulate the instruction at \
         RIP {rip:#x}"
    );
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        why.push_str(
            "; this host's /dev/kvm is the PVM backend, which emulates guest kernel mode and \
             cannot boot Linux: run on a host with hardware virtualization (VMX or SVM)",
        );
    }
    VmStop::VcpuFailed(why)
}
