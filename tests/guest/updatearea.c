// SPDX-License-Identifier: Apache-2.0
//
// updatearea: asks the qxl driver to update a 64x64 off-screen surface (DRM_IOCTL_QXL_ALLOC_SURF;
// the driver creates it on the device at the first request) N times with its
// DRM_IOCTL_QXL_UPDATE_AREA (one QXL_IO_UPDATE_AREA_ASYNC port write each), while an interval
// timer sends SIGALRM every INTERVAL_US microseconds, so that signals land while the driver
// waits for the device's completion interrupt (field case C22, driver side).
//
//   updatearea N INTERVAL_US
//
// The handler is installed with SA_RESTART, as X servers install theirs: an interrupted call
// that the driver reports as -ERESTARTSYS is restarted by the kernel without the program
// seeing it. Prints "UPDATE-AREA ok=A eintr=B failed=C signals=S ms=T": A calls returned 0,
// B returned EINTR, C failed otherwise (the first such errno is printed too), in T ms.
// INTERVAL_US 0 sends no signal. A driver that
// writes each request once makes the device count exactly A UPDATE_AREA_ASYNC writes.

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "qxl-surface.h"

static volatile sig_atomic_t signals;

static void on_alarm(int sig)
{
    (void)sig;
    signals++;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: updatearea N INTERVAL_US\n");
        return 2;
    }
    long n = atol(argv[1]), interval = atol(argv[2]);

    int fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        printf("UPDATE-AREA-ERROR open /dev/dri/card0: %s\n", strerror(errno));
        return 1;
    }
    uint32_t surface;
    if (qxl_surface_alloc(fd, &surface)) {
        printf("UPDATE-AREA-ERROR alloc surface: %s\n", strerror(errno));
        return 1;
    }

    struct sigaction action = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigemptyset(&action.sa_mask);
    sigaction(SIGALRM, &action, NULL);
    struct itimerval timer = {
        .it_interval = {.tv_usec = interval},
        .it_value = {.tv_usec = interval},
    };
    setitimer(ITIMER_REAL, &timer, NULL);

    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long ok = 0, eintr = 0, failed = 0;
    int first_errno = 0;
    for (long i = 0; i < n; i++) {
        if (qxl_surface_update(fd, surface) == 0) {
            ok++;
        } else if (errno == EINTR) {
            eintr++;
        } else {
            if (!first_errno)
                first_errno = errno;
            failed++;
        }
    }

    clock_gettime(CLOCK_MONOTONIC, &end);
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
    long ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
    printf("UPDATE-AREA ok=%ld eintr=%ld failed=%ld signals=%ld ms=%ld", ok, eintr, failed,
           (long)signals, ms);
    if (first_errno)
        printf(" errno=%d", first_errno);
    printf("\n");
    return failed ? 1 : 0;
}
