/* vmdk_sparse.c -- sparse extents: hosted sparse ("KDMV", monolithicSparse
 * and twoGbMaxExtentSparse), its stream-optimized flavour (deflate
 * compressed grains behind markers, tables and footer at the end) and VMFS
 * sparse ("COWD", vmfsSparse).
 *
 * A sparse extent maps grains (runs of sectors) through a grain directory
 * (GD) of grain tables (GT).  A grain table entry (GTE) is the sector where
 * the grain lives, 0 when unallocated, 1 for a zeroed grain (when the
 * header allows it).  Hosted sparse files keep a redundant copy of the
 * directory and tables (RGD); both are updated on allocation.  The caller
 * (vmdk.c) serialises all calls on one extent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "vmdk.h"

#define SECTOR VMDK_SECTOR
#define GD_AT_END UINT64_MAX
#define FLAG_NL_DETECT (1u << 0)
#define FLAG_RGD (1u << 1)
#define FLAG_ZERO_GRAIN (1u << 2)
#define FLAG_COMPRESSED (1u << 16)
#define FLAG_MARKERS (1u << 17)
#define GTE_ZERO 1u
#define DEFAULT_GRAIN 128u         /* sectors: 64 KiB */
#define HOSTED_GT_ENTRIES 512u
#define COWD_GT_ENTRIES 4096u
#define COWD_GRAIN 1u              /* VMFS sparse grains are one sector */
#define COWD_HEADER_SECTORS 4u
#define DESC_SECTORS 20u

enum marker_type { MARKER_EOS = 0, MARKER_GT = 1, MARKER_GD = 2,
                   MARKER_FOOTER = 3 };

struct vmdk_sparse {
  int fd;
  enum sparse_kind kind;
  bool footer;                  /* stream layout: GD/GTs rewritten at the end */
  bool zero_grain;              /* GTE 1 means "reads as zeros" */
  unsigned char header[SECTOR]; /* KDMV header as on disk (footer copy) */
  uint64_t capacity, grain, gt_entries;
  uint64_t gd, rgd;             /* sectors; 0: none */
  uint32_t ngts;
  uint32_t *gd_v, *rgd_v;
  uint32_t **gt;                /* loaded tables, NULL until needed */
  uint64_t next_free;           /* sector of the next grain or table */
  bool meta_dirty;              /* footer layout: tables to rewrite */
  bool cowd_dirty;              /* COWD: freeSector to rewrite */
  unsigned char *cache;         /* last decompressed grain */
  int64_t cache_grain;          /* -1: none */
};

/* ---- little-endian fields ---- */

static uint32_t get32(const unsigned char *p)
{
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
  return get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = v >> (8 * i);
}

static void put64(unsigned char *p, uint64_t v)
{
  put32(p, v);
  put32(p + 4, v >> 32);
}

/* KDMV header field offsets (after the 4-byte magic). */
enum { H_VERSION = 4, H_FLAGS = 8, H_CAPACITY = 12, H_GRAIN = 20,
       H_DESC_OFFSET = 28, H_DESC_SIZE = 36, H_GT_ENTRIES = 44, H_RGD = 48,
       H_GD = 56, H_OVERHEAD = 64, H_NL_CHECK = 73, H_COMPRESS = 77 };
/* COWD header field offsets. */
enum { C_VERSION = 4, C_FLAGS = 8, C_SECTORS = 12, C_GRAIN = 16, C_GD = 20,
       C_GD_ENTRIES = 24, C_FREE = 28 };

static uint64_t div_up(uint64_t a, uint64_t b)
{
  return (a + b - 1) / b;
}

static uint64_t gt_sectors(const struct vmdk_sparse *sp)
{
  return div_up(sp->gt_entries * 4, SECTOR);
}

static uint64_t gd_sectors(const struct vmdk_sparse *sp)
{
  return div_up((uint64_t)sp->ngts * 4, SECTOR);
}

static bool all_zero(const void *buf, size_t len)
{
  const unsigned char *p = buf;

  return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* ---- tables ---- */

static VixError read_dir(struct vmdk_sparse *sp, uint64_t sector,
                         uint32_t **out)
{
  unsigned char *raw = malloc(gd_sectors(sp) * SECTOR);
  uint32_t *v = calloc(sp->ngts ? sp->ngts : 1, 4);
  VixError err = raw && v ? VIX_OK : VIX_E_OUT_OF_MEMORY;

  if (err == VIX_OK)
    err = disk_pread(sp->fd, raw, gd_sectors(sp) * SECTOR, sector * SECTOR);
  for (uint32_t i = 0; err == VIX_OK && i < sp->ngts; i++)
    v[i] = get32(raw + 4 * i);
  free(raw);
  if (err != VIX_OK)
    free(v);
  else
    *out = v;
  return err;
}

static VixError load_gt(struct vmdk_sparse *sp, uint32_t i)
{
  size_t bytes = sp->gt_entries * 4;
  unsigned char *raw;
  uint32_t *t = calloc(sp->gt_entries, 4);
  VixError err = VIX_OK;

  if (!t)
    return VIX_E_OUT_OF_MEMORY;
  if (sp->gd_v[i] != 0) {
    if (!(raw = malloc(bytes))) {
      free(t);
      return VIX_E_OUT_OF_MEMORY;
    }
    err = disk_pread(sp->fd, raw, bytes, (uint64_t)sp->gd_v[i] * SECTOR);
    for (uint64_t k = 0; err == VIX_OK && k < sp->gt_entries; k++)
      t[k] = get32(raw + 4 * k);
    free(raw);
  }
  if (err != VIX_OK)
    free(t);
  else
    sp->gt[i] = t;
  return err;
}

static VixError gte_get(struct vmdk_sparse *sp, uint64_t grain, uint32_t *gte)
{
  uint32_t i = grain / sp->gt_entries;
  VixError err;

  if (i >= sp->ngts)
    return VIX_E_DISK_OUTOFRANGE;
  if (!sp->gt[i] && sp->gd_v[i] == 0) {
    *gte = 0;
    return VIX_OK;
  }
  if (!sp->gt[i] && (err = load_gt(sp, i)) != VIX_OK)
    return err;
  *gte = sp->gt[i][grain % sp->gt_entries];
  return VIX_OK;
}

/* Append a zeroed table of SECTORS at the end; returns its sector. */
static VixError append_zeros(struct vmdk_sparse *sp, uint64_t sectors,
                             uint32_t *where)
{
  void *zeros = calloc(sectors, SECTOR);
  VixError err;

  if (!zeros)
    return VIX_E_OUT_OF_MEMORY;
  err = disk_pwrite(sp->fd, zeros, sectors * SECTOR, sp->next_free * SECTOR);
  free(zeros);
  if (err == VIX_OK) {
    *where = sp->next_free;
    sp->next_free += sectors;
  }
  return err;
}

static VixError put_entry(struct vmdk_sparse *sp, uint64_t table_sector,
                          uint64_t index, uint32_t value)
{
  unsigned char le[4];

  put32(le, value);
  return disk_pwrite(sp->fd, le, 4, table_sector * SECTOR + index * 4);
}

/* A grain table on disk for directory slot I (tables in place only). */
static VixError alloc_gt(struct vmdk_sparse *sp, uint32_t i)
{
  VixError err = append_zeros(sp, gt_sectors(sp), &sp->gd_v[i]);

  if (err == VIX_OK)
    err = put_entry(sp, sp->gd, i, sp->gd_v[i]);
  if (err == VIX_OK && sp->rgd_v) {
    err = append_zeros(sp, gt_sectors(sp), &sp->rgd_v[i]);
    if (err == VIX_OK)
      err = put_entry(sp, sp->rgd, i, sp->rgd_v[i]);
  }
  return err;
}

/* Point GRAIN at VALUE: in memory, and on disk unless the tables are
 * rewritten at the end (stream layout). */
static VixError gte_set(struct vmdk_sparse *sp, uint64_t grain,
                        uint32_t value)
{
  uint32_t i = grain / sp->gt_entries;
  uint64_t k = grain % sp->gt_entries;
  VixError err;

  if (!sp->gt[i] && (err = load_gt(sp, i)) != VIX_OK)
    return err;
  sp->gt[i][k] = value;
  if (sp->footer) {
    sp->meta_dirty = true;
    return VIX_OK;
  }
  if (sp->gd_v[i] == 0 && (err = alloc_gt(sp, i)) != VIX_OK)
    return err;
  err = put_entry(sp, sp->gd_v[i], k, value);
  if (err == VIX_OK && sp->rgd_v && sp->rgd_v[i] != 0)
    err = put_entry(sp, sp->rgd_v[i], k, value);
  if (sp->kind == SPARSE_VMFS)
    sp->cowd_dirty = true;
  return err;
}

/* ---- compressed grains ---- */

static VixError read_compressed(struct vmdk_sparse *sp, uint64_t grain,
                                uint32_t gte)
{
  uLongf out_len = sp->grain * SECTOR;
  unsigned char head[12], *data;
  uint32_t size;
  VixError err;

  if (sp->cache_grain == (int64_t)grain)
    return VIX_OK;
  if ((err = disk_pread(sp->fd, head, 12, (uint64_t)gte * SECTOR)) != VIX_OK)
    return err;
  size = get32(head + 8);
  if (size == 0 || size > 2 * sp->grain * SECTOR + 1024)
    return VIX_E_FILE_ERROR;      /* corrupt marker */
  if (!(data = malloc(size)))
    return VIX_E_OUT_OF_MEMORY;
  err = disk_pread(sp->fd, data, size, (uint64_t)gte * SECTOR + 12);
  memset(sp->cache, 0, sp->grain * SECTOR);
  if (err == VIX_OK && uncompress(sp->cache, &out_len, data, size) != Z_OK)
    err = VIX_E_FILE_ERROR;
  free(data);
  sp->cache_grain = err == VIX_OK ? (int64_t)grain : -1;
  return err;
}

/* Append grain contents BUF as a compressed grain marker. */
static VixError append_compressed(struct vmdk_sparse *sp, uint64_t grain,
                                  const void *buf, uint32_t *where)
{
  uLongf clen = compressBound(sp->grain * SECTOR);
  uint64_t total = div_up(12 + clen, SECTOR) * SECTOR;
  unsigned char *m = calloc(1, total);
  VixError err = VIX_OK;

  if (!m)
    return VIX_E_OUT_OF_MEMORY;
  if (compress(m + 12, &clen, buf, sp->grain * SECTOR) != Z_OK)
    err = VIX_E_OUT_OF_MEMORY;
  if (err == VIX_OK) {
    put64(m, grain * sp->grain);
    put32(m + 8, clen);
    total = div_up(12 + clen, SECTOR) * SECTOR;
    err = disk_pwrite(sp->fd, m, total, sp->next_free * SECTOR);
  }
  free(m);
  if (err == VIX_OK) {
    *where = sp->next_free;
    sp->next_free += total / SECTOR;
  }
  return err;
}

/* Append an uncompressed grain: the data goes to disk before the table
 * entry that points at it, so a crash never exposes garbage. */
static VixError append_grain(struct vmdk_sparse *sp, const void *buf,
                             uint32_t *where)
{
  VixError err = disk_pwrite(sp->fd, buf, sp->grain * SECTOR,
                             sp->next_free * SECTOR);

  if (err == VIX_OK) {
    *where = sp->next_free;
    sp->next_free += sp->grain;
  }
  return err;
}

/* ---- state and data ---- */

uint64_t sparse_capacity(const struct vmdk_sparse *sp)
{
  return sp->capacity;
}

bool sparse_is_stream(const struct vmdk_sparse *sp)
{
  return sp->kind == SPARSE_STREAM;
}

VixError sparse_state(struct vmdk_sparse *sp, uint64_t sector,
                      enum grain_state *state, uint64_t *run)
{
  uint64_t grain = sector / sp->grain;
  uint32_t i = grain / sp->gt_entries, gte;
  VixError err;

  /* A missing table leaves its whole span unallocated. */
  if (i < sp->ngts && !sp->gt[i] && sp->gd_v[i] == 0) {
    *state = GRAIN_UNALLOCATED;
    *run = (uint64_t)(i + 1) * sp->gt_entries * sp->grain - sector;
    return VIX_OK;
  }
  if ((err = gte_get(sp, grain, &gte)) != VIX_OK)
    return err;
  *run = (grain + 1) * sp->grain - sector;
  if (gte == 0)
    *state = GRAIN_UNALLOCATED;
  else if (gte == GTE_ZERO && sp->zero_grain)
    *state = GRAIN_ZERO;
  else
    *state = GRAIN_DATA;
  return VIX_OK;
}

VixError sparse_read(struct vmdk_sparse *sp, uint64_t sector, uint64_t count,
                     void *buf)
{
  uint64_t grain = sector / sp->grain, within = sector % sp->grain;
  uint32_t gte;
  VixError err = gte_get(sp, grain, &gte);

  if (err != VIX_OK)
    return err;
  if (sp->kind != SPARSE_STREAM)
    return disk_pread(sp->fd, buf, count * SECTOR,
                      ((uint64_t)gte + within) * SECTOR);
  if ((err = read_compressed(sp, grain, gte)) == VIX_OK)
    memcpy(buf, sp->cache + within * SECTOR, count * SECTOR);
  return err;
}

/* The whole grain as it reads now (before this write). */
static VixError current_grain(struct vmdk_sparse *sp, uint64_t grain,
                              uint32_t gte, vmdk_fill_fn *fill, void *arg,
                              unsigned char *out)
{
  uint64_t first = grain * sp->grain;
  uint64_t n = sp->grain;
  VixError err;

  memset(out, 0, sp->grain * SECTOR);
  if (first + n > sp->capacity)
    n = sp->capacity - first;
  if (gte == 0)
    return fill ? fill(arg, first, n, out) : VIX_OK;
  if (gte == GTE_ZERO && sp->zero_grain)
    return VIX_OK;
  if ((err = read_compressed(sp, grain, gte)) == VIX_OK)
    memcpy(out, sp->cache, sp->grain * SECTOR);
  return err;
}

/* Write [within, within+n) of one grain. */
static VixError write_grain(struct vmdk_sparse *sp, uint64_t grain,
                            uint64_t within, uint64_t n, const void *data,
                            vmdk_fill_fn *fill, void *arg)
{
  bool zeros = all_zero(data, n * SECTOR);
  bool unmapped;
  unsigned char *whole;
  uint32_t gte, where = 0;
  VixError err;

  if ((err = gte_get(sp, grain, &gte)) != VIX_OK)
    return err;
  unmapped = gte == 0 || (gte == GTE_ZERO && sp->zero_grain);
  if (sp->kind != SPARSE_STREAM && !unmapped)   /* in place */
    return disk_pwrite(sp->fd, data, n * SECTOR,
                       ((uint64_t)gte + within) * SECTOR);
  /* Zeros over a grain that already reads as zeros: nothing to store. */
  if (zeros && unmapped && (gte != 0 || !fill))
    return VIX_OK;
  if (!(whole = malloc(sp->grain * SECTOR)))
    return VIX_E_OUT_OF_MEMORY;
  err = current_grain(sp, grain, gte, fill, arg, whole);
  if (err == VIX_OK) {
    memcpy(whole + within * SECTOR, data, n * SECTOR);
    if (sp->kind == SPARSE_STREAM && !fill &&
        all_zero(whole, sp->grain * SECTOR))
      where = 0;                /* stream files leave zero grains out */
    else if (sp->kind == SPARSE_STREAM)
      err = append_compressed(sp, grain, whole, &where);
    else
      err = append_grain(sp, whole, &where);
  }
  free(whole);
  sp->cache_grain = -1;
  if (err == VIX_OK && where != gte)
    err = gte_set(sp, grain, where);
  return err;
}

VixError sparse_write(struct vmdk_sparse *sp, uint64_t sector, uint64_t count,
                      const void *buf, vmdk_fill_fn *fill, void *fill_arg)
{
  const unsigned char *p = buf;

  while (count > 0) {
    uint64_t grain = sector / sp->grain, within = sector % sp->grain;
    uint64_t n = sp->grain - within;
    VixError err;
    if (n > count)
      n = count;
    err = write_grain(sp, grain, within, n, p, fill, fill_arg);
    if (err != VIX_OK)
      return err;
    p += n * SECTOR;
    sector += n;
    count -= n;
  }
  return VIX_OK;
}

/* ---- stream layout: tables, directory, footer and end-of-stream marker
 *      written after the last grain ---- */

static void put_marker(unsigned char *sector, uint64_t val,
                       enum marker_type type)
{
  memset(sector, 0, SECTOR);
  put64(sector, val);
  put32(sector + 12, type);
}

/* Serialise the stream metadata into a buffer starting at sector BASE. */
static unsigned char *stream_meta(struct vmdk_sparse *sp, uint64_t base,
                                  size_t *len)
{
  uint64_t gts = gt_sectors(sp), gds = gd_sectors(sp);
  size_t max = ((1 + gts) * sp->ngts + 1 + gds + 3) * SECTOR;
  unsigned char *m = calloc(1, max), *p = m;

  if (!m)
    return NULL;
  for (uint32_t i = 0; i < sp->ngts; i++) {
    sp->gd_v[i] = 0;
    if (!sp->gt[i] || all_zero(sp->gt[i], sp->gt_entries * 4))
      continue;                 /* empty tables are left out */
    put_marker(p, gts, MARKER_GT);
    for (uint64_t k = 0; k < sp->gt_entries; k++)
      put32(p + SECTOR + 4 * k, sp->gt[i][k]);
    sp->gd_v[i] = base + (p - m) / SECTOR + 1;
    p += (1 + gts) * SECTOR;
  }
  put_marker(p, gds, MARKER_GD);
  sp->gd = base + (p - m) / SECTOR + 1;
  for (uint32_t i = 0; i < sp->ngts; i++)
    put32(p + SECTOR + 4 * i, sp->gd_v[i]);
  p += (1 + gds) * SECTOR;
  put_marker(p, 1, MARKER_FOOTER);
  memcpy(p + SECTOR, sp->header, SECTOR);
  put64(p + SECTOR + H_GD, sp->gd);
  p += 2 * SECTOR;
  put_marker(p, 0, MARKER_EOS);
  p += SECTOR;
  *len = p - m;
  return m;
}

static VixError write_stream_meta(struct vmdk_sparse *sp)
{
  size_t len;
  unsigned char *m = stream_meta(sp, sp->next_free, &len);
  VixError err;

  if (!m)
    return VIX_E_OUT_OF_MEMORY;
  err = disk_pwrite(sp->fd, m, len, sp->next_free * SECTOR);
  free(m);
  if (err == VIX_OK &&
      ftruncate(sp->fd, sp->next_free * SECTOR + len) == -1)
    err = disk_io_errno(errno);
  if (err == VIX_OK)
    sp->meta_dirty = false;
  return err;
}

static VixError write_cowd_free(struct vmdk_sparse *sp)
{
  unsigned char le[4];
  VixError err;

  put32(le, sp->next_free);
  err = disk_pwrite(sp->fd, le, 4, C_FREE);
  if (err == VIX_OK)
    sp->cowd_dirty = false;
  return err;
}

VixError sparse_flush(struct vmdk_sparse *sp)
{
  VixError err = VIX_OK;

  if (sp->meta_dirty)
    err = write_stream_meta(sp);
  if (err == VIX_OK && sp->cowd_dirty)
    err = write_cowd_free(sp);
  return err == VIX_OK ? disk_fsync(sp->fd) : err;
}

/* ---- open ---- */

static VixError file_sectors(int fd, uint64_t *out)
{
  struct stat st;

  if (fstat(fd, &st) == -1)
    return VIX_E_FILE_ERROR;
  *out = div_up(st.st_size, SECTOR);
  return VIX_OK;
}

/* Stream layout: the real header is the footer, 1024 bytes before the end
 * (footer marker, footer, end-of-stream marker). */
static VixError read_footer(struct vmdk_sparse *sp)
{
  unsigned char tail[3 * SECTOR];
  uint64_t sectors;
  VixError err = file_sectors(sp->fd, &sectors);

  if (err != VIX_OK)
    return err;
  if (sectors < 4)
    return VIX_E_DISK_INVAL;
  if ((err = disk_pread(sp->fd, tail, sizeof tail,
                        (sectors - 3) * SECTOR)) != VIX_OK)
    return err;
  if (get32(tail + 12) != MARKER_FOOTER ||
      memcmp(tail + SECTOR, "KDMV", 4) != 0 ||
      !all_zero(tail + 2 * SECTOR, 16))
    return VIX_E_DISK_INVAL;
  sp->gd = get64(tail + SECTOR + H_GD);
  return VIX_OK;
}

static VixError parse_kdmv(struct vmdk_sparse *sp, const unsigned char *h)
{
  uint32_t flags = get32(h + H_FLAGS);
  VixError err;

  memcpy(sp->header, h, SECTOR);
  if (get32(h + H_VERSION) == 0 || get32(h + H_VERSION) > 3)
    return VIX_E_DISK_INVAL;
  sp->capacity = get64(h + H_CAPACITY);
  sp->grain = get64(h + H_GRAIN);
  sp->gt_entries = get32(h + H_GT_ENTRIES);
  sp->gd = get64(h + H_GD);
  sp->rgd = flags & FLAG_RGD ? get64(h + H_RGD) : 0;
  sp->zero_grain = flags & FLAG_ZERO_GRAIN;
  sp->kind = get32(h + H_COMPRESS) & 0xffff ? SPARSE_STREAM : SPARSE_HOSTED;
  if (sp->kind == SPARSE_STREAM && !(flags & FLAG_MARKERS))
    return VIX_E_DISK_NOTSUPPORTED;
  if (sp->gd == GD_AT_END) {
    sp->footer = true;
    sp->rgd = 0;
    if ((err = read_footer(sp)) != VIX_OK)
      return err;
  }
  return VIX_OK;
}

static void parse_cowd(struct vmdk_sparse *sp, const unsigned char *h)
{
  sp->kind = SPARSE_VMFS;
  sp->capacity = get32(h + C_SECTORS);
  sp->grain = get32(h + C_GRAIN);
  sp->gt_entries = COWD_GT_ENTRIES;
  sp->gd = get32(h + C_GD);
  sp->next_free = get32(h + C_FREE);
}

static VixError read_embedded_desc(struct vmdk_sparse *sp,
                                   const unsigned char *h, char **desc)
{
  uint64_t off = get64(h + H_DESC_OFFSET), size = get64(h + H_DESC_SIZE);
  VixError err;
  char *text;

  *desc = NULL;
  if (off == 0 || size == 0)
    return VIX_OK;
  if (size > 2048 || !(text = calloc(size * SECTOR + 1, 1)))
    return size > 2048 ? VIX_E_DISK_INVAL : VIX_E_OUT_OF_MEMORY;
  err = disk_pread(sp->fd, text, size * SECTOR, off * SECTOR);
  if (err != VIX_OK)
    free(text);
  else
    *desc = text;
  return err;
}

/* Where the next grain goes: the end of the file, or for the stream
 * layout the start of the trailing metadata (rewritten on flush). */
static VixError find_next_free(struct vmdk_sparse *sp)
{
  uint64_t end;
  VixError err = file_sectors(sp->fd, &end);

  if (err != VIX_OK || sp->kind == SPARSE_VMFS)
    return err;
  sp->next_free = end;
  if (sp->footer) {
    sp->next_free = sp->gd - 1;              /* the GD marker */
    for (uint32_t i = 0; i < sp->ngts; i++)
      if (sp->gd_v[i] != 0 && sp->gd_v[i] - 1 < sp->next_free)
        sp->next_free = sp->gd_v[i] - 1;     /* a GT marker */
  }
  return VIX_OK;
}

static VixError load_tables(struct vmdk_sparse *sp)
{
  VixError err;

  if (sp->grain == 0 || sp->gt_entries == 0 || sp->gt_entries > 65536 ||
      sp->capacity == 0 || sp->gd == 0)
    return VIX_E_DISK_INVAL;
  if (div_up(sp->capacity, sp->grain * sp->gt_entries) > (1u << 24))
    return VIX_E_DISK_INVAL;
  sp->ngts = div_up(sp->capacity, sp->grain * sp->gt_entries);
  sp->gt = calloc(sp->ngts, sizeof *sp->gt);
  sp->cache = malloc(sp->grain * SECTOR);
  if (!sp->gt || !sp->cache)
    return VIX_E_OUT_OF_MEMORY;
  if ((err = read_dir(sp, sp->gd, &sp->gd_v)) != VIX_OK)
    return err;
  if (sp->rgd && (err = read_dir(sp, sp->rgd, &sp->rgd_v)) != VIX_OK)
    return err;
  /* The stream metadata is overwritten by the next grain: keep it all. */
  for (uint32_t i = 0; sp->footer && i < sp->ngts; i++)
    if (sp->gd_v[i] && (err = load_gt(sp, i)) != VIX_OK)
      return err;
  return find_next_free(sp);
}

static struct vmdk_sparse *sparse_new(int fd)
{
  struct vmdk_sparse *sp = calloc(1, sizeof *sp);

  if (sp) {
    sp->fd = fd;
    sp->cache_grain = -1;
  }
  return sp;
}

VixError sparse_open(int fd, struct vmdk_sparse **out, char **desc)
{
  unsigned char h[SECTOR];
  struct vmdk_sparse *sp = sparse_new(fd);
  VixError err;

  *desc = NULL;
  if (!sp) {
    close(fd);
    return VIX_E_OUT_OF_MEMORY;
  }
  err = disk_pread(fd, h, SECTOR, 0);
  if (err == VIX_OK && memcmp(h, "KDMV", 4) == 0) {
    err = parse_kdmv(sp, h);
    if (err == VIX_OK)
      err = read_embedded_desc(sp, h, desc);
  } else if (err == VIX_OK && memcmp(h, "COWD", 4) == 0) {
    parse_cowd(sp, h);
  } else if (err == VIX_OK) {
    err = VIX_E_DISK_INVAL;
  }
  if (err == VIX_OK)
    err = load_tables(sp);
  if (err != VIX_OK) {
    free(*desc);
    *desc = NULL;
    sparse_close(sp);
    return err;
  }
  *out = sp;
  return VIX_OK;
}

void sparse_close(struct vmdk_sparse *sp)
{
  if (!sp)
    return;
  if (sp->meta_dirty || sp->cowd_dirty)
    sparse_flush(sp);
  for (uint32_t i = 0; sp->gt && i < sp->ngts; i++)
    free(sp->gt[i]);
  free(sp->gt);
  free(sp->gd_v);
  free(sp->rgd_v);
  free(sp->cache);
  close(sp->fd);
  free(sp);
}

/* ---- create ---- */

static void kdmv_header(unsigned char *h, uint32_t version, uint32_t flags,
                        uint64_t capacity, uint64_t desc_sectors)
{
  memset(h, 0, SECTOR);
  memcpy(h, "KDMV", 4);
  put32(h + H_VERSION, version);
  put32(h + H_FLAGS, flags);
  put64(h + H_CAPACITY, capacity);
  put64(h + H_GRAIN, DEFAULT_GRAIN);
  put64(h + H_DESC_OFFSET, desc_sectors ? 1 : 0);
  put64(h + H_DESC_SIZE, desc_sectors);
  put32(h + H_GT_ENTRIES, HOSTED_GT_ENTRIES);
  memcpy(h + H_NL_CHECK, "\n \r\n", 4);
}

/* Directory at DIR followed by its tables, all zero but the pointers. */
static VixError write_dir_and_tables(struct vmdk_sparse *sp, uint64_t dir)
{
  uint64_t first_gt = dir + gd_sectors(sp);
  unsigned char *raw = calloc(gd_sectors(sp), SECTOR);
  VixError err;

  if (!raw)
    return VIX_E_OUT_OF_MEMORY;
  for (uint32_t i = 0; i < sp->ngts; i++)
    put32(raw + 4 * i, first_gt + i * gt_sectors(sp));
  err = disk_pwrite(sp->fd, raw, gd_sectors(sp) * SECTOR, dir * SECTOR);
  free(raw);
  return err;
}

static void geometry_of(struct vmdk_sparse *sp, uint64_t capacity,
                        uint64_t grain, uint64_t entries)
{
  sp->capacity = capacity;
  sp->grain = grain;
  sp->gt_entries = entries;
  sp->ngts = div_up(capacity, grain * entries);
}

/* Hosted sparse: header, embedded descriptor, redundant directory and
 * tables, directory and tables, then grains from a grain boundary. */
static VixError create_hosted(struct vmdk_sparse *sp, uint64_t capacity,
                              const char *desc, uint64_t desc_sectors)
{
  uint64_t tables;
  VixError err;

  geometry_of(sp, capacity, DEFAULT_GRAIN, HOSTED_GT_ENTRIES);
  tables = gd_sectors(sp) + sp->ngts * gt_sectors(sp);
  kdmv_header(sp->header, 1, FLAG_NL_DETECT | FLAG_RGD, capacity,
              desc_sectors);
  sp->rgd = 1 + desc_sectors;
  sp->gd = sp->rgd + tables;
  put64(sp->header + H_RGD, sp->rgd);
  put64(sp->header + H_GD, sp->gd);
  put64(sp->header + H_OVERHEAD,
        div_up(sp->gd + tables, DEFAULT_GRAIN) * DEFAULT_GRAIN);
  if (ftruncate(sp->fd, get64(sp->header + H_OVERHEAD) * SECTOR) == -1)
    return disk_io_errno(errno);
  err = disk_pwrite(sp->fd, sp->header, SECTOR, 0);
  if (err == VIX_OK && desc)
    err = disk_pwrite(sp->fd, desc, strlen(desc), SECTOR);
  if (err == VIX_OK)
    err = write_dir_and_tables(sp, sp->rgd);
  if (err == VIX_OK)
    err = write_dir_and_tables(sp, sp->gd);
  return err;
}

/* Stream-optimized: header (directory "at the end"), descriptor, then
 * from sector 128 the (empty) metadata a flush rewrites after grains. */
static VixError create_stream(struct vmdk_sparse *sp, uint64_t capacity,
                              const char *desc, uint64_t desc_sectors)
{
  VixError err;

  geometry_of(sp, capacity, DEFAULT_GRAIN, HOSTED_GT_ENTRIES);
  kdmv_header(sp->header, 3,
              FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS, capacity,
              desc_sectors);
  put64(sp->header + H_GD, GD_AT_END);
  put64(sp->header + H_OVERHEAD, DEFAULT_GRAIN);
  sp->header[H_COMPRESS] = 1;                   /* deflate */
  sp->footer = true;
  sp->next_free = div_up(1 + desc_sectors, DEFAULT_GRAIN) * DEFAULT_GRAIN;
  sp->gt = calloc(sp->ngts, sizeof *sp->gt);
  sp->gd_v = calloc(sp->ngts, 4);
  if (!sp->gt || !sp->gd_v)
    return VIX_E_OUT_OF_MEMORY;
  err = disk_pwrite(sp->fd, sp->header, SECTOR, 0);
  if (err == VIX_OK && desc)
    err = disk_pwrite(sp->fd, desc, strlen(desc), SECTOR);
  return err == VIX_OK ? write_stream_meta(sp) : err;
}

/* VMFS sparse: 2 KiB header, directory at sector 4, tables on demand. */
static VixError create_cowd(struct vmdk_sparse *sp, uint64_t capacity)
{
  unsigned char h[COWD_HEADER_SECTORS * SECTOR] = { 0 };

  if (capacity > UINT32_MAX)
    return VIX_E_INVALID_ARG;
  geometry_of(sp, capacity, COWD_GRAIN, COWD_GT_ENTRIES);
  memcpy(h, "COWD", 4);
  put32(h + C_VERSION, 1);
  put32(h + C_FLAGS, 3);
  put32(h + C_SECTORS, capacity);
  put32(h + C_GRAIN, COWD_GRAIN);
  put32(h + C_GD, COWD_HEADER_SECTORS);
  put32(h + C_GD_ENTRIES, sp->ngts);
  put32(h + C_FREE, COWD_HEADER_SECTORS + gd_sectors(sp));
  if (ftruncate(sp->fd, (COWD_HEADER_SECTORS + gd_sectors(sp)) * SECTOR)
      == -1)
    return disk_io_errno(errno);
  return disk_pwrite(sp->fd, h, sizeof h, 0);
}

VixError sparse_create(int fd, enum sparse_kind kind, uint64_t capacity,
                       const char *desc)
{
  uint64_t desc_sectors = desc ? div_up(strlen(desc) + 1, SECTOR) : 0;
  struct vmdk_sparse *sp = sparse_new(fd);
  VixError err;

  if (!sp)
    return VIX_E_OUT_OF_MEMORY;
  if (desc && desc_sectors < DESC_SECTORS)
    desc_sectors = DESC_SECTORS;
  if (kind == SPARSE_HOSTED)
    err = create_hosted(sp, capacity, desc, desc_sectors);
  else if (kind == SPARSE_STREAM)
    err = create_stream(sp, capacity, desc, desc_sectors);
  else
    err = create_cowd(sp, capacity);
  if (err == VIX_OK)
    err = disk_fsync(fd);
  sp->meta_dirty = false;
  sparse_close(sp);             /* closes FD */
  return err;
}
