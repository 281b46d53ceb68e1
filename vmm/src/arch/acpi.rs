// SPDX-License-Identifier: Apache-2.0
//! ACPI tables: how the guest finds its vCPUs, interrupt controllers, PCI host bridge, legacy
//! devices and power-off register.
//!
//! ACPI rather than an MP table, because PCI needs it: an MP table can list CPUs and route
//! INTx, but only ACPI can announce ECAM (MCFG), the host bridge's address windows (`_CRS`),
//! per-slot interrupt routing (`_PRT`), and a way to power off (the FADT's sleep registers with
//! `\_S5_`). The platform is hardware-reduced ACPI, as in cloud-hypervisor: no PM timer, SCI or
//! fixed-feature registers to emulate.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Interrupt, Memory32Fixed, Name, Package,
    Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use devices::acpi::{PM_PORTS_LEN, S5_SLEEP_TYPE, SLEEP_CONTROL_PORT};
use devices::pci::ECAM_SIZE_BUS0;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    low32, pci_mmio64_start, ACPI_SIZE, ACPI_START, APIC_START, IOAPIC_START, PCI_ECAM_START,
    PCI_INTX_GSI_BASE, PCI_MMIO32_SIZE, PCI_MMIO32_START, PCI_MMIO64_SIZE,
};

const OEM_ID: [u8; 6] = *b"VMMRS ";
const OEM_TABLE_ID: [u8; 8] = *b"VMMTABLE";
const OEM_REVISION: u32 = 1;

/// IAPC_BOOT_ARCH (ACPI 6.5, table 5.11): an 8042 is present, there is no VGA and no CMOS RTC.
const BOOT_ARCH_8042: u16 = 1 << 1;
const BOOT_ARCH_NO_VGA: u16 = 1 << 2;
const BOOT_ARCH_NO_CMOS_RTC: u16 = 1 << 5;

/// Number of PCI INTx GSIs that slots are swizzled across.
const PCI_INTX_GSIS: u32 = 8;

/// Errors writing the tables.
#[derive(Debug, Error)]
pub enum AcpiError {
    /// The tables outgrew their area below 1 MiB.
    #[error("the ACPI tables take {0} bytes, more than the {ACPI_SIZE} reserved for them")]
    TooBig(usize),
    /// Guest memory refused a write.
    #[error("cannot write the ACPI tables into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Lays out tables one after another, 16-byte aligned, starting at the RSDP.
struct TableWriter {
    bytes: Vec<u8>,
}

impl TableWriter {
    /// Appends `table` and returns its guest address.
    fn add(&mut self, table: &[u8]) -> u64 {
        let offset = self.bytes.len().next_multiple_of(16);
        self.bytes.resize(offset, 0);
        self.bytes.extend_from_slice(table);
        ACPI_START.0 + offset as u64
    }
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// Writes all tables for `vcpus` vCPUs and `memory_size` bytes of RAM; returns the RSDP's
/// address.
pub fn write_tables(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    memory_size: u64,
) -> Result<GuestAddress, AcpiError> {
    let mut writer = TableWriter {
        bytes: vec![0; std::mem::size_of::<Rsdp>()],
    };

    let dsdt = writer.add(create_dsdt(memory_size).as_slice());
    let fadt = writer.add(&to_bytes(&create_fadt(dsdt)));
    let madt = writer.add(&to_bytes(&create_madt(vcpus)));
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(PCI_ECAM_START, 0, 0, 0);
    let mcfg = writer.add(&to_bytes(&mcfg));

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for table in [fadt, madt, mcfg] {
        xsdt.add_entry(table);
    }
    let xsdt = writer.add(&to_bytes(&xsdt));

    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt));
    writer.bytes[..rsdp.len()].copy_from_slice(&rsdp);

    if writer.bytes.len() as u64 > ACPI_SIZE {
        return Err(AcpiError::TooBig(writer.bytes.len()));
    }
    mem.write_slice(&writer.bytes, ACPI_START)
        .map_err(AcpiError::Write)?;
    Ok(ACPI_START)
}

fn create_fadt(dsdt: u64) -> impl Aml {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);

    let port = u64::from(SLEEP_CONTROL_PORT);
    fadt.sleep_control_reg = GAS::new(GasSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port);
    fadt.sleep_status_reg = GAS::new(GasSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port + 1);
    fadt.iapc_boot_arch = (BOOT_ARCH_8042 | BOOT_ARCH_NO_VGA | BOOT_ARCH_NO_CMOS_RTC).into();
    fadt.finalize()
}

fn create_madt(vcpus: u8) -> MADT {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(low32(APIC_START)),
    );
    for id in 0..vcpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    // The IOAPIC's ID follows the vCPUs' APIC IDs so that the two never collide.
    madt.add_structure(IoApic::new(vcpus, low32(IOAPIC_START), 0));
    madt
}

/// The GSI that pin `pin` (0 = INTA) of PCI slot `slot` is wired to: slots are spread over
/// GSIs 16-23 like the swizzle on a PCI-to-PCI bridge.
pub fn pci_intx_gsi(slot: u32, pin: u32) -> u32 {
    PCI_INTX_GSI_BASE + (slot + pin) % PCI_INTX_GSIS
}

fn create_dsdt(memory_size: u64) -> Vec<u8> {
    let mut body = Vec::new();
    let s5 = Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE, &0u8, &0u8]);
    Name::new(Path::new("_S5_"), &s5).to_aml_bytes(&mut body);

    let pci0 = pci_host_bridge(memory_size);
    let legacy = legacy_devices();
    let mut children: Vec<&dyn Aml> = vec![&pci0];
    children.extend(legacy.iter().map(|d| d as &dyn Aml));
    Scope::new(Path::new("\\_SB_"), children).to_aml_bytes(&mut body);

    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// Bytes of a PCI0 device with its resource windows and interrupt routing.
fn pci_host_bridge(memory_size: u64) -> AmlBytes {
    let mmio64_start = pci_mmio64_start(memory_size);
    let crs = AmlBytes::of(&ResourceTemplate::new(vec![
        &AddressSpace::new_bus_number(0u16, 0u16),
        &IO::new(0xcf8, 0xcf8, 1, 8),
        &AddressSpace::new_io(0u16, 0xcf7u16, None),
        &AddressSpace::new_io(0xd00u16, 0xffffu16, None),
        &AddressSpace::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            low32(PCI_MMIO32_START),
            low32(PCI_MMIO32_START + PCI_MMIO32_SIZE - 1),
            None,
        ),
        &AddressSpace::new_memory(
            AddressSpaceCacheable::Cacheable,
            true,
            mmio64_start,
            mmio64_start + PCI_MMIO64_SIZE - 1,
            None,
        ),
    ]));

    let routes = prt_entries();
    let prt: Vec<&dyn Aml> = routes.iter().map(|r| r as &dyn Aml).collect();
    let prt = Package::new(prt);

    AmlBytes::of(&Device::new(
        Path::new("PCI0"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0A08")),
            &Name::new(Path::new("_CID"), &EISAName::new("PNP0A03")),
            &Name::new(Path::new("_ADR"), &0u32),
            &Name::new(Path::new("_SEG"), &0u16),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_BBN"), &0u8),
            &Name::new(Path::new("_CRS"), &crs),
            &Name::new(Path::new("_PRT"), &prt),
        ],
    ))
}

/// `_PRT` entries: Package { address 0xSSSSFFFF, pin, source 0, GSI } for slots 1-31.
fn prt_entries() -> Vec<AmlBytes> {
    let mut entries = Vec::new();
    for slot in 1..32u32 {
        for pin in 0..4u32 {
            let address = slot << 16 | 0xffff;
            let gsi = pci_intx_gsi(slot, pin);
            let pin = u8::try_from(pin).expect("pins 0-3");
            entries.push(AmlBytes::of(&Package::new(vec![
                &address, &pin, &0u8, &gsi,
            ])));
        }
    }
    entries
}

/// COM1, the PS/2 keyboard and mouse, and the motherboard resources Linux should keep free.
fn legacy_devices() -> Vec<AmlBytes> {
    let com1_crs = AmlBytes::of(&ResourceTemplate::new(vec![
        &IO::new(0x3f8, 0x3f8, 1, 8),
        &Interrupt::new(true, true, false, false, 4),
    ]));
    let kbd_crs = AmlBytes::of(&ResourceTemplate::new(vec![
        &IO::new(0x60, 0x60, 1, 1),
        &IO::new(0x64, 0x64, 1, 1),
        &Interrupt::new(true, true, false, false, 1),
    ]));
    let mouse_crs = AmlBytes::of(&ResourceTemplate::new(vec![&Interrupt::new(
        true, true, false, false, 12,
    )]));
    let sleep_port = SLEEP_CONTROL_PORT;
    let reserved_crs = AmlBytes::of(&ResourceTemplate::new(vec![
        &Memory32Fixed::new(false, low32(PCI_ECAM_START), low32(ECAM_SIZE_BUS0)),
        &IO::new(sleep_port, sleep_port, 1, PM_PORTS_LEN),
    ]));

    let device = |name: &str, hid: &str, uid: u8, crs: &AmlBytes| {
        AmlBytes::of(&Device::new(
            Path::new(name),
            vec![
                &Name::new(Path::new("_HID"), &EISAName::new(hid)),
                &Name::new(Path::new("_UID"), &uid),
                &Name::new(Path::new("_CRS"), crs),
            ],
        ))
    };

    vec![
        device("COM1", "PNP0501", 1, &com1_crs),
        device("PS2K", "PNP0303", 0, &kbd_crs),
        device("PS2M", "PNP0F13", 0, &mouse_crs),
        device("MRES", "PNP0C02", 0, &reserved_crs),
    ]
}

/// AML already serialised, so that objects built in helpers can be nested by reference.
struct AmlBytes(Vec<u8>);

impl AmlBytes {
    fn of(object: &dyn Aml) -> Self {
        AmlBytes(to_bytes(object))
    }
}

impl Aml for AmlBytes {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn read_u64(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn checksum_ok(b: &[u8]) -> bool {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
    }

    /// Reads the table at guest address `addr`, checking its length and checksum.
    fn table(mem: &GuestMemoryMmap, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
        let mut header = [0u8; 36];
        mem.read_slice(&mut header, GuestAddress(addr)).unwrap();
        assert_eq!(&header[..4], signature);
        let mut bytes = vec![0u8; read_u32(&header, 4) as usize];
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        assert!(
            checksum_ok(&bytes),
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        bytes
    }

    fn tables(vcpus: u8) -> (GuestMemoryMmap, Vec<u64>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let rsdp_addr = write_tables(&mem, vcpus, 512 << 20).unwrap();

        let mut rsdp = [0u8; 36];
        mem.read_slice(&mut rsdp, rsdp_addr).unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]) && checksum_ok(&rsdp));
        assert_eq!(rsdp[15], 2, "ACPI 2.0+ RSDP");

        let xsdt = table(&mem, read_u64(&rsdp, 24), b"XSDT");
        let entries = (36..xsdt.len())
            .step_by(8)
            .map(|at| read_u64(&xsdt, at))
            .collect();
        (mem, entries)
    }

    #[test]
    fn xsdt_lists_fadt_madt_mcfg() {
        let (mem, entries) = tables(1);
        assert_eq!(entries.len(), 3);
        table(&mem, entries[0], b"FACP");
        table(&mem, entries[1], b"APIC");
        table(&mem, entries[2], b"MCFG");
    }

    #[test]
    fn fadt_is_hardware_reduced_with_sleep_registers_and_dsdt() {
        let (mem, entries) = tables(1);
        let fadt = table(&mem, entries[0], b"FACP");

        let flags = read_u32(&fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_eq!(
            flags & (1 << 10),
            0,
            "no reset register: reboot goes through the i8042"
        );
        assert_eq!(
            u16::from_le_bytes([fadt[109], fadt[110]]),
            0x26,
            "IAPC_BOOT_ARCH"
        );

        // SLEEP_CONTROL_REG at 244 and SLEEP_STATUS_REG at 256: system I/O, 8 bits.
        assert_eq!(fadt[244], 1);
        assert_eq!(fadt[245], 8);
        assert_eq!(read_u64(&fadt, 248), 0x600);
        assert_eq!(read_u64(&fadt, 260), 0x601);

        let dsdt = table(&mem, read_u64(&fadt, 140), b"DSDT");
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
    }

    #[test]
    fn madt_has_one_enabled_lapic_per_vcpu_and_the_ioapic() {
        let (mem, entries) = tables(3);
        let madt = table(&mem, entries[1], b"APIC");
        assert_eq!(read_u32(&madt, 36), 0xfee0_0000);

        let mut lapics = Vec::new();
        let mut ioapics = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let (kind, len) = (madt[at], madt[at + 1] as usize);
            match kind {
                0 => lapics.push((madt[at + 2], madt[at + 3], read_u32(&madt, at + 4))),
                1 => ioapics.push((
                    madt[at + 2],
                    read_u32(&madt, at + 4),
                    read_u32(&madt, at + 8),
                )),
                other => panic!("unexpected MADT structure {other}"),
            }
            at += len;
        }
        assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
        assert_eq!(ioapics, vec![(3, 0xfec0_0000, 0)]);
    }

    #[test]
    fn mcfg_announces_ecam_for_bus_0() {
        let (mem, entries) = tables(1);
        let mcfg = table(&mem, entries[2], b"MCFG");
        assert_eq!(mcfg.len(), 44 + 16);
        assert_eq!(read_u64(&mcfg, 44), 0xe000_0000);
        assert_eq!(&mcfg[52..56], &[0, 0, 0, 0], "segment 0, buses 0-0");
    }

    #[test]
    fn dsdt_declares_the_host_bridge_routing_and_legacy_devices() {
        let (mem, entries) = tables(1);
        let fadt = table(&mem, entries[0], b"FACP");
        let dsdt = table(&mem, read_u64(&fadt, 140), b"DSDT");
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);

        for name in [
            &b"PCI0"[..],
            b"_PRT",
            b"_CRS",
            b"COM1",
            b"PS2K",
            b"PS2M",
            b"MRES",
        ] {
            assert!(has(name), "{}", String::from_utf8_lossy(name));
        }
        // EISAID("PNP0A08") encodes as 0x080ad041, stored little-endian after a DWord prefix.
        assert!(has(&[0x0c, 0x41, 0xd0, 0x0a, 0x08]));
        // Slot 31 pin INTD: Package (length 12, 4 elements) { DWord 0x1fffff, Byte 3, Zero,
        // Byte GSI }; AML integers take their shortest encoding.
        let gsi = pci_intx_gsi(31, 3);
        assert_eq!(gsi, 18);
        let entry = [
            0x12, 0x0c, 0x04, 0x0c, 0xff, 0xff, 0x1f, 0x00, 0x0a, 0x03, 0x00, 0x0a, 18,
        ];
        assert!(has(&entry), "slot 31 INTD route");
    }

    #[test]
    fn intx_gsis_stay_in_16_to_23() {
        for slot in 0..32 {
            for pin in 0..4 {
                assert!((16..24).contains(&pci_intx_gsi(slot, pin)));
            }
        }
    }
}
