// SPDX-License-Identifier: Apache-2.0
//
// modeset: switches the guest's display mode through DRM's KMS ioctls, the way a desktop's
// xrandr would, for the display tests (the test guest has no X server and no libdrm).
//
//   modeset list              prints "MODES WxH WxH ..." (the first connector's mode list)
//   modeset WxH [WxH ...]     for each: a dumb buffer filled with a pattern, shown with
//                             SETCRTC; prints "MODESET-OK WxH" and waits for a line on stdin,
//                             or "MODESET-NOMODE WxH" / "MODESET-FAILED WxH errno=N"
//   modeset cycle N WxH ...   sets the modes in turn N times without waiting, then prints
//                             "MODESET-CYCLED ok=A failed=B"
//   modeset cycle-busy N WxH ...
//                             the same, while a child process on the same file keeps asking
//                             the driver to update a 64x64 off-screen surface
//                             (DRM_IOCTL_QXL_UPDATE_AREA), so that mode changes meet requests
//                             in flight; the child prints "MODESET-BUSY requests=A failed=B"
//
// The pattern: pixel (x, y) = 0x00RRGGBB with R = x & 0xff, G = y & 0xff, B = 0x5a.
// Closing the device at exit gives the display back to the console.

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qxl-surface.h"

/* The KMS ABI, from the kernel's include/uapi/drm/drm.h and drm_mode.h. */
struct mode_info {
    uint32_t clock;
    uint16_t hdisplay, hsync_start, hsync_end, htotal, hskew;
    uint16_t vdisplay, vsync_start, vsync_end, vtotal, vscan;
    uint32_t vrefresh, flags, type;
    char name[32];
};

struct card_res {
    uint64_t fb_ids, crtc_ids, connector_ids, encoder_ids;
    uint32_t count_fbs, count_crtcs, count_connectors, count_encoders;
    uint32_t min_width, max_width, min_height, max_height;
};

struct get_connector {
    uint64_t encoders, modes, props, prop_values;
    uint32_t count_modes, count_props, count_encoders;
    uint32_t encoder_id, connector_id, connector_type, connector_type_id, connection;
    uint32_t mm_width, mm_height, subpixel, pad;
};

struct crtc {
    uint64_t set_connectors;
    uint32_t count_connectors, crtc_id, fb_id, x, y, gamma_size, mode_valid;
    struct mode_info mode;
};

struct fb_cmd {
    uint32_t fb_id, width, height, pitch, bpp, depth, handle;
};

struct create_dumb {
    uint32_t height, width, bpp, flags, handle, pitch;
    uint64_t size;
};

struct map_dumb {
    uint32_t handle, pad;
    uint64_t offset;
};

struct fb_dirty {
    uint32_t fb_id, flags, color, num_clips;
    uint64_t clips;
};

#define DRM_RW(nr, type) _IOWR('d', nr, type)
#define IOCTL_GETRESOURCES DRM_RW(0xA0, struct card_res)
#define IOCTL_SETCRTC DRM_RW(0xA2, struct crtc)
#define IOCTL_GETCONNECTOR DRM_RW(0xA7, struct get_connector)
#define IOCTL_ADDFB DRM_RW(0xAE, struct fb_cmd)
#define IOCTL_RMFB DRM_RW(0xAF, uint32_t)
#define IOCTL_DIRTYFB DRM_RW(0xB1, struct fb_dirty)
#define IOCTL_CREATE_DUMB DRM_RW(0xB2, struct create_dumb)
#define IOCTL_MAP_DUMB DRM_RW(0xB3, struct map_dumb)
#define IOCTL_DESTROY_DUMB DRM_RW(0xB4, uint32_t)

#define MAX_MODES 256

static int card;
static uint32_t crtc_id, connector_id;
static struct mode_info modes[MAX_MODES];
static uint32_t mode_count;
/* The framebuffer on screen and its dumb buffer, freed once the next one is shown. */
static uint32_t shown_fb, shown_handle;

static void die(const char *what)
{
    printf("MODESET-ERROR %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Finds the first CRTC and connector and reads the connector's modes. */
static void probe(void)
{
    uint32_t crtcs[16], connectors[16];
    struct card_res res = {0};
    if (ioctl(card, IOCTL_GETRESOURCES, &res))
        die("GETRESOURCES");
    if (res.count_crtcs == 0 || res.count_connectors == 0 || res.count_crtcs > 16 ||
        res.count_connectors > 16) {
        errno = ENODEV;
        die("CRTC/connector count");
    }
    struct card_res ids = {0};
    ids.crtc_ids = (uintptr_t)crtcs;
    ids.connector_ids = (uintptr_t)connectors;
    ids.count_crtcs = res.count_crtcs;
    ids.count_connectors = res.count_connectors;
    if (ioctl(card, IOCTL_GETRESOURCES, &ids))
        die("GETRESOURCES ids");
    crtc_id = crtcs[0];
    connector_id = connectors[0];

    struct get_connector conn = {0};
    conn.connector_id = connector_id;
    if (ioctl(card, IOCTL_GETCONNECTOR, &conn))
        die("GETCONNECTOR");
    mode_count = conn.count_modes < MAX_MODES ? conn.count_modes : MAX_MODES;
    struct get_connector with_modes = {0};
    with_modes.connector_id = connector_id;
    with_modes.count_modes = mode_count;
    with_modes.modes = (uintptr_t)modes;
    if (ioctl(card, IOCTL_GETCONNECTOR, &with_modes))
        die("GETCONNECTOR modes");
}

static struct mode_info *find_mode(unsigned w, unsigned h)
{
    for (uint32_t i = 0; i < mode_count; i++)
        if (modes[i].hdisplay == w && modes[i].vdisplay == h)
            return &modes[i];
    return NULL;
}

/* Shows a pattern in mode w x h; returns 0, or an errno (ENOENT: the mode is not offered). */
static int show(unsigned w, unsigned h)
{
    struct mode_info *mode = find_mode(w, h);
    if (!mode)
        return ENOENT;

    struct create_dumb dumb = {.height = h, .width = w, .bpp = 32};
    if (ioctl(card, IOCTL_CREATE_DUMB, &dumb))
        return errno;
    int err = 0;
    struct fb_cmd fb = {.width = w, .height = h, .pitch = dumb.pitch, .bpp = 32, .depth = 24,
                        .handle = dumb.handle};
    if (ioctl(card, IOCTL_ADDFB, &fb)) {
        err = errno;
        goto destroy;
    }
    struct map_dumb map = {.handle = dumb.handle};
    if (ioctl(card, IOCTL_MAP_DUMB, &map)) {
        err = errno;
        goto rmfb;
    }
    uint8_t *pixels = mmap(NULL, dumb.size, PROT_READ | PROT_WRITE, MAP_SHARED, card, map.offset);
    if (pixels == MAP_FAILED) {
        err = errno;
        goto rmfb;
    }
    for (unsigned y = 0; y < h; y++) {
        uint32_t *row = (uint32_t *)(pixels + (size_t)y * dumb.pitch);
        for (unsigned x = 0; x < w; x++)
            row[x] = (x & 0xff) << 16 | (y & 0xff) << 8 | 0x5a;
    }
    munmap(pixels, dumb.size);

    struct crtc set = {.set_connectors = (uintptr_t)&connector_id, .count_connectors = 1,
                       .crtc_id = crtc_id, .fb_id = fb.fb_id, .mode_valid = 1, .mode = *mode};
    if (ioctl(card, IOCTL_SETCRTC, &set)) {
        err = errno;
        goto rmfb;
    }
    struct fb_dirty dirty = {.fb_id = fb.fb_id};
    ioctl(card, IOCTL_DIRTYFB, &dirty); /* the whole framebuffer; EINVAL-free on qxl */
    if (shown_fb) {
        ioctl(card, IOCTL_RMFB, &shown_fb);
        ioctl(card, IOCTL_DESTROY_DUMB, &shown_handle);
    }
    shown_fb = fb.fb_id;
    shown_handle = dumb.handle;
    return 0;

rmfb:
    ioctl(card, IOCTL_RMFB, &fb.fb_id);
destroy:
    ioctl(card, IOCTL_DESTROY_DUMB, &dumb.handle);
    return err;
}

static volatile sig_atomic_t stop_requests;

static void on_term(int sig)
{
    (void)sig;
    stop_requests = 1;
}

/* The child of cycle-busy: UPDATE_AREA requests until SIGTERM. */
static void keep_requesting(void)
{
    struct sigaction action = {.sa_handler = on_term, .sa_flags = SA_RESTART};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    uint32_t surface;
    if (qxl_surface_alloc(card, &surface))
        die("QXL_ALLOC_SURF");
    long requests = 0, failed = 0;
    while (!stop_requests) {
        if (qxl_surface_update(card, surface))
            failed++;
        requests++;
    }
    printf("MODESET-BUSY requests=%ld failed=%ld\n", requests, failed);
    exit(0);
}

static int parse(const char *arg, unsigned *w, unsigned *h)
{
    return sscanf(arg, "%ux%u", w, h) == 2;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    card = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
    if (card < 0)
        die("open /dev/dri/card0");
    probe();

    if (argc == 2 && !strcmp(argv[1], "list")) {
        printf("MODES");
        for (uint32_t i = 0; i < mode_count; i++)
            printf(" %ux%u", modes[i].hdisplay, modes[i].vdisplay);
        printf("\n");
        return 0;
    }

    int busy = argc >= 4 && !strcmp(argv[1], "cycle-busy");
    if (argc >= 4 && (busy || !strcmp(argv[1], "cycle"))) {
        int rounds = atoi(argv[2]), ok = 0, failed = 0;
        pid_t child = busy ? fork() : 0;
        if (child < 0)
            die("fork");
        if (busy && child == 0)
            keep_requesting();
        for (int r = 0; r < rounds; r++) {
            for (int i = 3; i < argc; i++) {
                unsigned w, h;
                if (!parse(argv[i], &w, &h) || find_mode(w, h) == NULL)
                    continue;
                if (show(w, h) == 0)
                    ok++;
                else
                    failed++;
            }
        }
        if (busy) {
            kill(child, SIGTERM);
            waitpid(child, NULL, 0);
        }
        printf("MODESET-CYCLED ok=%d failed=%d\n", ok, failed);
        return 0;
    }

    char line[64];
    for (int i = 1; i < argc; i++) {
        unsigned w, h;
        if (!parse(argv[i], &w, &h)) {
            printf("MODESET-ERROR bad mode %s\n", argv[i]);
            return 2;
        }
        int err = show(w, h);
        if (err == ENOENT)
            printf("MODESET-NOMODE %ux%u\n", w, h);
        else if (err)
            printf("MODESET-FAILED %ux%u errno=%d\n", w, h, err);
        else
            printf("MODESET-OK %ux%u\n", w, h);
        if (!err && !fgets(line, sizeof line, stdin))
            break;
    }
    return 0;
}
