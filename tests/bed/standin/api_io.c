/* api_io.c -- per-handle entry points: GetInfo, Read/Write (sync and
 * async), Wait, Flush, QueryAllocatedBlocks and the matching frees. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakevddk.h"

static bool in_range(const struct fv_handle *h, uint64_t start, uint64_t count)
{
  uint64_t cap = h->disk.capacity;

  return start <= cap && count <= cap - start;
}

static bool is_readonly(const struct fv_handle *h)
{
  return h->flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY;
}

/* ---- GetInfo ---- */

static uint32_t min_u64(uint64_t a, uint64_t b)
{
  return a < b ? a : b;
}

/* FNV-1a; good enough to give every path its own stable uuid. */
static uint64_t fnv1a(const char *s, uint64_t h)
{
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3u;
  return h;
}

/* VMware style "60 00 C2 xx xx xx xx xx-xx xx xx xx xx xx xx xx". */
static char *make_uuid(const char *path)
{
  uint64_t a = fnv1a(path, 0xcbf29ce484222325u);
  uint64_t b = fnv1a(path, a ^ 0x9e3779b97f4a7c15u);
  unsigned char x[13];
  char *s;

  for (int i = 0; i < 8; i++)
    x[i] = b >> (8 * i);
  for (int i = 0; i < 5; i++)
    x[8 + i] = a >> (8 * i);
  if (asprintf(&s, "60 00 C2 %02x %02x %02x %02x %02x-%02x %02x %02x %02x "
               "%02x %02x %02x %02x", x[0], x[1], x[2], x[3], x[4], x[5],
               x[6], x[7], x[8], x[9], x[10], x[11], x[12]) == -1)
    return NULL;
  return s;
}

/* Geometry from the disk (VMDK descriptor) or, for raw disks, derived
 * from the capacity; config directives override either. */
static void fill_geometry(VixDiskLibInfo *info, const struct fv_disk *d,
                          const struct fv_config *cfg)
{
  uint64_t cap = info->capacity;

  info->biosGeo = (VixDiskLibGeometry){ min_u64(cap / (255 * 63), 65535),
                                        255, 63 };
  info->physGeo = (VixDiskLibGeometry){ min_u64(cap / (16 * 63), 16383),
                                        16, 63 };
  if (d->info.geometry_known) {
    info->biosGeo = d->info.bios_geo;
    info->physGeo = d->info.phys_geo;
  }
  if (cfg->bios_geo_set)
    info->biosGeo = cfg->bios_geo;
  if (cfg->phys_geo_set)
    info->physGeo = cfg->phys_geo;
}

static char *dup_or_null(const char *s)
{
  return s ? strdup(s) : NULL;
}

static VixError make_info(const struct fv_handle *h, VixDiskLibInfo **out)
{
  const struct fv_config *cfg = fv_cfg();
  const struct fv_disk_info *di = &h->disk.info;
  VixDiskLibInfo *info = calloc(1, sizeof *info);

  if (!info)
    return VIX_E_OUT_OF_MEMORY;
  info->capacity = h->disk.capacity;
  fill_geometry(info, &h->disk, cfg);
  info->adapterType = cfg->adapter_type_set ? cfg->adapter_type
                                            : di->adapter_type;
  info->numLinks = cfg->num_links_set ? cfg->num_links : di->num_links;
  info->parentFileNameHint = dup_or_null(cfg->parent_hint ? cfg->parent_hint
                                                          : di->parent_hint);
  if (cfg->uuid_set)
    info->uuid = dup_or_null(cfg->uuid);
  else if (di->uuid_known)
    info->uuid = dup_or_null(di->uuid);
  else
    info->uuid = make_uuid(h->path);
  /* The last two fields only exist in VDDK >= 7, but they are filled for
   * 6.x too: a plugin that reads them for a 6.x library gets caught. */
  info->logicalSectorSize = cfg->logical_sector_size;
  info->physicalSectorSize = cfg->physical_sector_size;
  *out = info;
  return VIX_OK;
}

VIX_EXPORT VixError VixDiskLib_GetInfo(VixDiskLibHandle hp,
                                       VixDiskLibInfo **info)
{
  struct fv_call c;
  struct fv_handle *h;
  VixError err;

  call_begin(&c, FN_GetInfo, true);
  h = fv_handle_check(hp, FN_GetInfo);
  log_id(&c.log, "handle", h->id);
  call_guard_handle(&c, h);
  if (call_inject(&c, true, &err, NULL))
    return call_end(&c, err);
  if (!info)
    return call_end(&c, VIX_E_INVALID_ARG);
  if ((err = outage_check_handle(h)) != VIX_OK)
    return call_end(&c, err);
  return call_end(&c, make_info(h, info));
}

VIX_EXPORT void VixDiskLib_FreeInfo(VixDiskLibInfo *info)
{
  struct fv_call c;

  call_begin(&c, FN_FreeInfo, true);
  call_inject(&c, true, &(VixError){0}, NULL);
  if (info) {
    free(info->parentFileNameHint);
    free(info->uuid);
    free(info);
  }
  call_end_void(&c);
}

/* ---- synchronous I/O ---- */

static VixError check_io(const struct fv_handle *h, enum fv_op op,
                         uint64_t start, uint64_t count, const void *buf)
{
  if (op == OP_WRITE && is_readonly(h))
    return VIX_E_FILE_READ_ONLY;
  if (!in_range(h, start, count))
    return VIX_E_DISK_OUTOFRANGE;
  if (!buf && count > 0)
    return VIX_E_INVALID_ARG;
  return VIX_OK;
}

/* What the remote side says about a valid request (VIX_OK when local). */
static VixError remote_io_fault(const struct fv_handle *h, uint64_t count)
{
  VixError err = outage_check_handle(h);

  return err != VIX_OK ? err : nfc_check_request(h, count);
}

static VixError sync_io(enum fv_fn fn, enum fv_op op, VixDiskLibHandle hp,
                        uint64_t start, uint64_t count, void *buf)
{
  struct fv_call c;
  struct fv_handle *h;
  VixError err;

  call_begin(&c, fn, true);
  h = fv_handle_check(hp, fn);
  log_id(&c.log, "handle", h->id);
  log_u64(&c.log, "start", start);
  log_u64(&c.log, "count", count);
  call_guard_handle(&c, h);
  if (call_inject(&c, true, &err, NULL))
    return call_end(&c, err);
  err = check_io(h, op, start, count, buf);
  if (err == VIX_OK)
    err = remote_io_fault(h, count);
  if (err == VIX_OK)
    err = op == OP_READ ? disk_read(&h->disk, start, count, buf)
                        : disk_write(&h->disk, start, count, buf);
  return call_end(&c, err);
}

VIX_EXPORT VixError VixDiskLib_Read(VixDiskLibHandle h,
                                    VixDiskLibSectorType start,
                                    VixDiskLibSectorType count,
                                    uint8_t *buf)
{
  return sync_io(FN_Read, OP_READ, h, start, count, buf);
}

VIX_EXPORT VixError VixDiskLib_Write(VixDiskLibHandle h,
                                     VixDiskLibSectorType start,
                                     VixDiskLibSectorType count,
                                     const uint8_t *buf)
{
  return sync_io(FN_Write, OP_WRITE, h, start, count, (void *)buf);
}

/* ---- asynchronous I/O ---- */

static unsigned current_outstanding(struct fv_handle *h)
{
  unsigned n;

  pthread_mutex_lock(&h->lock);
  n = h->outstanding;
  pthread_mutex_unlock(&h->lock);
  return n;
}

/* Validation failures and plain injected failures return synchronously and
 * never call back; everything else is accepted (VIX_ASYNC) and completed by
 * the engine at submission + async_delay_us + latency. */
static VixError async_io(enum fv_fn fn, enum fv_op op, VixDiskLibHandle hp,
                         uint64_t start, uint64_t count, void *buf,
                         VixDiskLibCompletionCB cb, void *cbData)
{
  const struct fv_config *cfg = fv_cfg();
  struct fv_async_req req = { .op = op, .start = start, .count = count,
                              .buf = buf, .cb = cb, .cb_data = cbData };
  struct fv_call c;
  bool async_fail = false;
  VixError err;

  call_begin(&c, fn, true);
  req.h = fv_handle_check(hp, fn);
  log_id(&c.log, "handle", req.h->id);
  log_u64(&c.log, "start", start);
  log_u64(&c.log, "count", count);
  call_guard_handle(&c, req.h);
  if (call_inject(&c, false, &err, &async_fail)) {
    if (!async_fail)
      goto out;
    req.forced = true;
    req.forced_result = err;
  } else if ((err = check_io(req.h, op, start, count, buf)) != VIX_OK) {
    goto out;
  } else if ((err = remote_io_fault(req.h, count)) != VIX_OK) {
    /* The server answers the request with the error. */
    req.forced = true;
    req.forced_result = err;
  }
  req.due_ns = fv_now_ns() +
               (cfg->async_delay_us + fault_latency_us(fn)) * 1000;
  log_u64(&c.log, "inflight", async_submit(&req, cfg->async_inline));
  return call_end(&c, VIX_ASYNC);

out:
  log_u64(&c.log, "inflight", current_outstanding(req.h));
  return call_end(&c, err);
}

VIX_EXPORT VixError VixDiskLib_ReadAsync(VixDiskLibHandle h,
                                         VixDiskLibSectorType start,
                                         VixDiskLibSectorType count,
                                         uint8_t *buf,
                                         VixDiskLibCompletionCB cb,
                                         void *cbData)
{
  return async_io(FN_ReadAsync, OP_READ, h, start, count, buf, cb, cbData);
}

VIX_EXPORT VixError VixDiskLib_WriteAsync(VixDiskLibHandle h,
                                          VixDiskLibSectorType start,
                                          VixDiskLibSectorType count,
                                          const uint8_t *buf,
                                          VixDiskLibCompletionCB cb,
                                          void *cbData)
{
  return async_io(FN_WriteAsync, OP_WRITE, h, start, count, (void *)buf, cb,
                  cbData);
}

/* Built without Wait for the "missing symbol" test variant. */
#ifndef FAKEVDDK_OMIT_WAIT
VIX_EXPORT VixError VixDiskLib_Wait(VixDiskLibHandle hp)
{
  struct fv_call c;
  struct fv_handle *h;
  VixError err;

  call_begin(&c, FN_Wait, true);
  h = fv_handle_check(hp, FN_Wait);
  log_id(&c.log, "handle", h->id);
  call_guard_handle(&c, h);
  if (call_inject(&c, true, &err, NULL))
    return call_end(&c, err);
  async_wait_handle(h);
  return call_end(&c, VIX_OK);
}
#endif

VIX_EXPORT VixError VixDiskLib_Flush(VixDiskLibHandle hp)
{
  struct fv_call c;
  struct fv_handle *h;
  VixError err;

  call_begin(&c, FN_Flush, true);
  h = fv_handle_check(hp, FN_Flush);
  log_id(&c.log, "handle", h->id);
  call_guard_handle(&c, h);
  if (call_inject(&c, true, &err, NULL))
    return call_end(&c, err);
  if ((err = outage_check_handle(h)) != VIX_OK)
    return call_end(&c, err);
  return call_end(&c, disk_flush(&h->disk));
}

/* ---- QueryAllocatedBlocks ---- */

static VixError check_query(const struct fv_handle *h, uint64_t start,
                            uint64_t count, uint64_t chunk, const void *out)
{
  if (!out || chunk < VIXDISKLIB_MIN_CHUNK_SIZE || count == 0)
    return VIX_E_INVALID_ARG;
  if (start % chunk != 0 || count % chunk != 0)
    return VIX_E_INVALID_ARG;
  if (count / chunk > VIXDISKLIB_MAX_CHUNK_NUMBER)
    return VIX_E_INVALID_ARG;
  if (!in_range(h, start, count))
    return VIX_E_INVALID_ARG;
  return VIX_OK;
}

VIX_EXPORT VixError VixDiskLib_QueryAllocatedBlocks(
    VixDiskLibHandle hp, VixDiskLibSectorType start,
    VixDiskLibSectorType count, VixDiskLibSectorType chunk,
    VixDiskLibBlockList **list)
{
  struct fv_call c;
  struct fv_handle *h;
  VixError err;

  call_begin(&c, FN_QueryAllocatedBlocks, true);
  h = fv_handle_check(hp, FN_QueryAllocatedBlocks);
  log_id(&c.log, "handle", h->id);
  log_u64(&c.log, "start", start);
  log_u64(&c.log, "count", count);
  log_u64(&c.log, "chunk", chunk);
  call_guard_handle(&c, h);
  if (call_inject(&c, true, &err, NULL))
    return call_end(&c, err);
  err = check_query(h, start, count, chunk, list);
  if (err == VIX_OK)
    err = outage_check_handle(h);
  if (err == VIX_OK)
    err = disk_query_allocated(&h->disk, start, count, chunk, list);
  if (err == VIX_OK)
    log_u64(&c.log, "nblocks", (*list)->numBlocks);
  return call_end(&c, err);
}

VIX_EXPORT VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *list)
{
  struct fv_call c;
  VixError err;

  call_begin(&c, FN_FreeBlockList, true);
  if (call_inject(&c, true, &err, NULL))
    return call_end(&c, err);
  free(list);
  return call_end(&c, VIX_OK);
}
