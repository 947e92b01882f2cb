/* ctk.c -- changed block tracking: every write made through the stand-in
 * is recorded in the disk's change-tracking sidecar, NAME-ctk.vmdk next to
 * NAME.vmdk as ESXi keeps it (format: README.md, "Change tracking").  The
 * sidecar exists only while tracking is enabled (the vCenter simulator in
 * tests/bed/vcsim creates it and answers QueryChangedDiskAreas from it).
 *
 * Each grain of 64 KiB holds the sequence number of the last write that
 * touched it; the header holds the last sequence number given out.  A
 * write takes the next number.  Updates and readers take flock() on the
 * sidecar, so processes (several nbdkit, vcsim) see whole updates; the
 * mutex covers threads sharing one handle (async completions). */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "disk.h"

struct fv_ctk {
  int fd;
  uint32_t grain;               /* bytes */
  pthread_mutex_t lock;
};

/* "dir/NAME.vmdk" -> "dir/NAME-ctk.vmdk"; other names get "-ctk" added. */
static char *ctk_path(const char *disk)
{
  size_t n = strlen(disk);
  char *p;

  if (n > 5 && strcmp(disk + n - 5, ".vmdk") == 0)
    return asprintf(&p, "%.*s-ctk.vmdk", (int)(n - 5), disk) == -1 ? NULL
                                                                     : p;
  return asprintf(&p, "%s-ctk", disk) == -1 ? NULL : p;
}

static bool valid_header(const unsigned char *h, uint32_t *grain)
{
  uint32_t g;

  if (memcmp(h, CTK_MAGIC, 8) != 0)
    return false;
  memcpy(&g, h + CTK_OFF_GRAIN, 4);
  g = le32toh(g);
  if (g < 512 || g % 512 != 0)
    return false;
  *grain = g;
  return true;
}

VixError ctk_open(const char *disk, struct fv_ctk **out)
{
  unsigned char header[CTK_HEADER_USED];
  char *path = ctk_path(disk);
  struct fv_ctk *t;
  uint32_t grain;
  int fd;

  *out = NULL;
  if (!path)
    return VIX_E_OUT_OF_MEMORY;
  fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd == -1) {
    int err = errno;
    free(path);
    /* No sidecar: tracking is off for this disk. */
    return err == ENOENT ? VIX_OK : disk_open_errno(err);
  }
  if (pread(fd, header, sizeof header, 0) != (ssize_t)sizeof header ||
      !valid_header(header, &grain)) {
    fprintf(stderr, "fakevddk: %s: not a change-tracking file\n", path);
    free(path);
    close(fd);
    return VIX_E_FILE_ERROR;
  }
  free(path);
  if (!(t = calloc(1, sizeof *t))) {
    close(fd);
    return VIX_E_OUT_OF_MEMORY;
  }
  t->fd = fd;
  t->grain = grain;
  pthread_mutex_init(&t->lock, NULL);
  *out = t;
  return VIX_OK;
}

/* Store SEQ for grains [first, last], a bounded buffer at a time. */
static VixError store_grains(int fd, uint64_t first, uint64_t last,
                             uint64_t seq)
{
  uint64_t buf[512];
  uint64_t le = htole64(seq);

  for (size_t i = 0; i < sizeof buf / sizeof buf[0]; i++)
    buf[i] = le;
  while (first <= last) {
    uint64_t n = last - first + 1;
    VixError err;

    if (n > sizeof buf / sizeof buf[0])
      n = sizeof buf / sizeof buf[0];
    err = disk_pwrite(fd, buf, n * sizeof buf[0],
                      CTK_GRAINS_OFFSET + first * sizeof buf[0]);
    if (err != VIX_OK)
      return err;
    first += n;
  }
  return VIX_OK;
}

/* The grains come first, then the new sequence number: a reader holding
 * a changeId never misses a write numbered after it. */
static VixError record_locked(struct fv_ctk *t, uint64_t first, uint64_t last)
{
  uint64_t seq;
  VixError err = disk_pread(t->fd, &seq, sizeof seq, CTK_OFF_SEQ);

  if (err != VIX_OK)
    return err;
  seq = htole64(le64toh(seq) + 1);
  err = store_grains(t->fd, first, last, le64toh(seq));
  if (err == VIX_OK)
    err = disk_pwrite(t->fd, &seq, sizeof seq, CTK_OFF_SEQ);
  return err;
}

VixError ctk_record(struct fv_ctk *t, uint64_t start, uint64_t count)
{
  uint64_t first, last;
  VixError err;

  if (!t || count == 0)
    return VIX_OK;
  first = start * VIXDISKLIB_SECTOR_SIZE / t->grain;
  last = ((start + count) * VIXDISKLIB_SECTOR_SIZE - 1) / t->grain;
  pthread_mutex_lock(&t->lock);
  if (flock(t->fd, LOCK_EX) == -1) {
    pthread_mutex_unlock(&t->lock);
    return VIX_E_FILE_ERROR;
  }
  err = record_locked(t, first, last);
  flock(t->fd, LOCK_UN);
  pthread_mutex_unlock(&t->lock);
  return err;
}

VixError ctk_flush(struct fv_ctk *t)
{
  return t ? disk_fsync(t->fd) : VIX_OK;
}

void ctk_close(struct fv_ctk *t)
{
  if (!t)
    return;
  close(t->fd);
  pthread_mutex_destroy(&t->lock);
  free(t);
}
