// SPDX-License-Identifier: Apache-2.0
//! Builds the VM from a [`VmConfig`] and runs it until the guest powers off or resets.
//!
//! Every check that can fail on user input (kernel format, command line, vCPU count, memory
//! size, /dev/kvm access) runs before any vCPU starts.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::acpi::{AcpiPmDevice, PM_PORTS_LEN, SLEEP_CONTROL_PORT};
use devices::bus::{Bus, BusDevice, BusError};
use devices::legacy::SERIAL_OUTPUT_CAPACITY;
use devices::legacy::{InputHandle, SerialDevice, SerialInputEvents, SerialOutput, I8042};
use devices::pci::{PciRoot, ECAM_SIZE_BUS0, PCI_CONFIG_IO_LEN, PCI_CONFIG_IO_PORT};
use devices::EventFdInterrupt;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::KVM_PIT_SPEAKER_DUMMY;
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VmFd};
use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::{ApiContext, ApiServer};
use crate::arch::acpi::{self, AcpiError};
use crate::arch::boot::{self, BootError, BootInfo};
use crate::arch::kernel::{load_initramfs, KernelError, KernelImage};
use crate::arch::regs::{self, RegsError};
use crate::arch::{cpuid, layout};
use crate::config::{DisplayConfig, SerialConfig, VmConfig};
use crate::display;
use crate::exit::{VmExit, VmStop};
use crate::irq::IrqRouting;
use crate::pause::Pause;
use crate::serial_io::{spawn_output_writer, ExitWatcher, SerialInput};
use crate::spice::SpiceRuntime;
use crate::terminal::RawTerminal;
use crate::vcpu::{self, VcpuBuses};

/// Where KVM keeps its identity map and TSS pages on Intel hosts: just below the BIOS area
/// at the top of the 32-bit space, clear of every device.
const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
const KVM_TSS_START: usize = 0xfffb_d000;
/// The highest address an initramfs may end at when the kernel does not say.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x3fff_ffff;

/// Errors that stop the VMM.
#[derive(Debug, Error)]
pub enum VmmError {
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm: {hint}")]
    KvmOpen {
        /// What to do about it.
        hint: &'static str,
        /// The open error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// More vCPUs than KVM allows.
    #[error("--cpus boot={requested} is more than this host's KVM allows ({max})")]
    TooManyVcpus {
        /// vCPUs asked for.
        requested: u8,
        /// KVM_CAP_MAX_VCPUS.
        max: usize,
    },
    /// More memory than the host has.
    #[error("--memory {requested} MiB is more than this host's {host} MiB of RAM")]
    MemoryTooLarge {
        /// MiB asked for.
        requested: u64,
        /// MiB of host RAM.
        host: u64,
    },
    /// A KVM ioctl failed during set-up.
    #[error("cannot {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Guest memory could not be allocated.
    #[error("cannot allocate {0} MiB of guest memory")]
    Memory(u64, #[source] vm_memory::mmap::FromRangesError),
    /// The kernel or initramfs was refused.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The zero page or command line could not be written.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The ACPI tables could not be written.
    #[error(transparent)]
    Acpi(#[from] AcpiError),
    /// A vCPU's registers could not be set.
    #[error("vCPU {0}")]
    Regs(u8, #[source] RegsError),
    /// Two devices claim the same addresses.
    #[error("device map")]
    Bus(#[from] BusError),
    /// The serial output file could not be opened.
    #[error("cannot open serial output file {0}")]
    SerialFile(PathBuf, #[source] io::Error),
    /// A host resource (eventfd, thread, epoll) could not be set up.
    #[error("cannot set up {0}")]
    Host(&'static str, #[source] io::Error),
    /// The display device could not be created.
    #[error(transparent)]
    Display(#[from] display::DisplayError),
    /// The SPICE server could not start.
    #[error(transparent)]
    Spice(#[from] crate::spice::SpiceStartError),
    /// The control socket could not be created.
    #[error("cannot listen on control socket {0}")]
    ApiSocket(PathBuf, #[source] io::Error),
    /// The event loop failed.
    #[error("event loop")]
    EventLoop(#[source] event_manager::Error),
    /// A vCPU stopped on an error.
    #[error("{0}")]
    VcpuFailed(String),
}

/// How the VM ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The guest powered off.
    PowerOff,
    /// The guest reset the machine.
    Reset,
    /// The user quit from the console.
    UserQuit,
}

/// The VM's devices as the vCPUs and the event loop reach them.
struct Devices {
    buses: VcpuBuses,
    serial: Option<Arc<Mutex<SerialDevice>>>,
    serial_output: Option<Arc<SerialOutput>>,
    fifo_empty_evt: Option<EventFd>,
    /// The QXL device, kept for the VM's lifetime.
    display: Option<Arc<display::DisplayHandle>>,
    /// Types keys and moves the mouse on the i8042.
    input: InputHandle,
}

fn open_kvm() -> Result<Kvm, VmmError> {
    Kvm::new().map_err(|source| {
        let hint = match source.errno() {
            libc::ENOENT | libc::ENXIO | libc::ENODEV => {
                "no such device; load kvm_intel or kvm_amd and enable virtualization in firmware"
            }
            libc::EACCES | libc::EPERM => "permission denied; add your user to the kvm group",
            _ => "check that KVM is available on this host",
        };
        VmmError::KvmOpen { hint, source }
    })
}

/// Host RAM in MiB, from /proc/meminfo.
fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib >> 10)
}

fn check_resources(kvm: &Kvm, config: &VmConfig) -> Result<(), VmmError> {
    let max = kvm.get_max_vcpus();
    if usize::from(config.vcpus) > max {
        return Err(VmmError::TooManyVcpus {
            requested: config.vcpus,
            max,
        });
    }

    let requested = config.memory_size >> 20;
    match host_memory_mib() {
        Some(host) if requested > host => Err(VmmError::MemoryTooLarge { requested, host }),
        _ => Ok(()),
    }
}

fn create_vm(kvm: &Kvm) -> Result<VmFd, VmmError> {
    let vm = kvm
        .create_vm()
        .map_err(|e| VmmError::Kvm("create the VM", e))?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_START)
        .map_err(|e| VmmError::Kvm("set the identity map address", e))?;
    vm.set_tss_address(KVM_TSS_START)
        .map_err(|e| VmmError::Kvm("set the TSS address", e))?;
    vm.create_irq_chip()
        .map_err(|e| VmmError::Kvm("create the in-kernel IOAPIC and PIC", e))?;

    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| VmmError::Kvm("create the in-kernel PIT", e))?;
    Ok(vm)
}

/// Maps `size` bytes of guest RAM (split around the PCI hole) and registers it with KVM.
pub fn create_memory(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, VmmError> {
    let ranges: Vec<_> = layout::ram_ranges(size)
        .into_iter()
        .map(|(start, len)| Ok((start, usize::try_from(len)?)))
        .collect::<Result<_, std::num::TryFromIntError>>()
        .expect("64-bit host");
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmmError::Memory(size >> 20, e))?;

    for (slot, region) in (0u32..).zip(mem.iter()) {
        let region_desc = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which outlives the VM: it is
        // kept until the process exits.
        unsafe { vm.set_user_memory_region(region_desc) }
            .map_err(|e| VmmError::Kvm("register guest memory with KVM", e))?;
    }
    Ok(mem)
}

/// Loads the kernel, initramfs, command line, zero page, page tables and ACPI tables.
fn load_guest(
    mem: &GuestMemoryMmap,
    kernel: KernelImage,
    config: &VmConfig,
) -> Result<vm_memory::GuestAddress, VmmError> {
    let loaded = kernel.load(mem)?;

    let addr_max = loaded
        .header
        .map_or(DEFAULT_INITRD_ADDR_MAX, |h| u64::from(h.initrd_addr_max));
    let limit = layout::low_ram_end(config.memory_size).min(addr_max.saturating_add(1));
    let initramfs = match &config.initramfs {
        Some(path) => Some(load_initramfs(mem, path, loaded.end, limit)?),
        None => None,
    };

    regs::write_boot_structures(mem).map_err(|e| VmmError::Regs(0, e))?;
    let rsdp = acpi::write_tables(mem, config.vcpus, config.memory_size)?;
    let info = BootInfo {
        header: loaded.header,
        memory_size: config.memory_size,
        cmdline: &config.cmdline,
        initramfs,
        rsdp,
    };
    boot::write_boot_params(mem, &info)?;
    Ok(loaded.entry)
}

fn insert(bus: &Bus, dev: Arc<Mutex<dyn BusDevice>>, base: u64, len: u64) -> Result<(), VmmError> {
    Ok(bus.insert(dev, base, len)?)
}

fn create_devices(
    vm: &Arc<VmFd>,
    config: &VmConfig,
    exit: &Arc<VmExit>,
    spice: Option<&SpiceRuntime>,
) -> Result<Devices, VmmError> {
    let buses = VcpuBuses {
        io: Arc::new(Bus::new()),
        mmio: Arc::new(Bus::new()),
    };
    let input = add_i8042(vm, &buses.io, exit)?;
    let mut devices = Devices {
        buses,
        serial: None,
        serial_output: None,
        fifo_empty_evt: None,
        display: None,
        input,
    };
    if config.serial != SerialConfig::Off {
        add_serial(vm, &mut devices)?;
    }

    let io = &devices.buses.io;
    let pm = Arc::new(Mutex::new(AcpiPmDevice::new(exit.clone())));
    insert(
        io,
        pm,
        u64::from(SLEEP_CONTROL_PORT),
        u64::from(PM_PORTS_LEN),
    )?;

    let pci = Arc::new(Mutex::new(PciRoot::new(layout::PCI_ECAM_START)));
    let config_ports = (u64::from(PCI_CONFIG_IO_PORT), u64::from(PCI_CONFIG_IO_LEN));
    insert(io, pci.clone(), config_ports.0, config_ports.1)?;
    insert(
        &devices.buses.mmio,
        pci.clone(),
        layout::PCI_ECAM_START,
        ECAM_SIZE_BUS0,
    )?;

    if config.display == DisplayConfig::Qxl {
        let listener = spice
            .map(|spice| spice.attach(devices.input.clone()))
            .transpose()?;
        let routing = IrqRouting::new(vm.clone());
        let mut root = pci.lock().unwrap_or_else(|e| e.into_inner());
        let buses = &devices.buses;
        let display = display::add_qxl(vm, &routing, &mut root, &buses.io, &buses.mmio, listener)?;
        devices.display = Some(Arc::new(display));
    }
    Ok(devices)
}

/// An eventfd registered as the irqfd of `gsi`.
fn irqfd(vm: &VmFd, gsi: u32, what: &'static str) -> Result<Arc<EventFdInterrupt>, VmmError> {
    let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| VmmError::Host(what, e))?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|e| VmmError::Kvm("connect an interrupt", e))?;
    Ok(Arc::new(EventFdInterrupt::new(evt)))
}

/// The i8042 on ports 0x60-0x64 with its keyboard (IRQ 1) and mouse (IRQ 12) interrupts on
/// irqfds; returns the handle that feeds it input.
fn add_i8042(vm: &VmFd, io: &Bus, exit: &Arc<VmExit>) -> Result<InputHandle, VmmError> {
    let kbd_irq = irqfd(vm, layout::KEYBOARD_GSI, "the keyboard interrupt")?;
    let aux_irq = irqfd(vm, layout::MOUSE_GSI, "the mouse interrupt")?;
    let i8042 = Arc::new(Mutex::new(I8042::new(exit.clone(), kbd_irq, aux_irq)));
    insert(io, i8042.clone(), 0x60, 5)?;
    Ok(InputHandle::new(i8042))
}

/// COM1 with its interrupt on an irqfd.
fn add_serial(vm: &VmFd, devices: &mut Devices) -> Result<(), VmmError> {
    let host_err = |what| move |e| VmmError::Host(what, e);
    let irq_evt = EventFd::new(EFD_NONBLOCK).map_err(host_err("the serial interrupt"))?;
    vm.register_irqfd(&irq_evt, layout::SERIAL_GSI)
        .map_err(|e| VmmError::Kvm("connect the serial interrupt", e))?;
    let fifo_evt = EventFd::new(EFD_NONBLOCK).map_err(host_err("serial input events"))?;
    let events_evt = fifo_evt
        .try_clone()
        .map_err(host_err("serial input events"))?;

    let output = SerialOutput::new(SERIAL_OUTPUT_CAPACITY);
    let irq = Arc::new(EventFdInterrupt::new(irq_evt));
    let events = SerialInputEvents::new(events_evt);
    let serial = Arc::new(Mutex::new(SerialDevice::new(irq, events, output.clone())));
    insert(&devices.buses.io, serial.clone(), 0x3f8, 8)?;

    devices.serial = Some(serial);
    devices.serial_output = Some(output);
    devices.fifo_empty_evt = Some(fifo_evt);
    Ok(())
}

fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    count: u8,
    entry: vm_memory::GuestAddress,
) -> Result<Vec<kvm_ioctls::VcpuFd>, VmmError> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VmmError::Kvm("read the CPUID KVM supports", e))?;
    let msr_list = kvm
        .get_msr_index_list()
        .map_err(|e| VmmError::Kvm("list MSRs", e))?;
    let msrs = msr_list.as_slice();

    let mut vcpus = Vec::with_capacity(usize::from(count));
    for id in 0..count {
        let vcpu = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| VmmError::Kvm("create a vCPU", e))?;
        vcpu.set_cpuid2(&cpuid::vcpu_cpuid(&supported, id, count))
            .map_err(|e| VmmError::Kvm("set the vCPU's CPUID", e))?;
        let setup = |vcpu: &kvm_ioctls::VcpuFd| -> Result<(), RegsError> {
            regs::setup_msrs(vcpu, msrs)?;
            regs::setup_fpu(vcpu)?;
            regs::setup_lapic(vcpu)?;
            if id == 0 {
                regs::setup_boot_vcpu(vcpu, entry)?;
            }
            Ok(())
        };
        setup(&vcpu).map_err(|e| VmmError::Regs(id, e))?;
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

fn serial_writer(config: &VmConfig) -> Result<Option<Box<dyn Write + Send>>, VmmError> {
    match &config.serial {
        SerialConfig::Tty => Ok(Some(Box::new(io::stdout()))),
        SerialConfig::File(path) => {
            let file: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| VmmError::SerialFile(path.clone(), e))?;
            Ok(Some(Box::new(file)))
        }
        SerialConfig::Off => Ok(None),
    }
}

/// Builds the VM described by `config` and runs it to the end. A guest reboot builds and
/// boots a fresh VM in its place (the SPICE server and its clients stay), unless
/// `config.reboot` is off, in which case it ends the run like a power-off.
pub fn run(config: &VmConfig) -> Result<RunOutcome, VmmError> {
    let kernel = KernelImage::open(&config.kernel)?;
    kernel.check_cmdline(&config.cmdline)?;
    if let Some(path) = &config.initramfs {
        File::open(path).map_err(|e| KernelError::InitramfsOpen(path.clone(), e))?;
    }
    let kvm = open_kvm()?;
    check_resources(&kvm, config)?;
    let spice = config.spice.as_ref().map(SpiceRuntime::start).transpose()?;

    let mut boots = 0u64;
    loop {
        boots += 1;
        let outcome = boot(&kvm, config, spice.as_ref())?;
        // A torn-down VM leaves its threads' heap arenas full of free memory; hand it back so
        // that reboot after reboot the VMM's footprint stays where it was.
        // SAFETY: malloc_trim only releases memory the allocator holds free.
        unsafe { libc::malloc_trim(0) };
        if let Some(spice) = &spice {
            spice.detach();
        }
        if outcome != RunOutcome::Reset || !config.reboot {
            return Ok(outcome);
        }
        log::info!("the guest rebooted (boot {boots} ended); booting it again");
    }
}

/// Builds one VM, runs it until it stops, and tears it down: every thread it started is
/// joined and its memory unmapped before this returns.
fn boot(
    kvm: &Kvm,
    config: &VmConfig,
    spice: Option<&SpiceRuntime>,
) -> Result<RunOutcome, VmmError> {
    let kernel = KernelImage::open(&config.kernel)?;
    let out = serial_writer(config)?;
    log::info!(
        "booting {} kernel {}",
        kernel.format(),
        config.kernel.display()
    );

    let vm = Arc::new(create_vm(kvm)?);
    let mem = create_memory(&vm, config.memory_size)?;
    let entry = load_guest(&mem, kernel, config)?;

    let exit = Arc::new(VmExit::new().map_err(|e| VmmError::Host("the exit event", e))?);
    let devices = create_devices(&vm, config, &exit, spice)?;
    let vcpus = create_vcpus(kvm, &vm, config.vcpus, entry)?;

    // run_vm ends and joins the vCPU threads before it returns, so the guest memory and the
    // VM (dropped here, after the devices that hold it) are no longer in use.
    run_vm(config, vcpus, devices, out, &exit)
}

fn run_until_stop(
    manager: &mut EventManager<Box<dyn MutEventSubscriber + Send>>,
    fired: &AtomicBool,
) -> Result<(), VmmError> {
    while !fired.load(Ordering::SeqCst) {
        manager.run().map_err(VmmError::EventLoop)?;
    }
    Ok(())
}

fn run_vm(
    config: &VmConfig,
    vcpus: Vec<kvm_ioctls::VcpuFd>,
    mut devices: Devices,
    out: Option<Box<dyn Write + Send>>,
    exit: &Arc<VmExit>,
) -> Result<RunOutcome, VmmError> {
    let mut manager: EventManager<Box<dyn MutEventSubscriber + Send>> =
        EventManager::new().map_err(VmmError::EventLoop)?;
    let fired = Arc::new(AtomicBool::new(false));
    manager.add_subscriber(Box::new(ExitWatcher::new(exit.clone(), fired.clone())));

    let raw_terminal = match config.serial {
        SerialConfig::Tty => RawTerminal::enter(),
        _ => None,
    };
    if let (SerialConfig::Tty, Some(serial), Some(evt)) = (
        &config.serial,
        &devices.serial,
        devices.fifo_empty_evt.take(),
    ) {
        let input = SerialInput::new(serial.clone(), evt, exit.clone(), raw_terminal.is_some())
            .map_err(|e| VmmError::Host("serial console input", e))?;
        manager.add_subscriber(Box::new(input));
    }

    let display_shared = devices.display.as_ref().map(|d| d.shared.clone());
    let pause = Arc::new(Pause::new(display_shared));
    if let Some(path) = &config.api_socket {
        let context = ApiContext {
            exit: exit.clone(),
            display: devices.display.clone(),
            pause: pause.clone(),
            input: Some(devices.input.clone()),
        };
        let server =
            ApiServer::bind(path, context).map_err(|e| VmmError::ApiSocket(path.clone(), e))?;
        manager.add_subscriber(Box::new(server));
    }

    let writer = match (devices.serial_output.clone(), out) {
        (Some(output), Some(out)) => {
            Some(spawn_output_writer(output, out).map_err(|e| VmmError::Host("serial output", e))?)
        }
        _ => None,
    };

    for (id, vcpu) in (0u8..).zip(vcpus) {
        match vcpu::spawn(id, vcpu, devices.buses.clone(), exit.clone(), pause.clone()) {
            Ok(thread) => pause.add_vcpu_thread(thread),
            Err(e) => {
                pause.end_vcpus();
                return Err(VmmError::Host("a vCPU thread", e));
            }
        }
    }

    let ran = run_until_stop(&mut manager, &fired);
    pause.end_vcpus();
    ran?;

    // The writer thread ends once its queue is closed (within its 500 ms poll); it is not
    // joined, since a stuck terminal may hold it in a write.
    if let Some(output) = &devices.serial_output {
        output.wait_empty(Duration::from_secs(2));
        output.close();
    }
    drop(writer);
    drop(raw_terminal);
    devices.buses.io.clear();
    devices.buses.mmio.clear();

    match exit.reason() {
        Some(VmStop::Guest(devices::ExitRequest::PowerOff)) => Ok(RunOutcome::PowerOff),
        Some(VmStop::Guest(devices::ExitRequest::Reset)) => Ok(RunOutcome::Reset),
        Some(VmStop::UserQuit) => Ok(RunOutcome::UserQuit),
        Some(VmStop::VcpuFailed(why)) => Err(VmmError::VcpuFailed(why)),
        None => Err(VmmError::VcpuFailed(
            "the VM stopped for no recorded reason".into(),
        )),
    }
}
