/* disk.h -- the disk-format layer behind a handle.
 *
 * Today every disk is a raw image (one byte of file per byte of disk).
 * The API layer only talks to a disk through these functions, so a later
 * VMDK implementation can slot in here without touching the VixDiskLib
 * emulation.  Range and read-only checks are done by the caller.
 */
#ifndef FAKEVDDK_DISK_H
#define FAKEVDDK_DISK_H

#include <stdbool.h>
#include <stdint.h>

#include "vixabi.h"

/* Character devices such as /dev/null act as a 1024-sector zero disk,
 * like the upstream test's "file=/dev/null". */
#define FV_ZERO_DEVICE_SECTORS 1024

struct fv_disk {
  int fd;
  bool readonly;
  bool zero_device;   /* reads zeros, writes are discarded */
  uint64_t capacity;  /* sectors */
};

VixError disk_open(struct fv_disk *d, const char *file, bool readonly);
void disk_close(struct fv_disk *d);
VixError disk_read(const struct fv_disk *d, uint64_t start, uint64_t count,
                   void *buf);
VixError disk_write(const struct fv_disk *d, uint64_t start, uint64_t count,
                    const void *buf);
VixError disk_flush(const struct fv_disk *d);
/* Chunk-granular allocation map of [start, start+count) (all in sectors,
 * already validated).  Allocates the block list with malloc. */
VixError disk_query_allocated(const struct fv_disk *d, uint64_t start,
                              uint64_t count, uint64_t chunk,
                              VixDiskLibBlockList **out);
VixError disk_create(const char *file, const VixDiskLibCreateParams *cp);

#endif
