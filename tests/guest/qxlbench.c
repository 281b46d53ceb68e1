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
// Marker mode, for the SPICE benchmark: only when the word `qb.markers` is on the kernel
// command line the vmm hands over (boot_params.hdr.cmd_line_ptr, the zero page being in %rsi
// at entry). Then every MARKER_EVERY-th load draw copies a marker tile whose first four pixels
// are MARKER_TAG and the guest's TSC, 24 bits per pixel from the low bits up (SPICE carries
// pixels as xRGB, so no top byte is used; normal tiles start with 0xff8000, never the tag).
// The TSC is read after the draw is laid out and just before it is put on the command ring,
// which must come first: the device may render it as soon as it is on the ring. To let the
// host relate the guest's TSC to its own, the guest prints CAL_LINES lines `QB-CAL <tsc>`
// before `QB-LOAD-START tsc=<tsc>`, and again after `QB-LOAD-END` before
// `QB-CAL-END tsc=<tsc>`: each line's number is the TSC read just before the previous line's
// newline was written. Without the word, none of this happens.
//
// Reboot mode, for tests of guest reboots: with the word `qb.reboot`, the guest sets the
// device up, covers the screen with tiles, prints `QB-REBOOT` and resets the machine through
// the i8042 (command 0xfe), as Linux's `reboot` does; every boot does the same.
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

/* Marker mode: a draw in this many carries the TSC; see the header. */
#define MARKER_WORD "qb.markers"
#define REBOOT_WORD "qb.reboot"
#define MARKER_EVERY 32
#define MARKER_TAG 0x3c5aa5
#define CAL_LINES 16
#define BOOT_CMDLINE_PTR 0x228
#define CMDLINE_MAX 2048
/* The boot page tables map the first 1 GiB; a command line elsewhere is ignored. */
#define IDENTITY_MAPPED (1UL << 30)

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

/* ---- marker mode ----------------------------------------------------------------------- */

static int markers, reboot;

/* Whether `word` is one of the space-separated words of the NUL-terminated `line`. */
static int has_word(const char *line, const char *word)
{
    for (int i = 0; i < CMDLINE_MAX && line[i];) {
        int n = 0;
        while (word[n] && i + n < CMDLINE_MAX && line[i + n] == word[n])
            n++;
        char end = i + n < CMDLINE_MAX ? line[i + n] : 0;
        if (!word[n] && (end == ' ' || end == 0))
            return 1;
        while (i < CMDLINE_MAX && line[i] && line[i] != ' ')
            i++;
        while (i < CMDLINE_MAX && line[i] == ' ')
            i++;
    }
    return 0;
}

/* Turns marker mode on when the kernel command line holds MARKER_WORD. */
static void read_cmdline(u64 zero_page)
{
    if (zero_page == 0 || zero_page + 4096 > IDENTITY_MAPPED)
        return;
    u64 cmdline = rd32(zero_page + BOOT_CMDLINE_PTR);
    if (cmdline == 0 || cmdline + CMDLINE_MAX > IDENTITY_MAPPED)
        return;
    markers = has_word((const char *)cmdline, MARKER_WORD);
    reboot = has_word((const char *)cmdline, REBOOT_WORD);
}

/*
 * Prints CAL_LINES lines `QB-CAL <tsc>`, then `<last> tsc=<tsc>`; each number is the TSC read
 * just before the previous line's newline (0 on the first line).
 */
static void calibrate(const char *last)
{
    u64 before_newline = 0;
    for (int i = 0; i < CAL_LINES; i++) {
        puts_("QB-CAL ");
        putu(before_newline);
        before_newline = rdtsc();
        putc_('\n');
    }
    puts_(last);
    puts_(" tsc=");
    putu(before_newline);
    putc_('\n');
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
/* Marker mode: the marker tile's drawable and the address of its bitmap's first pixel. */
static u64 marker_drawable, marker_pixels;

/* Writes a data chunk of the tile's pixels at BAR0 offset `chunk` and, behind it, the image
 * that points at it; returns the image's offset. */
static u64 build_image(u64 chunk)
{
    u64 image = chunk + 32 + TILE * TILE * 4;
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
    return image;
}

/* Writes a DRAW_COPY of `image` with release id `id` at BAR0 offset `at`. */
static void build_drawable(u64 at, u64 id, u64 image)
{
    u64 p = bar0 + at;
    for (int i = 0; i < 192; i += 4)
        wr32(p + i, 0);
    wr64(p, id); /* release id */
    wr8(p + 12, 1); /* effect: opaque */
    wr8(p + 13, 3); /* QXL_DRAW_COPY */
    for (int i = 0; i < 3; i++)
        wr32(p + 63 + 4 * i, 0xffffffff);
    wr64(p + 123, slot_bits | image);
    wr32(p + 139, TILE); /* src_area bottom */
    wr32(p + 143, TILE); /* src_area right */
    wr16(p + 147, 1 << 3); /* SPICE_ROPD_OP_PUT */
}

static void build_draws(void)
{
    u64 area = rd32(rom + ROM_SURFACE0_AREA);
    u64 image = build_image(area), next = image + 64;
    for (int d = 0; d < POOL; d++, next += 256) {
        build_drawable(next, d + 1, image);
        drawables[d] = next;
    }
    if (!markers)
        return;

    u64 marker_image = build_image(next);
    marker_pixels = bar0 + next + 20;
    marker_drawable = marker_image + 64;
    build_drawable(marker_drawable, POOL + 1, marker_image);
}

/* Lays out `drawable` at the place of draw number `round`, and the update area with it. */
static void lay_out(u64 drawable, int round)
{
    u64 p = bar0 + drawable;
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
}

/* Puts `drawable` on the command ring (the device may take it from then on). */
static void push_draw(u64 drawable)
{
    u64 ring = ram + RAM_CMD_RING;
    u32 prod = hdr32(RAM_CMD_RING + RING_PROD);
    if (prod - hdr32(RAM_CMD_RING + RING_CONS) >= 32)
        fail("command ring full, prod", prod);
    u64 item = ring + RING_ITEMS + 16 * (prod & 31);
    wr64(item, slot_bits | drawable);
    wr32(item + 8, 1); /* QXL_CMD_DRAW */
    wr32(ring + RING_PROD, prod + 1);
}

static void place_draw(int round)
{
    lay_out(drawables[round % POOL], round);
    push_draw(drawables[round % POOL]);
}

/* Like place_draw, with the marker tile stamped with the TSC as late as it can be. */
static void place_marker(int round)
{
    lay_out(marker_drawable, round);
    u64 tsc = rdtsc();
    wr32(marker_pixels, MARKER_TAG);
    wr32(marker_pixels + 4, tsc & 0xffffff);
    wr32(marker_pixels + 8, (tsc >> 24) & 0xffffff);
    wr32(marker_pixels + 12, tsc >> 48);
    push_draw(marker_drawable);
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

/* Notifies the device of the draw just placed, has it rendered, waits for the completion and
 * hands released resources back, untimed. */
static void finish_draw(void)
{
    outb(io + IO_NOTIFY_CMD, 0);
    u32 before = irq_count;
    outb(io + IO_UPDATE_AREA_ASYNC, 0);
    wait_irq(before);
    take_pending();
    outb(io + IO_UPDATE_IRQ, 0);
    wr32(ram + RAM_RELEASE_RING + RING_CONS, hdr32(RAM_RELEASE_RING + RING_PROD));
}

/* Draws until a byte arrives on COM1: the load under which the host times its control API. */
static void phase_load(void)
{
    if (markers)
        calibrate("QB-LOAD-START");
    else
        puts_("QB-LOAD-START\n");
    u64 rounds = 0;
    while (!(inb(0x3fd) & 1)) {
        int round = (int)(rounds % 100000);
        if (markers && rounds % MARKER_EVERY == 0)
            place_marker(round);
        else
            place_draw(round);
        finish_draw();
        rounds++;
    }
    inb(0x3f8);
    puts_("QB-LOAD-END ");
    putu(rounds);
    putc_('\n');
    if (markers)
        calibrate("QB-CAL-END");
}

/* Covers the screen with tiles, then resets the machine as Linux's reboot does. */
static void phase_reboot(void)
{
    for (int round = 0; round < (WIDTH / TILE) * (HEIGHT / TILE); round++) {
        place_draw(round);
        finish_draw();
    }
    puts_("QB-REBOOT\n");
    outb(0x64, 0xfe);
    for (;;)
        __asm__ volatile("cli; hlt");
}

void cmain(u64 zero_page)
{
    read_cmdline(zero_page);
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
        if (reboot)
            phase_reboot();
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
        "  mov %rsi,%rdi\n" /* the zero page, as the Linux boot protocol passes it */
        "  call cmain\n"
        "1: hlt\n"
        "  jmp 1b\n"
        ".bss\n"
        ".balign 16\n"
        ".space 65536\n"
        "stack_top:\n"
        ".text\n");
