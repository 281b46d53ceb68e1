// SPDX-License-Identifier: Apache-2.0
//
// qxlbench: a tiny 64-bit guest (no Linux) that drives the QXL device the way a driver does
// and times its port writes with the TSC. It is loaded as an ELF "kernel" by the vmm, or by
// the benchmark's own bare KVM loop, and runs entirely at CPL 0 (this machine's /dev/kvm
// emulates kernel mode, so every instruction here is one its emulator handles: moves, adds,
// compares, jumps, in/out, rdtsc, hlt).
//
// Output, on COM1: one line `Q <phase> <cycles>` per sample, then `QB-DONE`; errors are one
// line starting with `QB-ERROR`, after which the guest powers off through the ACPI sleep
// register. With the device, a load phase follows the samples (`QB-LOAD-START`): draws until
// a byte arrives on COM1 (`QB-LOAD-END <rounds>`). The guest then halts for good.
//
// Phases:
//   tsc         two back-to-back rdtsc: the timer's own cost, subtracted by the host
//   bare-exit   out to port 0x80, which nothing claims: a plain exit to user space
//   bare-ioevt  out to port 0x81 (bare VM only: an ioeventfd nobody reads)
//   notify-cmd, update-area-async, update-irq: QXL ports, one draw per round (vmm only)
//
// Build: gcc -static -nostdlib -ffreestanding -fno-pie -no-pie -O2 -mgeneral-regs-only
//        -mno-red-zone -fno-stack-protector -Wl,-Ttext-segment=0x200000 -e _start

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef int i32;

#define ROUNDS 1000
#define ECAM 0xe0000000UL
#define QXL_CFG (ECAM + (1UL << 15)) /* bus 0, device 1, function 0 */
#define LAPIC 0xfee00000UL
#define IRQ_VECTOR 0x40
#define BARE_EXIT_PORT 0x80
#define BARE_IOEVT_PORT 0x81
#define SLEEP_CONTROL_PORT 0x600
#define SLEEP_S5 ((5 << 2) | (1 << 5))

/* QXL ports (offsets from BAR3) and RAM header offsets, as in spice-protocol's qxl_dev.h. */
#define IO_NOTIFY_CMD 0
#define IO_UPDATE_IRQ 3
#define IO_RESET 5
#define IO_UPDATE_AREA_ASYNC 16
#define IO_MEMSLOT_ADD_ASYNC 17
#define IO_CREATE_PRIMARY_ASYNC 18
#define INT_IO_CMD 4
#define RAM_INT_PENDING 4
#define RAM_INT_MASK 8
#define RAM_CMD_RING 4108
#define RAM_RELEASE_RING 5172
#define RAM_UPDATE_AREA 5256
#define RAM_UPDATE_SURFACE 5272
#define RAM_MEM_SLOT 5276
#define RAM_CREATE_SURFACE 5292
#define RING_PROD 4
#define RING_CONS 12
#define RING_ITEMS 20
#define ROM_SURFACE0_AREA 40
#define ROM_RAM_HEADER 44
#define ROM_SLOT_GEN_BITS 66
#define ROM_SLOT_ID_BITS 67
#define ROM_SLOT_GENERATION 68

#define WIDTH 640
#define HEIGHT 480
#define TILE 16

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0,%1" ::"a"(v), "Nd"(port)); }

static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1,%0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)::"memory");
    return ((u64)hi << 32) | lo;
}

static inline u32 rd32(u64 a) { return *(volatile u32 *)a; }
static inline u16 rd16(u64 a) { return *(volatile u16 *)a; }
static inline u8 rd8(u64 a) { return *(volatile u8 *)a; }
static inline void wr32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline void wr16(u64 a, u16 v) { *(volatile u16 *)a = v; }
static inline void wr8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline void wr64(u64 a, u64 v) { *(volatile u64 *)a = v; }

static void putc_(char c)
{
    while (!(inb(0x3fd) & 0x20))
        ;
    outb(0x3f8, c);
}

static void puts_(const char *s)
{
    while (*s)
        putc_(*s++);
}

static void putu(u64 v)
{
    char b[24];
    int i = 0;
    do {
        b[i++] = '0' + v % 10;
        v /= 10;
    } while (v);
    while (i)
        putc_(b[--i]);
}

static void puthex(u64 v)
{
    puts_("0x");
    for (int s = 60; s >= 0; s -= 4)
        putc_("0123456789abcdef"[(v >> s) & 15]);
}

static void power_off(void)
{
    outb(SLEEP_CONTROL_PORT, SLEEP_S5);
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void fail(const char *why, u64 value)
{
    puts_("QB-ERROR ");
    puts_(why);
    putc_(' ');
    puthex(value);
    putc_('\n');
    power_off();
}

static u64 samples[ROUNDS];

static void report(const char *phase, int n)
{
    for (int i = 0; i < n; i++) {
        puts_("Q ");
        puts_(phase);
        putc_(' ');
        putu(samples[i]);
        putc_('\n');
    }
}

static u64 timed_out(u16 port, u8 value)
{
    u64 t0 = rdtsc();
    outb(port, value);
    return rdtsc() - t0;
}

static void phase_tsc(void)
{
    for (int i = 0; i < ROUNDS; i++) {
        u64 t0 = rdtsc();
        samples[i] = rdtsc() - t0;
    }
    report("tsc", ROUNDS);
}

static void phase_port(const char *name, u16 port)
{
    for (int i = 0; i < ROUNDS; i++)
        samples[i] = timed_out(port, 0);
    report(name, ROUNDS);
}

/* ---- paging, interrupts ---------------------------------------------------------------- */

static u64 pd_high[512] __attribute__((aligned(4096)));
static u8 idt[256 * 16] __attribute__((aligned(16)));
volatile u32 irq_count;

/* Maps 3..4 GiB (PCI BARs, ECAM, LAPIC) with 2 MiB pages next to the boot identity map. */
static void map_high(void)
{
    u64 cr3;
    __asm__ volatile("mov %%cr3,%0" : "=r"(cr3));
    u64 *pml4 = (u64 *)(cr3 & ~0xfffUL);
    u64 *pdpt = (u64 *)(pml4[0] & ~0xfffUL);
    for (u64 i = 0; i < 512; i++)
        pd_high[i] = (0xc0000000UL + (i << 21)) | 0x83 | 0x18; /* present, rw, 2M, PCD|PWT */
    pdpt[3] = (u64)pd_high | 3;
    __asm__ volatile("mov %0,%%cr3" ::"r"(cr3) : "memory");
}

extern char irq_entry[];
__asm__(".globl irq_entry\n"
        "irq_entry:\n"
        "  push %rax\n"
        "  incl irq_count(%rip)\n"
        "  movl $0, %eax\n"
        "  movl %eax, 0xfee000b0\n" /* LAPIC EOI */
        "  pop %rax\n"
        "  iretq\n");

static void setup_idt(void)
{
    u16 cs;
    __asm__ volatile("mov %%cs,%0" : "=r"(cs));
    u64 handler = (u64)irq_entry;
    u64 e = (u64)&idt[IRQ_VECTOR * 16];
    wr16(e, handler & 0xffff);
    wr16(e + 2, cs);
    wr8(e + 4, 0);
    wr8(e + 5, 0x8e); /* present, DPL 0, 64-bit interrupt gate */
    wr16(e + 6, (handler >> 16) & 0xffff);
    wr32(e + 8, handler >> 32);
    struct __attribute__((packed)) {
        u16 limit;
        u64 base;
    } idtr = {sizeof(idt) - 1, (u64)idt};
    __asm__ volatile("lidt %0" ::"m"(idtr));
    wr32(LAPIC + 0xf0, 0x1ff); /* software-enable, spurious vector 0xff */
}

/* Waits for one interrupt; gives up after ~max_spins halts (timer ticks or spurious wakes). */
static void wait_irq(u32 before)
{
    for (u32 spins = 0; irq_count == before; spins++) {
        if (spins > 1000000)
            fail("no interrupt", before);
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    }
}

/* ---- the device ------------------------------------------------------------------------ */

static u64 bar0, rom, ram, io;
static u64 slot_bits;

static void pci_setup(void)
{
    if (rd32(QXL_CFG) != 0x01001b36)
        fail("no QXL device at 00:01.0, id", rd32(QXL_CFG));
    bar0 = rd32(QXL_CFG + 0x10) & ~0xfUL;
    rom = rd32(QXL_CFG + 0x18) & ~0xfUL;
    io = rd32(QXL_CFG + 0x1c) & ~0x3UL;
    wr16(QXL_CFG + 4, 7); /* I/O, memory, bus master */

    u8 cap = rd8(QXL_CFG + 0x34);
    for (int n = 0; cap && n < 16; n++, cap = rd8(QXL_CFG + cap + 1)) {
        if (rd8(QXL_CFG + cap) != 5)
            continue;
        u64 msi = QXL_CFG + cap;
        u16 control = rd16(msi + 2);
        wr32(msi + 4, LAPIC);
        u64 data = msi + 8;
        if (control & 0x80) {
            wr32(msi + 8, 0);
            data = msi + 12;
        }
        wr16(data, IRQ_VECTOR);
        wr16(msi + 2, control | 1);
        return;
    }
    fail("no MSI capability", 0);
}

static u32 hdr32(u64 off) { return rd32(ram + off); }

/* Reads and clears int_pending in one step, as the Linux driver's interrupt handler does. */
static u32 take_pending(void)
{
    u32 pending = 0;
    __asm__ volatile("xchg %0,%1" : "+r"(pending), "+m"(*(volatile u32 *)(ram + RAM_INT_PENDING)));
    return pending;
}

static void wait_io_cmd(u16 port, u32 value, const char *what)
{
    u32 before = irq_count;
    outb(io + port, value);
    wait_irq(before);
    u32 pending = take_pending();
    if (!(pending & INT_IO_CMD))
        fail(what, pending);
}

static void device_setup(void)
{
    u32 header = rd32(rom + ROM_RAM_HEADER);
    ram = bar0 + header;
    u8 gen_bits = rd8(rom + ROM_SLOT_GEN_BITS), id_bits = rd8(rom + ROM_SLOT_ID_BITS);
    u64 generation = rd8(rom + ROM_SLOT_GENERATION);
    slot_bits = ((1UL << gen_bits) | generation) << (64 - id_bits - gen_bits);

    outb(io + IO_RESET, 0);
    wr32(ram + RAM_INT_MASK, INT_IO_CMD);

    wr64(ram + RAM_MEM_SLOT, bar0);
    wr64(ram + RAM_MEM_SLOT + 8, bar0 + header);
    wait_io_cmd(IO_MEMSLOT_ADD_ASYNC, 1, "memslot add: pending");

    u64 s = ram + RAM_CREATE_SURFACE;
    u32 fields[8] = {WIDTH, HEIGHT, WIDTH * 4, 32, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++)
        wr32(s + 4 * i, fields[i]);
    wr64(s + 32, slot_bits | 0); /* the primary lives at the start of BAR0 */
    wait_io_cmd(IO_CREATE_PRIMARY_ASYNC, 0, "create primary: pending");
}

/* A DRAW_COPY of a TILE x TILE bitmap, laid out as Linux's qxl_draw_dirty_fb does. */
#define POOL 8
static u64 drawables[POOL];

static void build_draws(void)
{
    u64 area = rd32(rom + ROM_SURFACE0_AREA);
    u64 chunk = area, image = area + 32 + TILE * TILE * 4, next = image + 64;
    wr32(bar0 + chunk, TILE * TILE * 4);
    wr64(bar0 + chunk + 4, 0);
    wr64(bar0 + chunk + 12, 0);
    for (u32 i = 0; i < TILE * TILE; i++)
        wr32(bar0 + chunk + 20 + 4 * i, 0x00ff8000 + i);

    u64 img = bar0 + image;
    wr64(img, 0);
    wr8(img + 8, 0);  /* SPICE_IMAGE_TYPE_BITMAP */
    wr8(img + 9, 0);
    wr32(img + 10, TILE);
    wr32(img + 14, TILE);
    wr8(img + 18, 8); /* SPICE_BITMAP_FMT_32BIT */
    wr8(img + 19, 4); /* QXL_BITMAP_TOP_DOWN */
    wr32(img + 20, TILE);
    wr32(img + 24, TILE);
    wr32(img + 28, TILE * 4);
    wr64(img + 32, 0);
    wr64(img + 40, slot_bits | chunk);

    for (int d = 0; d < POOL; d++, next += 256) {
        u64 p = bar0 + next;
        for (int i = 0; i < 192; i += 4)
            wr32(p + i, 0);
        wr64(p, d + 1); /* release id */
        wr8(p + 12, 1); /* effect: opaque */
        wr8(p + 13, 3); /* QXL_DRAW_COPY */
        for (int i = 0; i < 3; i++)
            wr32(p + 63 + 4 * i, 0xffffffff);
        wr64(p + 123, slot_bits | image);
        wr32(p + 139, TILE); /* src_area bottom */
        wr32(p + 143, TILE); /* src_area right */
        wr16(p + 147, 1 << 3); /* SPICE_ROPD_OP_PUT */
        drawables[d] = next;
    }
}

static void place_draw(int round)
{
    u64 p = bar0 + drawables[round % POOL];
    i32 x = (round * TILE) % WIDTH, y = ((round * TILE) / WIDTH * TILE) % HEIGHT;
    wr32(p + 31, y);
    wr32(p + 35, x);
    wr32(p + 39, y + TILE);
    wr32(p + 43, x + TILE);
    wr32(ram + RAM_UPDATE_AREA, y);
    wr32(ram + RAM_UPDATE_AREA + 4, x);
    wr32(ram + RAM_UPDATE_AREA + 8, y + TILE);
    wr32(ram + RAM_UPDATE_AREA + 12, x + TILE);
    wr32(ram + RAM_UPDATE_SURFACE, 0);

    u64 ring = ram + RAM_CMD_RING;
    u32 prod = hdr32(RAM_CMD_RING + RING_PROD);
    if (prod - hdr32(RAM_CMD_RING + RING_CONS) >= 32)
        fail("command ring full, prod", prod);
    u64 item = ring + RING_ITEMS + 16 * (prod & 31);
    wr64(item, slot_bits | drawables[round % POOL]);
    wr32(item + 8, 1); /* QXL_CMD_DRAW */
    wr32(ring + RING_PROD, prod + 1);
}

static u64 notify_samples[ROUNDS], irq_samples[ROUNDS];

static void phase_draws(void)
{
    for (int r = 0; r < ROUNDS; r++) {
        place_draw(r);
        notify_samples[r] = timed_out(io + IO_NOTIFY_CMD, 0);

        u32 before = irq_count;
        samples[r] = timed_out(io + IO_UPDATE_AREA_ASYNC, 0);
        wait_irq(before);
        u32 pending = take_pending();
        if (pending & 8) /* QXL_INTERRUPT_ERROR */
            fail("device reported an error, pending", pending);
        irq_samples[r] = timed_out(io + IO_UPDATE_IRQ, 0);

        /* Hand every released resource straight back: the pool is reused round-robin. */
        wr32(ram + RAM_RELEASE_RING + RING_CONS, hdr32(RAM_RELEASE_RING + RING_PROD));
    }
    report("update-area-async", ROUNDS);
    for (int r = 0; r < ROUNDS; r++)
        samples[r] = notify_samples[r];
    report("notify-cmd", ROUNDS);
    for (int r = 0; r < ROUNDS; r++)
        samples[r] = irq_samples[r];
    report("update-irq", ROUNDS);
}

/* Draws until a byte arrives on COM1: the load under which the host times its control API. */
static void phase_load(void)
{
    puts_("QB-LOAD-START\n");
    u64 rounds = 0;
    while (!(inb(0x3fd) & 1)) {
        place_draw((int)(rounds % 100000));
        outb(io + IO_NOTIFY_CMD, 0);
        u32 before = irq_count;
        outb(io + IO_UPDATE_AREA_ASYNC, 0);
        wait_irq(before);
        take_pending();
        outb(io + IO_UPDATE_IRQ, 0);
        wr32(ram + RAM_RELEASE_RING + RING_CONS, hdr32(RAM_RELEASE_RING + RING_PROD));
        rounds++;
    }
    inb(0x3f8);
    puts_("QB-LOAD-END ");
    putu(rounds);
    putc_('\n');
}

void cmain(void)
{
    puts_("QB-START\n");
    phase_tsc();
    phase_port("bare-exit", BARE_EXIT_PORT);

    map_high();
    if (rd32(ECAM) == 0xffffffff) {
        /* The benchmark's bare VM: no PCI, just the ioeventfd baseline. */
        phase_port("bare-ioevt", BARE_IOEVT_PORT);
    } else {
        setup_idt();
        pci_setup();
        device_setup();
        build_draws();
        phase_draws();
        phase_load();
    }
    /* Halted with interrupts off, the guest is idle until the host stops the VM. */
    puts_("QB-DONE\n");
    for (;;)
        __asm__ volatile("cli; hlt");
}

__asm__(".globl _start\n"
        "_start:\n"
        "  lea stack_top(%rip),%rsp\n"
        "  call cmain\n"
        "1: hlt\n"
        "  jmp 1b\n"
        ".bss\n"
        ".balign 16\n"
        ".space 65536\n"
        "stack_top:\n"
        ".text\n");
