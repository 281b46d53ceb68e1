// SPDX-License-Identifier: Apache-2.0
//
// The qxl driver's own ioctls that the guest tools use: an off-screen surface, and updates
// of it (one QXL_IO_UPDATE_AREA_ASYNC port write each). From the kernel's
// include/uapi/drm/qxl_drm.h; the test guest has no libdrm.

#ifndef QXL_SURFACE_H
#define QXL_SURFACE_H

#include <stdint.h>
#include <sys/ioctl.h>

struct qxl_alloc_surf {
    uint32_t format, width, height;
    int32_t stride;
    uint32_t handle, pad;
};

struct qxl_update_area {
    uint32_t handle, top, left, bottom, right, pad;
};

#define DRM_IOCTL_QXL_ALLOC_SURF _IOWR('d', 0x40 + 0x06, struct qxl_alloc_surf)
#define DRM_IOCTL_QXL_UPDATE_AREA _IOW('d', 0x40 + 0x03, struct qxl_update_area)

/* SPICE_SURFACE_FMT_32_xRGB; the surfaces are 64x64. */
#define QXL_SURFACE_FORMAT 32
#define QXL_SURFACE_SIZE 64

/* Allocates the surface; the driver creates it on the device at its first update.
 * Returns 0 and its handle, or -1 with errno. */
static inline int qxl_surface_alloc(int card, uint32_t *handle)
{
    struct qxl_alloc_surf surface = {
        .format = QXL_SURFACE_FORMAT,
        .width = QXL_SURFACE_SIZE,
        .height = QXL_SURFACE_SIZE,
        .stride = QXL_SURFACE_SIZE * 4,
    };
    if (ioctl(card, DRM_IOCTL_QXL_ALLOC_SURF, &surface))
        return -1;
    *handle = surface.handle;
    return 0;
}

/* Asks the driver to bring the whole surface up to date. Returns ioctl's result. */
static inline int qxl_surface_update(int card, uint32_t handle)
{
    struct qxl_update_area area = {
        .handle = handle, .bottom = QXL_SURFACE_SIZE, .right = QXL_SURFACE_SIZE,
    };
    return ioctl(card, DRM_IOCTL_QXL_UPDATE_AREA, &area);
}

#endif
