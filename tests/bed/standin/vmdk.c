/* vmdk.c -- VMDK disks: open a descriptor (or a monolithic sparse file),
 * serve the virtual disk its extents describe, follow the chain of parent
 * links, and create new disks of the eight VixDiskLib types.
 *
 * One open file ("link") is shared by every handle that opens it, so that
 * handles on the same disk see each other's allocations; its mutex
 * serialises all metadata work.  A chain holds its links top first and
 * locks child before parent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmdk.h"

#define SECTOR VMDK_SECTOR
#define MAX_LINKS 32
#define MAX_DESCRIPTOR (64 * 1024)
/* twoGbMaxExtent* extents hold at most 2047 MiB, as VMware writes them. */
#define SPLIT_EXTENT_SECTORS 4192256u

enum extent_kind { EXT_FLAT, EXT_SPARSE, EXT_ZERO };

struct vmdk_extent {
  enum extent_kind kind;
  bool readonly;                /* RDONLY access in the descriptor */
  uint64_t start, sectors;      /* place in the virtual disk */
  int fd;                       /* flat */
  uint64_t offset;              /* flat: first sector in the file */
  struct vmdk_sparse *sp;       /* sparse */
};

struct vmdk_link {
  dev_t dev;
  ino_t ino;
  unsigned refs;
  struct vmdk_link *next;       /* in open_links */
  pthread_mutex_t lock;
  char *path;
  struct vmdk_desc desc;
  uint64_t capacity;
  struct vmdk_extent *ext;
  size_t next_count;
  bool writable;
};

struct vmdk_chain {
  struct vmdk_link *links[MAX_LINKS];
  size_t n;
};

static pthread_mutex_t open_links_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vmdk_link *open_links;

bool vmdk_is_vmdk_name(const char *file)
{
  size_t n = strlen(file);

  return n >= 5 && strcasecmp(file + n - 5, ".vmdk") == 0;
}

/* Read-write where the file allows it (a later handle may write), else
 * read-only. */
static int open_rw_or_ro(const char *path, bool *writable)
{
  int fd = open(path, O_RDWR | O_CLOEXEC);

  *writable = fd >= 0;
  if (fd == -1 && (errno == EACCES || errno == EROFS || errno == EPERM))
    fd = open(path, O_RDONLY | O_CLOEXEC);
  return fd;
}

/* EXTENT relative to the directory of the descriptor at BASE. */
static char *extent_path(const char *base, const char *extent)
{
  char *copy, *path = NULL;

  if (extent[0] == '/')
    return strdup(extent);
  if (!(copy = strdup(base)))
    return NULL;
  if (asprintf(&path, "%s/%s", dirname(copy), extent) == -1)
    path = NULL;
  free(copy);
  return path;
}

/* ---- opening a link ---- */

static VixError open_extent(struct vmdk_link *l, const struct vmdk_desc_extent *d,
                            struct vmdk_extent *e)
{
  bool writable;
  char *path, *embedded = NULL;
  int fd;
  VixError err;

  e->start = l->capacity;
  e->sectors = d->sectors;
  e->readonly = strcmp(d->access, "RW") != 0;
  e->fd = -1;
  if (strcmp(d->type, "ZERO") == 0 || strcmp(d->access, "NOACCESS") == 0) {
    e->kind = EXT_ZERO;
    return VIX_OK;
  }
  if (!(path = extent_path(l->path, d->file)))
    return VIX_E_OUT_OF_MEMORY;
  fd = open_rw_or_ro(path, &writable);
  free(path);
  if (fd == -1)
    return disk_open_errno(errno);
  l->writable &= writable;
  if (strcmp(d->type, "FLAT") == 0 || strcmp(d->type, "VMFS") == 0) {
    e->kind = EXT_FLAT;
    e->fd = fd;
    e->offset = d->offset;
    return VIX_OK;
  }
  if (strcmp(d->type, "SPARSE") != 0 && strcmp(d->type, "VMFSSPARSE") != 0) {
    close(fd);
    return VIX_E_DISK_NOTSUPPORTED;     /* SESPARSE, VMFSRDM, ... */
  }
  e->kind = EXT_SPARSE;
  err = sparse_open(fd, &e->sp, &embedded);
  free(embedded);
  return err;
}

static VixError add_extents(struct vmdk_link *l)
{
  l->ext = calloc(l->desc.nextents, sizeof *l->ext);
  if (!l->ext)
    return VIX_E_OUT_OF_MEMORY;
  for (size_t i = 0; i < l->desc.nextents; i++) {
    VixError err = open_extent(l, &l->desc.extents[i], &l->ext[i]);
    l->next_count = i + 1;
    if (err != VIX_OK)
      return err;
    l->capacity += l->ext[i].sectors;
  }
  return VIX_OK;
}

/* A monolithic sparse file: the file is its own single extent. */
static VixError open_monolithic(struct vmdk_link *l, int fd)
{
  char *text = NULL;
  struct vmdk_sparse *sp;
  VixError err = sparse_open(fd, &sp, &text);

  if (err != VIX_OK)
    return err;
  if (!text || vmdk_desc_parse(text, &l->desc) == -1) {
    /* No usable embedded descriptor: describe the file itself. */
    vmdk_desc_free(&l->desc);
    l->desc.parent_cid = VMDK_NO_PARENT_CID;
    l->desc.create_type = strdup(sparse_is_stream(sp) ? "streamOptimized"
                                                      : "monolithicSparse");
  }
  free(text);
  l->ext = calloc(1, sizeof *l->ext);
  if (!l->ext) {
    sparse_close(sp);
    return VIX_E_OUT_OF_MEMORY;
  }
  l->next_count = 1;
  l->ext[0] = (struct vmdk_extent){ .kind = EXT_SPARSE, .fd = -1, .sp = sp,
                                    .sectors = sparse_capacity(sp) };
  l->capacity = l->ext[0].sectors;
  return VIX_OK;
}

static VixError open_descriptor(struct vmdk_link *l, int fd)
{
  char *text = calloc(MAX_DESCRIPTOR + 1, 1);
  ssize_t r;

  if (!text) {
    close(fd);
    return VIX_E_OUT_OF_MEMORY;
  }
  r = pread(fd, text, MAX_DESCRIPTOR, 0);
  close(fd);
  /* Descriptors may be padded with NULs to a sector: the text ends at the
   * first one.  Anything that does not parse is not a virtual disk. */
  if (r <= 0 || vmdk_desc_parse(text, &l->desc) == -1) {
    free(text);
    return VIX_E_DISK_INVAL;
  }
  free(text);
  return add_extents(l);
}

static VixError load_link(struct vmdk_link *l)
{
  char magic[4] = { 0 };
  bool writable;
  int fd = open_rw_or_ro(l->path, &writable);

  if (fd == -1)
    return disk_open_errno(errno);
  l->writable = writable;
  if (pread(fd, magic, 4, 0) == 4 &&
      (memcmp(magic, "KDMV", 4) == 0 || memcmp(magic, "COWD", 4) == 0))
    return open_monolithic(l, fd);
  return open_descriptor(l, fd);
}

static void free_link(struct vmdk_link *l)
{
  for (size_t i = 0; i < l->next_count; i++) {
    if (l->ext[i].fd >= 0)
      close(l->ext[i].fd);
    sparse_close(l->ext[i].sp);
  }
  free(l->ext);
  vmdk_desc_free(&l->desc);
  pthread_mutex_destroy(&l->lock);
  free(l->path);
  free(l);
}

static void put_link(struct vmdk_link *l);

/* The shared link for PATH, opened on first use. */
static VixError get_link(const char *path, bool write, struct vmdk_link **out)
{
  struct stat st;
  struct vmdk_link *l;
  VixError err = VIX_OK;

  if (stat(path, &st) == -1)
    return disk_open_errno(errno);
  if (S_ISDIR(st.st_mode))
    return VIX_E_FILE_ERROR;
  pthread_mutex_lock(&open_links_lock);
  for (l = open_links; l; l = l->next)
    if (l->dev == st.st_dev && l->ino == st.st_ino)
      break;
  if (l) {
    l->refs++;
  } else if (!(l = calloc(1, sizeof *l)) || !(l->path = strdup(path))) {
    free(l);
    l = NULL;
    err = VIX_E_OUT_OF_MEMORY;
  } else {
    pthread_mutex_init(&l->lock, NULL);
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    l->refs = 1;
    err = load_link(l);
    if (err == VIX_OK) {
      l->next = open_links;
      open_links = l;
    } else {
      free_link(l);
      l = NULL;
    }
  }
  pthread_mutex_unlock(&open_links_lock);
  if (err == VIX_OK && write && !l->writable) {
    put_link(l);
    return VIX_E_FILE_READ_ONLY;
  }
  if (err == VIX_OK)
    *out = l;
  return err;
}

static void put_link(struct vmdk_link *l)
{
  struct vmdk_link **p;

  pthread_mutex_lock(&open_links_lock);
  if (--l->refs == 0) {
    for (p = &open_links; *p != l; p = &(*p)->next)
      ;
    *p = l->next;
    free_link(l);
  }
  pthread_mutex_unlock(&open_links_lock);
}

/* ---- the chain ---- */

void vmdk_close(struct vmdk_chain *c)
{
  for (size_t i = 0; i < c->n; i++)
    put_link(c->links[i]);
  free(c);
}

static VixError open_parents(struct vmdk_chain *c)
{
  while (c->links[c->n - 1]->desc.parent_hint) {
    struct vmdk_link *child = c->links[c->n - 1];
    char *path = extent_path(child->path, child->desc.parent_hint);
    VixError err;
    if (!path)
      return VIX_E_OUT_OF_MEMORY;
    if (c->n == MAX_LINKS) {
      free(path);
      return VIX_E_DISK_INVAL;          /* a loop, most likely */
    }
    err = get_link(path, false, &c->links[c->n]);
    free(path);
    if (err != VIX_OK)
      return err;
    c->n++;
  }
  return VIX_OK;
}

static void fill_info(struct fv_disk *d, const struct vmdk_chain *c)
{
  const struct vmdk_desc *desc = &c->links[0]->desc;
  struct fv_disk_info *info = &d->info;

  info->adapter_type = vmdk_adapter_from_name(desc->adapter_type);
  info->num_links = c->n;
  if (desc->heads && desc->sectors) {
    info->geometry_known = true;
    info->phys_geo = (VixDiskLibGeometry){ desc->cylinders, desc->heads,
                                           desc->sectors };
    info->bios_geo = info->phys_geo;
    if (desc->bios_heads && desc->bios_sectors)
      info->bios_geo = (VixDiskLibGeometry){ desc->bios_cylinders,
                                             desc->bios_heads,
                                             desc->bios_sectors };
  }
  info->uuid_known = true;
  info->uuid = desc->uuid ? strdup(desc->uuid) : NULL;
  info->parent_hint = desc->parent_hint ? strdup(desc->parent_hint) : NULL;
}

VixError vmdk_open(struct fv_disk *d, const char *file, uint32_t flags)
{
  bool write = !(flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  struct vmdk_chain *c = calloc(1, sizeof *c);
  VixError err;

  if (!c)
    return VIX_E_OUT_OF_MEMORY;
  err = get_link(file, write, &c->links[0]);
  if (err == VIX_OK) {
    c->n = 1;
    /* SINGLE_LINK opens the child alone: its holes are really holes. */
    if (!(flags & VIXDISKLIB_FLAG_OPEN_SINGLE_LINK))
      err = open_parents(c);
  }
  if (err != VIX_OK) {
    vmdk_close(c);
    return err;
  }
  d->vmdk = c;
  d->capacity = c->links[0]->capacity;
  fill_info(d, c);
  return VIX_OK;
}

static struct vmdk_extent *find_extent(struct vmdk_link *l, uint64_t sector)
{
  for (size_t i = 0; i < l->next_count; i++)
    if (sector < l->ext[i].start + l->ext[i].sectors)
      return &l->ext[i];
  return NULL;
}

/* State of SECTOR in link L alone, and for how many sectors it holds.
 * Past the end of a (shorter) parent the disk reads as zeros. */
static VixError link_state(struct vmdk_link *l, uint64_t sector,
                           enum grain_state *state, uint64_t *run,
                           struct vmdk_extent **extent)
{
  struct vmdk_extent *e = find_extent(l, sector);
  VixError err = VIX_OK;

  *extent = e;
  if (!e) {
    *state = GRAIN_ZERO;
    *run = UINT64_MAX;
    return VIX_OK;
  }
  *run = e->start + e->sectors - sector;
  if (e->kind == EXT_FLAT) {
    *state = GRAIN_DATA;
  } else if (e->kind == EXT_ZERO) {
    *state = GRAIN_ZERO;
  } else {
    uint64_t grain_run;
    err = sparse_state(e->sp, sector - e->start, state, &grain_run);
    if (grain_run < *run)
      *run = grain_run;
  }
  return err;
}

static VixError extent_read(struct vmdk_extent *e, uint64_t sector,
                            uint64_t count, void *buf)
{
  if (e->kind == EXT_FLAT)
    return disk_pread(e->fd, buf, count * SECTOR,
                      (e->offset + sector - e->start) * SECTOR);
  return sparse_read(e->sp, sector - e->start, count, buf);
}

/* Read through links LEVEL.. of the chain. */
static VixError chain_read(struct vmdk_chain *c, size_t level, uint64_t sector,
                           uint64_t count, unsigned char *buf)
{
  struct vmdk_link *l = c->links[level];
  VixError err = VIX_OK;

  pthread_mutex_lock(&l->lock);
  while (count > 0 && err == VIX_OK) {
    enum grain_state state;
    struct vmdk_extent *e;
    uint64_t run;
    err = link_state(l, sector, &state, &run, &e);
    if (err != VIX_OK)
      break;
    if (run > count)
      run = count;
    if (state == GRAIN_DATA)
      err = extent_read(e, sector, run, buf);
    else if (state == GRAIN_UNALLOCATED && level + 1 < c->n)
      err = chain_read(c, level + 1, sector, run, buf);
    else
      memset(buf, 0, run * SECTOR);
    sector += run;
    count -= run;
    buf += run * SECTOR;
  }
  pthread_mutex_unlock(&l->lock);
  return err;
}

VixError vmdk_read(struct vmdk_chain *c, uint64_t start, uint64_t count,
                   void *buf)
{
  return chain_read(c, 0, start, count, buf);
}

/* A new grain of the child starts as what the parents show there. */
struct fill_arg {
  struct vmdk_chain *chain;
  uint64_t extent_start;
};

static VixError fill_from_parent(void *arg, uint64_t sector, uint64_t count,
                                 void *buf)
{
  struct fill_arg *f = arg;

  return chain_read(f->chain, 1, f->extent_start + sector, count, buf);
}

static VixError extent_write(struct vmdk_chain *c, struct vmdk_extent *e,
                             uint64_t sector, uint64_t count,
                             const void *buf)
{
  struct fill_arg fill = { c, e->start };

  if (e->readonly || e->kind == EXT_ZERO)
    return VIX_E_FILE_READ_ONLY;
  if (e->kind == EXT_FLAT)
    return disk_pwrite(e->fd, buf, count * SECTOR,
                       (e->offset + sector - e->start) * SECTOR);
  return sparse_write(e->sp, sector - e->start, count, buf,
                      c->n > 1 ? fill_from_parent : NULL, &fill);
}

VixError vmdk_write(struct vmdk_chain *c, uint64_t start, uint64_t count,
                    const void *buf)
{
  struct vmdk_link *l = c->links[0];
  const unsigned char *p = buf;
  VixError err = VIX_OK;

  pthread_mutex_lock(&l->lock);
  while (count > 0 && err == VIX_OK) {
    struct vmdk_extent *e = find_extent(l, start);
    uint64_t n = e ? e->start + e->sectors - start : 0;
    if (!e) {
      err = VIX_E_DISK_OUTOFRANGE;
      break;
    }
    if (n > count)
      n = count;
    err = extent_write(c, e, start, n, p);
    start += n;
    count -= n;
    p += n * SECTOR;
  }
  pthread_mutex_unlock(&l->lock);
  return err;
}

VixError vmdk_flush(struct vmdk_chain *c)
{
  struct vmdk_link *l = c->links[0];
  VixError err = VIX_OK;

  pthread_mutex_lock(&l->lock);
  for (size_t i = 0; i < l->next_count && err == VIX_OK; i++) {
    if (l->ext[i].kind == EXT_FLAT)
      err = disk_fsync(l->ext[i].fd);
    else if (l->ext[i].kind == EXT_SPARSE)
      err = sparse_flush(l->ext[i].sp);
  }
  pthread_mutex_unlock(&l->lock);
  return err;
}

/* State of SECTOR as the chain from LEVEL shows it: the first link that
 * says anything decides. */
static VixError chain_state(struct vmdk_chain *c, size_t level,
                            uint64_t sector, enum grain_state *state,
                            uint64_t *run)
{
  struct vmdk_link *l = c->links[level];
  struct vmdk_extent *e;
  VixError err;

  pthread_mutex_lock(&l->lock);
  err = link_state(l, sector, state, run, &e);
  pthread_mutex_unlock(&l->lock);
  if (err == VIX_OK && *state == GRAIN_UNALLOCATED && level + 1 < c->n) {
    uint64_t parent_run;
    err = chain_state(c, level + 1, sector, state, &parent_run);
    if (parent_run < *run)
      *run = parent_run;
  }
  return err;
}

/* Allocated chunks come from the grain tables of the chain: a chunk is
 * allocated when any of its grains holds data. */
VixError vmdk_query_allocated(struct vmdk_chain *c, uint64_t start,
                              uint64_t count, uint64_t chunk,
                              struct fv_blocks *b)
{
  uint64_t sector = start, end = start + count, done = start;

  while (sector < end) {
    enum grain_state state;
    uint64_t run;
    VixError err = chain_state(c, 0, sector, &state, &run);
    if (err != VIX_OK)
      return err;
    if (run > end - sector)
      run = end - sector;
    if (state == GRAIN_DATA) {
      uint64_t first = sector / chunk * chunk;
      uint64_t last = (sector + run + chunk - 1) / chunk * chunk;
      if (first < done)
        first = done;
      if (last > first && blocks_add(b, first, last - first) == -1)
        return VIX_E_OUT_OF_MEMORY;
      if (last > done)
        done = last;
    }
    sector += run;
  }
  return VIX_OK;
}

/* ---- create ---- */

/* How each VixDiskLib disk type is laid out on disk. */
struct layout {
  int disk_type;
  const char *create_type;
  const char *extent_type;
  const char *suffix;           /* extent file "BASE-SUFFIX.vmdk"; NULL:
                                 * the descriptor is embedded in the file */
  bool split;                   /* 2 GB extents "BASE-SUFFIX001.vmdk" */
  bool sparse;
  enum sparse_kind sparse_kind;
};

static const struct layout layouts[] = {
  { 1, "monolithicSparse", "SPARSE", NULL, false, true, SPARSE_HOSTED },
  { 2, "monolithicFlat", "FLAT", "flat", false, false, 0 },
  { 3, "twoGbMaxExtentSparse", "SPARSE", "s", true, true, SPARSE_HOSTED },
  { 4, "twoGbMaxExtentFlat", "FLAT", "f", true, false, 0 },
  { 5, "vmfs", "VMFS", "flat", false, false, 0 },
  { 6, "streamOptimized", "SPARSE", NULL, false, true, SPARSE_STREAM },
  { 7, "vmfsThin", "VMFS", "flat", false, false, 0 },
  { 8, "vmfsSparse", "VMFSSPARSE", "delta", false, true, SPARSE_VMFS },
};

static const struct layout *layout_of(int disk_type)
{
  for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++)
    if (layouts[i].disk_type == disk_type)
      return &layouts[i];
  return NULL;
}

/* VMware's uuid style: "60 00 C2 xx xx xx xx xx-xx xx xx xx xx xx xx xx". */
static char *random_uuid(void)
{
  unsigned char x[13] = { 0 };
  char *s;

  if (getrandom(x, sizeof x, 0) != sizeof x)
    return NULL;
  if (asprintf(&s, "60 00 C2 %02x %02x %02x %02x %02x-%02x %02x %02x %02x "
               "%02x %02x %02x %02x", x[0], x[1], x[2], x[3], x[4], x[5],
               x[6], x[7], x[8], x[9], x[10], x[11], x[12]) == -1)
    return NULL;
  return s;
}

/* File name of extent I (0-based) without directory. */
static char *extent_name(const struct layout *lay, const char *file,
                         size_t i)
{
  char *copy = strdup(file), *base, *name = NULL;
  int r;

  if (!copy)
    return NULL;
  base = basename(copy);
  if (!lay->suffix) {
    name = strdup(base);
    free(copy);
    return name;
  }
  if (vmdk_is_vmdk_name(base))
    base[strlen(base) - 5] = '\0';
  r = lay->split ? asprintf(&name, "%s-%s%03zu.vmdk", base, lay->suffix, i + 1)
                 : asprintf(&name, "%s-%s.vmdk", base, lay->suffix);
  free(copy);
  return r == -1 ? NULL : name;
}

static VixError describe(struct vmdk_desc *d, const struct layout *lay,
                         const char *file, const VixDiskLibCreateParams *cp)
{
  uint64_t per = lay->split ? SPLIT_EXTENT_SECTORS : cp->capacity;
  bool ide = cp->adapterType == 1;
  uint64_t cyl = cp->capacity / ((ide ? 16 : 255) * 63);
  unsigned cid;

  memset(d, 0, sizeof *d);
  if (getrandom(&cid, sizeof cid, 0) != sizeof cid)
    cid = getpid();
  d->cid = cid;
  d->parent_cid = VMDK_NO_PARENT_CID;
  d->create_type = strdup(lay->create_type);
  d->adapter_type = strdup(vmdk_adapter_name(cp->adapterType));
  if (asprintf(&d->hw_version, "%u", cp->hwVersion) == -1)
    d->hw_version = NULL;
  d->uuid = random_uuid();
  d->heads = ide ? 16 : 255;
  d->sectors = 63;
  d->cylinders = cyl > (ide ? 16383 : 65535) ? (ide ? 16383 : 65535) : cyl;
  d->nextents = (cp->capacity + per - 1) / per;
  d->extents = calloc(d->nextents, sizeof *d->extents);
  if (!d->create_type || !d->adapter_type || !d->hw_version || !d->uuid ||
      !d->extents)
    return VIX_E_OUT_OF_MEMORY;
  for (size_t i = 0; i < d->nextents; i++) {
    struct vmdk_desc_extent *e = &d->extents[i];
    strcpy(e->access, "RW");
    strcpy(e->type, lay->extent_type);
    e->sectors = i + 1 < d->nextents ? per : cp->capacity - i * per;
    if (!(e->file = extent_name(lay, file, i)))
      return VIX_E_OUT_OF_MEMORY;
  }
  return VIX_OK;
}

static VixError create_extent_file(const struct layout *lay, const char *path,
                                   uint64_t sectors)
{
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

  if (fd == -1)
    return disk_open_errno(errno);
  if (lay->sparse)
    return sparse_create(fd, lay->sparse_kind, sectors, NULL);
  if (ftruncate(fd, sectors * SECTOR) == -1) {
    close(fd);
    return disk_io_errno(errno);
  }
  close(fd);
  return VIX_OK;
}

/* Separate descriptor file plus one or more extent files. */
static VixError create_split(int fd, const struct layout *lay,
                             const char *file, const struct vmdk_desc *d,
                             const char *text)
{
  size_t made = 0;
  VixError err = VIX_OK;

  for (; made < d->nextents && err == VIX_OK; made++) {
    char *path = extent_path(file, d->extents[made].file);
    err = path ? create_extent_file(lay, path, d->extents[made].sectors)
               : VIX_E_OUT_OF_MEMORY;
    free(path);
  }
  if (err == VIX_OK)
    err = disk_pwrite(fd, text, strlen(text), 0);
  if (err == VIX_OK)
    err = disk_fsync(fd);
  close(fd);
  /* Undo: extents made so far (the last one only if it was created). */
  for (size_t i = 0; err != VIX_OK && i < made; i++) {
    char *path = extent_path(file, d->extents[i].file);
    if (path && (i + 1 < made || err != VIX_E_FILE_ALREADY_EXISTS))
      unlink(path);
    free(path);
  }
  return err;
}

VixError vmdk_create(const char *file, const VixDiskLibCreateParams *cp)
{
  const struct layout *lay = layout_of(cp->diskType);
  struct vmdk_desc d;
  char *text = NULL;
  int fd;
  VixError err;

  if (!lay || cp->capacity == 0)
    return VIX_E_INVALID_ARG;
  fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd == -1)
    return disk_open_errno(errno);
  err = describe(&d, lay, file, cp);
  if (err == VIX_OK && !(text = vmdk_desc_format(&d)))
    err = VIX_E_OUT_OF_MEMORY;
  if (err != VIX_OK)
    close(fd);
  else if (lay->suffix)
    err = create_split(fd, lay, file, &d, text);
  else
    err = sparse_create(fd, lay->sparse_kind, cp->capacity, text);
  if (err != VIX_OK)
    unlink(file);
  free(text);
  vmdk_desc_free(&d);
  return err;
}
