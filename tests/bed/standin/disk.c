/* disk.c -- dispatch from the disk_* API to the raw or VMDK backend, and
 * the helpers both backends share (see disk.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk.h"

#define SECTOR VIXDISKLIB_SECTOR_SIZE

VixError disk_open_errno(int err)
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

/* A full disk is reported specially, everything else is a host file error
 * (VDDK's "disk I/O" codes are about the disk library state, not host
 * errors). */
VixError disk_io_errno(int err)
{
  if (err == ENOSPC || err == EDQUOT)
    return VIX_E_DISK_FULL;
  if (err == ENOMEM)
    return VIX_E_OUT_OF_MEMORY;
  return VIX_E_FILE_ERROR;
}

VixError disk_pread(int fd, void *buf, size_t len, uint64_t off)
{
  char *p = buf;

  while (len > 0) {
    ssize_t r = pread(fd, p, len, off);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return disk_io_errno(errno);
    }
    if (r == 0) {             /* past the end of the file: zeros */
      memset(p, 0, len);
      break;
    }
    p += r;
    len -= r;
    off += r;
  }
  return VIX_OK;
}

VixError disk_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
  const char *p = buf;

  while (len > 0) {
    ssize_t r = pwrite(fd, p, len, off);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return disk_io_errno(errno);
    }
    p += r;
    len -= r;
    off += r;
  }
  return VIX_OK;
}

VixError disk_fsync(int fd)
{
  if (fdatasync(fd) == -1 && fsync(fd) == -1)
    return VIX_E_FILE_ERROR;
  return VIX_OK;
}

int blocks_add(struct fv_blocks *b, uint64_t off, uint64_t len)
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

VixError blocks_to_list(struct fv_blocks *b, VixDiskLibBlockList **out)
{
  VixDiskLibBlockList *list;

  list = malloc(offsetof(VixDiskLibBlockList, blocks) +
                (b->n ? b->n : 1) * sizeof(VixDiskLibBlock));
  if (list) {
    list->numBlocks = b->n;
    if (b->n)
      memcpy(list->blocks, b->v, b->n * sizeof(VixDiskLibBlock));
    *out = list;
  }
  free(b->v);
  *b = (struct fv_blocks){ 0 };
  return list ? VIX_OK : VIX_E_OUT_OF_MEMORY;
}

/* ---- dispatch ---- */

/* First bytes of every VMDK flavour: hosted sparse ("KDMV"), VMFS sparse
 * ("COWD") or a text descriptor. */
static bool looks_like_vmdk(int fd)
{
  char head[64] = { 0 };
  ssize_t r = pread(fd, head, sizeof head - 1, 0);

  if (r < 4)
    return false;
  return memcmp(head, "KDMV", 4) == 0 || memcmp(head, "COWD", 4) == 0 ||
         strncmp(head, "# Disk DescriptorFile", 21) == 0;
}

VixError disk_open(struct fv_disk *d, const char *file, uint32_t flags)
{
  bool readonly = flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY;
  VixError err;
  int fd;

  memset(d, 0, sizeof *d);
  d->fd = -1;
  d->readonly = readonly;
  d->info.adapter_type = 2;       /* BusLogic: VDDK's default */
  d->info.num_links = 1;
  fd = open(file, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd == -1)
    return disk_open_errno(errno);
  /* A .vmdk name or VMDK content is parsed as VMDK (and must be valid);
   * anything else is served raw. */
  if (vmdk_is_vmdk_name(file) || looks_like_vmdk(fd)) {
    close(fd);
    d->kind = DISK_VMDK;
    err = vmdk_open(d, file, flags);
  } else {
    d->kind = DISK_RAW;
    err = raw_open(d, fd);
  }
  /* Only writes are tracked, as ESXi does. */
  if (err == VIX_OK && !readonly && (err = ctk_open(file, &d->ctk)) != VIX_OK)
    disk_close(d);
  return err;
}

void disk_close(struct fv_disk *d)
{
  ctk_close(d->ctk);
  d->ctk = NULL;
  if (d->kind == DISK_VMDK && d->vmdk)
    vmdk_close(d->vmdk);
  d->vmdk = NULL;
  if (d->fd >= 0)
    close(d->fd);
  d->fd = -1;
  free(d->info.uuid);
  free(d->info.parent_hint);
  d->info.uuid = d->info.parent_hint = NULL;
}

VixError disk_read(const struct fv_disk *d, uint64_t start, uint64_t count,
                   void *buf)
{
  if (d->kind == DISK_VMDK)
    return vmdk_read(d->vmdk, start, count, buf);
  if (d->zero_device) {
    memset(buf, 0, count * SECTOR);
    return VIX_OK;
  }
  return disk_pread(d->fd, buf, count * SECTOR, start * SECTOR);
}

VixError disk_write(const struct fv_disk *d, uint64_t start, uint64_t count,
                    const void *buf)
{
  VixError err;

  if (d->kind == DISK_VMDK)
    err = vmdk_write(d->vmdk, start, count, buf);
  else if (d->zero_device)
    err = VIX_OK;
  else
    err = disk_pwrite(d->fd, buf, count * SECTOR, start * SECTOR);
  return err == VIX_OK ? ctk_record(d->ctk, start, count) : err;
}

VixError disk_flush(const struct fv_disk *d)
{
  VixError err;

  if (d->readonly)
    return VIX_OK;
  if (d->kind == DISK_VMDK)
    err = vmdk_flush(d->vmdk);
  else
    err = d->zero_device ? VIX_OK : disk_fsync(d->fd);
  return err == VIX_OK ? ctk_flush(d->ctk) : err;
}

VixError disk_query_allocated(const struct fv_disk *d, uint64_t start,
                              uint64_t count, uint64_t chunk,
                              VixDiskLibBlockList **out)
{
  struct fv_blocks b = { 0 };
  VixError err;

  err = d->kind == DISK_VMDK
        ? vmdk_query_allocated(d->vmdk, start, count, chunk, &b)
        : raw_query_allocated(d, start, count, chunk, &b);
  if (err != VIX_OK) {
    free(b.v);
    return err;
  }
  return blocks_to_list(&b, out);
}

/* VDDK always creates a VMDK, whatever the file is called. */
VixError disk_create(const char *file, const VixDiskLibCreateParams *cp)
{
  return vmdk_create(file, cp);
}
