/* disk_raw.c -- raw image backend: one byte of file per byte of disk. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk.h"

#define SECTOR VIXDISKLIB_SECTOR_SIZE

static VixError size_of(struct fv_disk *d, const struct stat *st)
{
  uint64_t bytes;

  if (S_ISCHR(st->st_mode)) {
    d->zero_device = true;
    d->capacity = FV_ZERO_DEVICE_SECTORS;
    return VIX_OK;
  }
  if (S_ISBLK(st->st_mode)) {
    if (ioctl(d->fd, BLKGETSIZE64, &bytes) == -1)
      return VIX_E_FILE_ERROR;
  } else if (S_ISREG(st->st_mode)) {
    bytes = st->st_size;
  } else {
    return VIX_E_FILE_ERROR;   /* directory, fifo, ... */
  }
  d->capacity = bytes / SECTOR;
  return VIX_OK;
}

VixError raw_open(struct fv_disk *d, int fd)
{
  struct stat st;
  VixError err;

  d->fd = fd;
  err = fstat(fd, &st) == -1 ? VIX_E_FILE_ERROR : size_of(d, &st);
  if (err != VIX_OK) {
    close(fd);
    d->fd = -1;
  }
  return err;
}

/* Walk the data segments of the file with SEEK_DATA/SEEK_HOLE and add
 * every chunk touching data.  Returns 1 if the file system cannot tell
 * (caller then reports everything allocated), 0 on success, -1 on ENOMEM. */
static int scan_data(const struct fv_disk *d, uint64_t start, uint64_t count,
                     uint64_t chunk, struct fv_blocks *b)
{
  const uint64_t base = start * SECTOR, end = (start + count) * SECTOR;
  const uint64_t csize = chunk * SECTOR;
  uint64_t pos = base;

  while (pos < end) {
    off_t data = lseek(d->fd, pos, SEEK_DATA);
    if (data == -1)
      return errno == ENXIO ? 0 : 1;   /* ENXIO: no more data */
    if ((uint64_t)data >= end)
      break;
    off_t hole = lseek(d->fd, data, SEEK_HOLE);
    if (hole == -1)
      return 1;
    uint64_t first = ((uint64_t)data - base) / csize;
    uint64_t stop = (uint64_t)hole < end ? (uint64_t)hole : end;
    uint64_t last = (stop - base + csize - 1) / csize;   /* exclusive */
    if (blocks_add(b, start + first * chunk, (last - first) * chunk) == -1)
      return -1;
    pos = base + last * csize;
  }
  return 0;
}

VixError raw_query_allocated(const struct fv_disk *d, uint64_t start,
                             uint64_t count, uint64_t chunk,
                             struct fv_blocks *b)
{
  int r = 1;

  if (!d->zero_device)
    r = scan_data(d, start, count, chunk, b);
  if (r == 1) {                 /* unknown: everything is allocated */
    b->n = 0;
    r = blocks_add(b, start, count);
  }
  return r == -1 ? VIX_E_OUT_OF_MEMORY : VIX_OK;
}
