/* disk_raw.c -- raw image backend (see disk.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk.h"

#define SECTOR VIXDISKLIB_SECTOR_SIZE

/* Map an errno from open() to the code real VDDK reports. */
static VixError open_errno_to_vix(int err)
{
  switch (err) {
  case ENOENT:
  case ENOTDIR:
    return VIX_E_FILE_NOT_FOUND;
  case EACCES:
  case EPERM:
    return VIX_E_FILE_ACCESS_ERROR;
  case EROFS:
    return VIX_E_FILE_READ_ONLY;
  case EEXIST:
    return VIX_E_FILE_ALREADY_EXISTS;
  case ENOMEM:
    return VIX_E_OUT_OF_MEMORY;
  default:
    return VIX_E_FILE_ERROR;
  }
}

/* Errors during I/O: a full disk is reported specially, everything else is
 * a host file error (VDDK's "disk I/O" codes are about the disk library
 * state, not host errors). */
static VixError io_errno_to_vix(int err)
{
  if (err == ENOSPC || err == EDQUOT)
    return VIX_E_DISK_FULL;
  if (err == ENOMEM)
    return VIX_E_OUT_OF_MEMORY;
  return VIX_E_FILE_ERROR;
}

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

VixError disk_open(struct fv_disk *d, const char *file, bool readonly)
{
  struct stat st;
  VixError err;

  memset(d, 0, sizeof *d);
  d->readonly = readonly;
  d->fd = open(file, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (d->fd == -1)
    return open_errno_to_vix(errno);
  if (fstat(d->fd, &st) == -1) {
    err = VIX_E_FILE_ERROR;
    goto fail;
  }
  err = size_of(d, &st);
  if (err != VIX_OK)
    goto fail;
  return VIX_OK;

fail:
  close(d->fd);
  d->fd = -1;
  return err;
}

void disk_close(struct fv_disk *d)
{
  if (d->fd >= 0)
    close(d->fd);
  d->fd = -1;
}

VixError disk_read(const struct fv_disk *d, uint64_t start, uint64_t count,
                   void *buf)
{
  char *p = buf;
  size_t left = count * SECTOR;
  off_t off = start * SECTOR;

  if (d->zero_device) {
    memset(buf, 0, left);
    return VIX_OK;
  }
  while (left > 0) {
    ssize_t r = pread(d->fd, p, left, off);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return io_errno_to_vix(errno);
    }
    if (r == 0) {             /* file shrank under us: rest reads as zero */
      memset(p, 0, left);
      break;
    }
    p += r;
    left -= r;
    off += r;
  }
  return VIX_OK;
}

VixError disk_write(const struct fv_disk *d, uint64_t start, uint64_t count,
                    const void *buf)
{
  const char *p = buf;
  size_t left = count * SECTOR;
  off_t off = start * SECTOR;

  if (d->zero_device)
    return VIX_OK;
  while (left > 0) {
    ssize_t r = pwrite(d->fd, p, left, off);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return io_errno_to_vix(errno);
    }
    p += r;
    left -= r;
    off += r;
  }
  return VIX_OK;
}

VixError disk_flush(const struct fv_disk *d)
{
  if (d->readonly || d->zero_device)
    return VIX_OK;
  if (fdatasync(d->fd) == -1 && fsync(d->fd) == -1)
    return VIX_E_FILE_ERROR;
  return VIX_OK;
}

/* ---- allocation map ---- */

/* Growing array of blocks; adjacent allocated chunks are merged. */
struct blocks {
  VixDiskLibBlock *v;
  size_t n, cap;
};

static int blocks_add(struct blocks *b, uint64_t off, uint64_t len)
{
  if (b->n > 0 && b->v[b->n - 1].offset + b->v[b->n - 1].length == off) {
    b->v[b->n - 1].length += len;
    return 0;
  }
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 16;
    VixDiskLibBlock *v = realloc(b->v, cap * sizeof *v);
    if (!v)
      return -1;
    b->v = v;
    b->cap = cap;
  }
  b->v[b->n].offset = off;
  b->v[b->n].length = len;
  b->n++;
  return 0;
}

/* Walk the data segments of the file with SEEK_DATA/SEEK_HOLE and add
 * every chunk touching data.  Returns 1 if the file system cannot tell
 * (caller then reports everything allocated), 0 on success, -1 on ENOMEM. */
static int scan_data(const struct fv_disk *d, uint64_t start, uint64_t count,
                     uint64_t chunk, struct blocks *b)
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

static VixError blocks_to_list(struct blocks *b, VixDiskLibBlockList **out)
{
  VixDiskLibBlockList *list;

  list = malloc(offsetof(VixDiskLibBlockList, blocks) +
                (b->n ? b->n : 1) * sizeof(VixDiskLibBlock));
  if (!list)
    return VIX_E_OUT_OF_MEMORY;
  list->numBlocks = b->n;
  if (b->n)
    memcpy(list->blocks, b->v, b->n * sizeof(VixDiskLibBlock));
  *out = list;
  return VIX_OK;
}

VixError disk_query_allocated(const struct fv_disk *d, uint64_t start,
                              uint64_t count, uint64_t chunk,
                              VixDiskLibBlockList **out)
{
  struct blocks b = { 0 };
  int r = 1;
  VixError err;

  if (!d->zero_device)
    r = scan_data(d, start, count, chunk, &b);
  if (r == 1) {                 /* unknown: everything is allocated */
    b.n = 0;
    r = blocks_add(&b, start, count);
  }
  err = r == -1 ? VIX_E_OUT_OF_MEMORY : blocks_to_list(&b, out);
  free(b.v);
  return err;
}

VixError disk_create(const char *file, const VixDiskLibCreateParams *cp)
{
  int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  VixError err = VIX_OK;

  if (fd == -1)
    return open_errno_to_vix(errno);
  if (ftruncate(fd, (off_t)(cp->capacity * SECTOR)) == -1) {
    err = io_errno_to_vix(errno);
    unlink(file);
  }
  close(fd);
  return err;
}
