/* disk.h -- the disk-format layer behind a handle.
 *
 * A disk is either a raw image (one byte of file per byte of disk:
 * disk_raw.c) or a VMDK (descriptor plus extents, possibly a chain of
 * delta links: vmdk*.c).  The API layer only talks to a disk through the
 * disk_* functions below, which dispatch on the kind.  Range and
 * read-only checks are done by the caller.
 */
#ifndef FAKEVDDK_DISK_H
#define FAKEVDDK_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vixabi.h"

/* Character devices such as /dev/null act as a 1024-sector zero disk,
 * like the upstream test's "file=/dev/null". */
#define FV_ZERO_DEVICE_SECTORS 1024

enum fv_disk_kind { DISK_RAW, DISK_VMDK };

/* What GetInfo reports about the disk itself (config may override). */
struct fv_disk_info {
  int adapter_type;             /* VixDiskLibAdapterType */
  int num_links;
  bool geometry_known;          /* else derived from the capacity */
  VixDiskLibGeometry bios_geo, phys_geo;
  char *uuid;                   /* NULL: none */
  bool uuid_known;              /* false: the stand-in hashes the path */
  char *parent_hint;            /* NULL: none */
};

struct vmdk_chain;
struct fv_ctk;

struct fv_disk {
  enum fv_disk_kind kind;
  bool readonly;
  uint64_t capacity;            /* sectors */
  struct fv_disk_info info;
  /* raw */
  int fd;
  bool zero_device;             /* reads zeros, writes are discarded */
  /* vmdk */
  struct vmdk_chain *vmdk;
  /* change tracking (writable handles of tracked disks), else NULL */
  struct fv_ctk *ctk;
};

VixError disk_open(struct fv_disk *d, const char *file, uint32_t flags);
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

/* ---- shared by the backends (disk.c) ---- */

/* Map an errno from open() / from I/O to the code real VDDK reports. */
VixError disk_open_errno(int err);
VixError disk_io_errno(int err);
/* Whole-buffer pread/pwrite; a short read past EOF fills with zeros. */
VixError disk_pread(int fd, void *buf, size_t len, uint64_t off);
VixError disk_pwrite(int fd, const void *buf, size_t len, uint64_t off);
VixError disk_fsync(int fd);

/* Growing list of allocated blocks; adjacent ones are merged. */
struct fv_blocks {
  VixDiskLibBlock *v;
  size_t n, cap;
};
int blocks_add(struct fv_blocks *b, uint64_t off, uint64_t len);
/* Hand the blocks over as a VixDiskLibBlockList (frees B's array). */
VixError blocks_to_list(struct fv_blocks *b, VixDiskLibBlockList **out);

/* Backends. */
VixError raw_open(struct fv_disk *d, int fd);
VixError raw_query_allocated(const struct fv_disk *d, uint64_t start,
                             uint64_t count, uint64_t chunk,
                             struct fv_blocks *b);

bool vmdk_is_vmdk_name(const char *file);
VixError vmdk_open(struct fv_disk *d, const char *file, uint32_t flags);
void vmdk_close(struct vmdk_chain *c);
VixError vmdk_read(struct vmdk_chain *c, uint64_t start, uint64_t count,
                   void *buf);
VixError vmdk_write(struct vmdk_chain *c, uint64_t start, uint64_t count,
                    const void *buf);
VixError vmdk_flush(struct vmdk_chain *c);
VixError vmdk_query_allocated(struct vmdk_chain *c, uint64_t start,
                              uint64_t count, uint64_t chunk,
                              struct fv_blocks *b);
VixError vmdk_create(const char *file, const VixDiskLibCreateParams *cp);

/* Change tracking (ctk.c): the sidecar NAME-ctk.vmdk, layout in
 * README.md.  ctk_open leaves *out NULL when the disk is not tracked. */
#define CTK_MAGIC "FVCTK001"
#define CTK_OFF_GRAIN 8            /* u32: bytes per grain */
#define CTK_OFF_SEQ 16             /* u64: last sequence number given out */
#define CTK_OFF_ID 24              /* tracking id, NUL-terminated text */
#define CTK_ID_SIZE 48
#define CTK_HEADER_USED (CTK_OFF_ID + CTK_ID_SIZE)
#define CTK_GRAINS_OFFSET 4096     /* u64 per grain: seq of its last write */
VixError ctk_open(const char *disk, struct fv_ctk **out);
VixError ctk_record(struct fv_ctk *t, uint64_t start, uint64_t count);
VixError ctk_flush(struct fv_ctk *t);
void ctk_close(struct fv_ctk *t);

#endif
