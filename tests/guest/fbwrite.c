/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fbwrite: copies a file into the framebuffer through a shared mapping and syncs it.
 *
 * Used by the display tests inside the guest. A write() to /dev/fb0 lands in the DRM
 * fbdev emulation's shadow buffer without marking it damaged, so the display never sees it;
 * writes through mmap() are tracked by deferred I/O, and msync() flushes them at once.
 *
 * Usage: fbwrite FILE [FBDEV]
 */
#include <fcntl.h>
#include <linux/fb.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *dev = argc > 2 ? argv[2] : "/dev/fb0";
	struct fb_fix_screeninfo fix;
	struct stat st;
	unsigned char *fb, *src;
	int in, out;
	size_t len;

	if (argc < 2) {
		fprintf(stderr, "usage: fbwrite FILE [FBDEV]\n");
		return 2;
	}
	in = open(argv[1], O_RDONLY);
	out = open(dev, O_RDWR);
	if (in < 0 || out < 0 || fstat(in, &st) || ioctl(out, FBIOGET_FSCREENINFO, &fix)) {
		perror("fbwrite: open");
		return 1;
	}

	len = (size_t)st.st_size < fix.smem_len ? (size_t)st.st_size : fix.smem_len;
	src = mmap(NULL, len, PROT_READ, MAP_PRIVATE, in, 0);
	fb = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, out, 0);
	if (src == MAP_FAILED || fb == MAP_FAILED) {
		perror("fbwrite: mmap");
		return 1;
	}

	memcpy(fb, src, len);
	if (msync(fb, len, MS_SYNC)) {
		perror("fbwrite: msync");
		return 1;
	}
	munmap(fb, len);
	return 0;
}
