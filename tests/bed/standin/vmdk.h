/* vmdk.h -- internals of the VMDK backend (vmdk.c, vmdk_desc.c,
 * vmdk_sparse.c).  Facts from VMware's "Virtual Disk Format 5.0". */
#ifndef FAKEVDDK_VMDK_H
#define FAKEVDDK_VMDK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "disk.h"

#define VMDK_SECTOR 512u
#define VMDK_NO_PARENT_CID 0xffffffffu

/* ---- descriptor (vmdk_desc.c) ---- */

struct vmdk_desc_extent {
  char access[12];              /* RW, RDONLY, NOACCESS */
  uint64_t sectors;
  char type[16];                /* FLAT, SPARSE, ZERO, VMFS, VMFSSPARSE... */
  char *file;                   /* NULL for ZERO */
  uint64_t offset;              /* FLAT only: start in the file, sectors */
};

struct vmdk_desc {
  uint32_t cid, parent_cid;
  char *create_type;
  char *parent_hint;            /* parentFileNameHint, NULL if none */
  struct vmdk_desc_extent *extents;
  size_t nextents;
  char *adapter_type;           /* ddb.adapterType */
  char *hw_version;             /* ddb.virtualHWVersion */
  char *uuid;                   /* ddb.uuid */
  uint32_t cylinders, heads, sectors;            /* ddb.geometry.* */
  uint32_t bios_cylinders, bios_heads, bios_sectors;
};

/* Parse descriptor TEXT; -1 if it is not a VMDK descriptor. */
int vmdk_desc_parse(const char *text, struct vmdk_desc *d);
void vmdk_desc_free(struct vmdk_desc *d);
/* Descriptor text for D (malloc'd), NULL on ENOMEM. */
char *vmdk_desc_format(const struct vmdk_desc *d);
/* VixDiskLibAdapterType of a ddb.adapterType value and back. */
int vmdk_adapter_from_name(const char *name);
const char *vmdk_adapter_name(int adapter);

/* ---- sparse extents: hosted sparse "KDMV" incl. stream-optimized,
 *      and VMFS sparse "COWD" (vmdk_sparse.c) ---- */

struct vmdk_sparse;

enum grain_state { GRAIN_UNALLOCATED, GRAIN_ZERO, GRAIN_DATA };

/* Fills BUF with the parent's view of [sector, sector+count) (relative to
 * the extent) when a grain is first allocated. */
typedef VixError vmdk_fill_fn(void *arg, uint64_t sector, uint64_t count,
                              void *buf);

/* Open the sparse extent in FD (taken over).  *DESC gets the embedded
 * descriptor text if there is one (malloc'd, else NULL). */
VixError sparse_open(int fd, struct vmdk_sparse **out, char **desc);
void sparse_close(struct vmdk_sparse *sp);
uint64_t sparse_capacity(const struct vmdk_sparse *sp);
bool sparse_is_stream(const struct vmdk_sparse *sp);
/* State of SECTOR; *RUN gets how many sectors from it share the state
 * (to the end of its grain). */
VixError sparse_state(struct vmdk_sparse *sp, uint64_t sector,
                      enum grain_state *state, uint64_t *run);
/* Read [sector, sector+count) of one grain that is GRAIN_DATA. */
VixError sparse_read(struct vmdk_sparse *sp, uint64_t sector, uint64_t count,
                     void *buf);
/* Write; FILL (may be NULL: zeros) supplies the rest of a new grain. */
VixError sparse_write(struct vmdk_sparse *sp, uint64_t sector, uint64_t count,
                      const void *buf, vmdk_fill_fn *fill, void *fill_arg);
VixError sparse_flush(struct vmdk_sparse *sp);

enum sparse_kind { SPARSE_HOSTED, SPARSE_STREAM, SPARSE_VMFS };
/* Create an empty sparse extent file of CAPACITY sectors in FD; DESC is
 * embedded for the monolithic kinds (may be NULL). */
VixError sparse_create(int fd, enum sparse_kind kind, uint64_t capacity,
                       const char *desc);

#endif
