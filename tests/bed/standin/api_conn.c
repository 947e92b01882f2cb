/* api_conn.c -- connections and handles: ConnectEx, Disconnect, Open,
 * Close, GetTransportMode, Create, including the emulation of remote
 * (ESXi/vCenter) servers described by "server" blocks in the config. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fakevddk.h"

/* Line number real VDDK reports in its "Cannot open disk" message. */
#define OPENEX_LINE 5270

static atomic_int next_conn_id, next_handle_id;

struct fv_conn *fv_conn_check(VixDiskLibConnection c, enum fv_fn fn)
{
  if (!c || c->magic != FV_CONN_MAGIC)
    fv_die("fakevddk: VixDiskLib_%s called with an invalid connection %p\n",
           fv_fn_names[fn], (void *)c);
  return c;
}

struct fv_handle *fv_handle_check(VixDiskLibHandle h, enum fv_fn fn)
{
  if (!h || h->magic != FV_HANDLE_MAGIC)
    fv_die("fakevddk: VixDiskLib_%s called with an invalid handle %p\n",
           fv_fn_names[fn], (void *)h);
  return h;
}

static bool str_eq(const char *a, const char *b)
{
  return a && b && strcmp(a, b) == 0;
}

/* Is MODE one of the colon-separated words in LIST? */
static bool list_has(const char *list, const char *mode, size_t len)
{
  while (list && *list) {
    size_t n = strcspn(list, ":");
    if (n == len && strncmp(list, mode, len) == 0)
      return true;
    list += n + (list[n] == ':');
  }
  return false;
}

/* First mode of WANTED (client order) that the server offers; NULL wanted
 * means the server's first mode.  Returns a malloc'd string or NULL. */
static char *choose_mode(const char *offered, const char *wanted)
{
  const char *p = wanted ? wanted : offered;

  while (p && *p) {
    size_t n = strcspn(p, ":");
    if (n > 0 && list_has(offered, p, n))
      return strndup(p, n);
    p += n + (p[n] == ':');
  }
  return NULL;
}

/* ---- ConnectEx ---- */

static void log_connect_params(struct fv_log *l, const VixDiskLibConnectParams *p)
{
  bool uid = p->credType == VIXDISKLIB_CRED_UID;
  bool sess = p->credType == VIXDISKLIB_CRED_SESSIONID;

  log_str(l, "vmxSpec", p->vmxSpec);
  log_str(l, "serverName", p->serverName);
  log_str(l, "thumbPrint", p->thumbPrint);
  log_int(l, "credType", p->credType);
  log_str(l, "userName", uid ? p->creds.uid.userName :
                         sess ? p->creds.sessionId.userName : NULL);
  log_str(l, "password", uid ? p->creds.uid.password : NULL);
  log_str(l, "cookie", sess ? p->creds.sessionId.cookie : NULL);
  log_str(l, "key", sess ? p->creds.sessionId.key : NULL);
  log_u64(l, "port", p->port);
  log_u64(l, "nfcHostPort", p->nfcHostPort);
  log_int(l, "specType", p->specType);
}

static bool creds_match(const struct fv_cred *list, const char *user,
                        const char *secret)
{
  for (; list; list = list->next)
    if (str_eq(list->user, user) && str_eq(list->secret, secret))
      return true;
  return false;
}

static VixError check_credentials(const struct fv_server *s,
                                  const VixDiskLibConnectParams *p)
{
  switch (p->credType) {
  case VIXDISKLIB_CRED_UID:
    return creds_match(s->users, p->creds.uid.userName,
                       p->creds.uid.password)
           ? VIX_OK : VIX_E_AUTHENTICATION_FAIL;
  case VIXDISKLIB_CRED_SESSIONID:
    return creds_match(s->cookies, p->creds.sessionId.userName,
                       p->creds.sessionId.cookie)
           ? VIX_OK : VIX_E_AUTHENTICATION_FAIL;
  default:
    return VIX_E_INVALID_ARG;
  }
}

static const struct fv_vm *find_vm(const struct fv_server *s,
                                   const char *spec)
{
  for (const struct fv_vm *vm = s->vms; spec && vm; vm = vm->next)
    if (strcmp(vm->spec, spec) == 0)
      return vm;
  return NULL;
}

static const struct fv_snapshot *find_snapshot(const struct fv_vm *vm,
                                               const char *name)
{
  for (const struct fv_snapshot *s = vm->snapshots; s; s = s->next)
    if (strcmp(s->name, name) == 0)
      return s;
  return NULL;
}

/* A snapshot of "snapshots DIR": DIR/MOREF (malloc'd) when that is a
 * directory, else NULL.  A moref naming no single directory entry is
 * never one. */
static char *find_snapshot_dir(const struct fv_vm *vm, const char *name)
{
  struct stat st;
  char *dir;

  if (!vm->snapshots_dir || !*name || strchr(name, '/') ||
      strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return NULL;
  if (asprintf(&dir, "%s/%s", vm->snapshots_dir, name) == -1)
    return NULL;
  if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
    return dir;
  free(dir);
  return NULL;
}

static bool has_snapshot(const struct fv_conn *conn)
{
  return conn->snapshot || conn->snapshot_dir;
}

static bool vm_running(const struct fv_vm *vm)
{
  return vm->running_while ? access(vm->running_while, F_OK) == 0
                           : vm->running;
}

/* Validate a remote connection the way a vSphere login would.  The
 * thumbprint and NFC port are only used when a disk is opened. */
static VixError connect_remote(struct fv_conn *conn,
                               const VixDiskLibConnectParams *p,
                               const char *snapshotRef,
                               const char *transportModes)
{
  const struct fv_server *s = config_find_server(fv_cfg(), p->serverName);
  VixError err;

  if (!s)
    return VIX_E_HOST_NETWORK_CONN_REFUSED;
  if (s->down == DOWN_YES)
    return VIX_E_HOST_SERVER_SHUTDOWN;
  if ((err = outage_check_server(s)) != VIX_OK)
    return err;
  if (p->port != 0 && p->port != s->port)
    return VIX_E_HOST_NETWORK_CONN_REFUSED;
  if ((err = check_credentials(s, p)) != VIX_OK)
    return err;
  conn->vm = find_vm(s, p->vmxSpec);
  if (!conn->vm)
    return VIX_E_VM_NOT_FOUND;
  if (snapshotRef && !(conn->snapshot = find_snapshot(conn->vm, snapshotRef))
      && !(conn->snapshot_dir = find_snapshot_dir(conn->vm, snapshotRef)))
    return VIX_E_SNAPSHOT_NOTFOUND;
  conn->remote = true;
  conn->server = s;
  conn->mode = choose_mode(s->transports, transportModes);
  conn->thumbprint = p->thumbPrint ? strdup(p->thumbPrint) : NULL;
  conn->nfc_port = p->nfcHostPort;
  return VIX_OK;
}

/* Compatibility with the upstream test double's password test. */
static void maybe_print_password(const VixDiskLibConnectParams *p)
{
  if (getenv("DUMMY_VDDK_PRINT_PASSWORD") &&
      p->credType == VIXDISKLIB_CRED_UID && p->creds.uid.password)
    fprintf(stderr, "dummy-vddk: password=%s\n", p->creds.uid.password);
}

static void free_conn(struct fv_conn *conn)
{
  conn->magic = FV_DEAD_MAGIC;
  free(conn->mode);
  free(conn->thumbprint);
  free(conn->snapshot_dir);
  free(conn);
}

VIX_EXPORT VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *p,
                                         Bool readOnly,
                                         const char *snapshotRef,
                                         const char *transportModes,
                                         VixDiskLibConnection *connOut)
{
  struct fv_call c;
  struct fv_conn *conn;
  VixError err;

  call_begin(&c, FN_ConnectEx, true);
  if (p)
    log_connect_params(&c.log, p);
  log_int(&c.log, "readOnly", readOnly);
  log_str(&c.log, "snapshotRef", snapshotRef);
  log_str(&c.log, "transportModes", transportModes);
  call_guard_global(&c);
  if (call_inject(&c, true, &err, NULL))
    goto out;
  err = VIX_E_INVALID_ARG;
  if (!p || !connOut)
    goto out;
  maybe_print_password(p);
  err = VIX_E_OUT_OF_MEMORY;
  if (!(conn = calloc(1, sizeof *conn)))
    goto out;
  conn->readonly = readOnly;
  /* Local when no server is named: everything else is ignored. */
  err = p->serverName ? connect_remote(conn, p, snapshotRef, transportModes)
                      : VIX_OK;
  if (err != VIX_OK) {
    free_conn(conn);
    goto out;
  }
  conn->magic = FV_CONN_MAGIC;
  conn->id = atomic_fetch_add(&next_conn_id, 1) + 1;
  *connOut = conn;
  log_id(&c.log, "conn", conn->id);
  return call_end(&c, VIX_OK);

out:
  log_id(&c.log, "conn", 0);
  return call_end(&c, err);
}

VIX_EXPORT VixError VixDiskLib_Disconnect(VixDiskLibConnection cp)
{
  struct fv_call c;
  struct fv_conn *conn;
  VixError err = VIX_OK;

  call_begin(&c, FN_Disconnect, true);
  conn = fv_conn_check(cp, FN_Disconnect);
  log_id(&c.log, "conn", conn->id);
  call_guard_global(&c);
  if (!call_inject(&c, true, &err, NULL))
    free_conn(conn);
  return call_end(&c, err);
}

/* ---- Open / Close ---- */

static const struct fv_datastore *find_datastore(
    const struct fv_datastore *list, const char *name, size_t len)
{
  for (const struct fv_datastore *d = list; d; d = d->next)
    if (strlen(d->name) == len && strncmp(d->name, name, len) == 0)
      return d;
  return NULL;
}

/* A disk of a "snapshots DIR" snapshot: SNAPSHOT_DIR/DATASTORE/rel. */
static VixError frozen_path(const char *snapshot_dir, const char *ds,
                            size_t dslen, const char *rel, char **file)
{
  return asprintf(file, "%s/%.*s/%s", snapshot_dir, (int)dslen, ds, rel)
         == -1 ? VIX_E_OUT_OF_MEMORY : VIX_OK;
}

/* "[datastore] rel/path.vmdk" -> DATASTORE_DIR/rel/path.vmdk (malloc'd),
 * the snapshot's frozen datastores first. */
static VixError resolve_remote_path(const struct fv_conn *conn,
                                    const char *path, char **file)
{
  const struct fv_datastore *d = NULL;
  const char *close_br, *rel;
  size_t dslen;

  if (!path || path[0] != '[' || !(close_br = strchr(path, ']')))
    return VIX_E_INVALID_ARG;
  dslen = close_br - path - 1;
  rel = close_br + 1;
  while (*rel == ' ')
    rel++;
  if (*rel == '\0' || *rel == '/')
    return VIX_E_FILE_NOT_FOUND;
  /* Refuse any ".." component: it would escape the datastore. */
  for (const char *p = rel; *p; p += strcspn(p, "/"), p += *p == '/')
    if (strncmp(p, "..", 2) == 0 && (p[2] == '/' || p[2] == '\0'))
      return VIX_E_FILE_NOT_FOUND;
  if (conn->snapshot)
    d = find_datastore(conn->snapshot->datastores, path + 1, dslen);
  if (!d && conn->snapshot_dir)
    return frozen_path(conn->snapshot_dir, path + 1, dslen, rel, file);
  if (!d)
    d = find_datastore(conn->vm->datastores, path + 1, dslen);
  if (!d)
    return VIX_E_FILE_NOT_FOUND;
  return asprintf(file, "%s/%s", d->dir, rel) == -1 ? VIX_E_OUT_OF_MEMORY
                                                    : VIX_OK;
}

/* Certificate check as real VDDK does it at open time: on mismatch it
 * logs the two thumbprints and fails with the generic error 1. */
static VixError check_thumbprint(const struct fv_conn *conn)
{
  const char *real = conn->server->thumbprint;

  if (!real || (conn->thumbprint && strcasecmp(real, conn->thumbprint) == 0))
    return VIX_OK;
  if (fv_log_cb)
    fv_callf(fv_log_cb, "VixDiskLibVim: Failed to verify SSL certificate: "
             "actual thumbprint=%s expected=%s\n", real,
             conn->thumbprint ? conn->thumbprint : "(null)");
  return VIX_E_FAIL;
}

static VixError open_remote(const struct fv_conn *conn, const char *path,
                            char **file)
{
  VixError err;

  if (conn->server->down != DOWN_NO)
    return VIX_E_HOST_SERVER_SHUTDOWN;
  if ((err = outage_check_server(conn->server)) != VIX_OK)
    return err;
  if ((err = check_thumbprint(conn)) != VIX_OK)
    return err;
  if (conn->nfc_port != 0 && conn->nfc_port != conn->server->nfc_port)
    return VIX_E_HOST_NETWORK_CONN_REFUSED;
  /* No usable transport: real VDDK reports error 13 in this case. */
  if (!conn->mode)
    return VIX_E_FILE_ACCESS_ERROR;
  /* A powered-on VM holds its base disks open: without a snapshot the
   * server refuses them with error 13, as some guests do in the field. */
  if (vm_running(conn->vm) && !has_snapshot(conn))
    return VIX_E_FILE_ACCESS_ERROR;
  return resolve_remote_path(conn, path, file);
}

static VixError open_disk(struct fv_conn *conn, const char *path,
                          uint32_t flags, struct fv_handle *h)
{
  char *file = NULL;
  VixError err;

  if (!conn->remote)
    return path && path[0] == '/' ? disk_open(&h->disk, path, flags)
                                  : VIX_E_INVALID_ARG;
  err = open_remote(conn, path, &file);
  if (err == VIX_OK)
    err = disk_open(&h->disk, file, flags);
  free(file);
  if (err != VIX_OK && fv_log_cb)
    fv_callf(fv_log_cb, "VixDiskLib: VixDiskLib_OpenEx: Cannot open disk %s. "
             "Error %llu (%s) at %d.\n", path ? path : "(null)",
             (unsigned long long)VIX_ERROR_CODE(err), fv_error_text(err),
             OPENEX_LINE);
  return err;
}

static struct fv_handle *new_handle(struct fv_conn *conn, const char *path,
                                    uint32_t flags)
{
  struct fv_handle *h = calloc(1, sizeof *h);

  if (!h || !(h->path = strdup(path ? path : ""))) {
    free(h);
    return NULL;
  }
  h->conn = conn;
  h->flags = flags;
  h->disk.fd = -1;
  h->mode = conn->remote ? conn->mode : "file";
  pthread_mutex_init(&h->lock, NULL);
  pthread_cond_init(&h->idle, NULL);
  return h;
}

static void free_handle(struct fv_handle *h)
{
  h->magic = FV_DEAD_MAGIC;
  disk_close(&h->disk);
  pthread_mutex_destroy(&h->lock);
  pthread_cond_destroy(&h->idle);
  free(h->path);
  free(h);
}

VIX_EXPORT VixError VixDiskLib_Open(VixDiskLibConnection cp, const char *path,
                                    uint32_t flags, VixDiskLibHandle *out)
{
  struct fv_call c;
  struct fv_conn *conn;
  struct fv_handle *h;
  VixError err;

  call_begin(&c, FN_Open, true);
  conn = fv_conn_check(cp, FN_Open);
  log_id(&c.log, "conn", conn->id);
  log_str(&c.log, "path", path);
  log_u64(&c.log, "flags", flags);
  call_guard_global(&c);
  if (call_inject(&c, true, &err, NULL))
    goto out;
  err = VIX_E_OUT_OF_MEMORY;
  if (!out || !(h = new_handle(conn, path, flags))) {
    err = out ? err : VIX_E_INVALID_ARG;
    goto out;
  }
  err = open_disk(conn, path, flags, h);
  if (err != VIX_OK) {
    free_handle(h);
    goto out;
  }
  outage_note_open(h);
  h->magic = FV_HANDLE_MAGIC;
  h->id = atomic_fetch_add(&next_handle_id, 1) + 1;
  *out = h;
  log_id(&c.log, "handle", h->id);
  return call_end(&c, VIX_OK);

out:
  log_id(&c.log, "handle", 0);
  return call_end(&c, err);
}

VIX_EXPORT VixError VixDiskLib_Close(VixDiskLibHandle hp)
{
  struct fv_call c;
  struct fv_handle *h;
  VixError err = VIX_OK;
  unsigned outstanding;

  call_begin(&c, FN_Close, true);
  h = fv_handle_check(hp, FN_Close);
  log_id(&c.log, "handle", h->id);
  call_guard_handle(&c, h);
  call_guard_global(&c);
  if (call_inject(&c, true, &err, NULL))
    return call_end(&c, err);
  /* Real VDDK misbehaves when closing with requests in flight; be
   * lenient, but record it so tests can complain. */
  pthread_mutex_lock(&h->lock);
  outstanding = h->outstanding;
  pthread_mutex_unlock(&h->lock);
  log_u64(&c.log, "outstanding", outstanding);
  async_wait_handle(h);
  log_end_result(&c.log, VIX_OK);
  c.handle_owner = NULL;        /* the owner word dies with the handle */
  free_handle(h);
  call_release(&c);
  return VIX_OK;
}

VIX_EXPORT const char *VixDiskLib_GetTransportMode(VixDiskLibHandle hp)
{
  struct fv_call c;
  struct fv_handle *h;

  call_begin(&c, FN_GetTransportMode, true);
  h = fv_handle_check(hp, FN_GetTransportMode);
  log_id(&c.log, "handle", h->id);
  call_guard_handle(&c, h);
  call_inject(&c, true, &(VixError){0}, NULL);
  log_str(&c.log, "mode", h->mode);
  call_end_void(&c);
  return h->mode;
}

/* ---- Create ---- */

static void log_create_params(struct fv_log *l, const VixDiskLibCreateParams *cp)
{
  if (!cp)
    return;
  log_int(l, "diskType", cp->diskType);
  log_int(l, "adapterType", cp->adapterType);
  log_u64(l, "hwVersion", cp->hwVersion);
  log_u64(l, "capacity", cp->capacity);
  log_u64(l, "logicalSectorSize", cp->logicalSectorSize);
  log_u64(l, "physicalSectorSize", cp->physicalSectorSize);
}

VIX_EXPORT VixError VixDiskLib_Create(VixDiskLibConnection cp,
                                      const char *path,
                                      const VixDiskLibCreateParams *params,
                                      VixDiskLibProgressFunc progress,
                                      void *progressData)
{
  struct fv_call c;
  struct fv_conn *conn;
  VixError err;

  (void)progressData;
  call_begin(&c, FN_Create, true);
  conn = fv_conn_check(cp, FN_Create);
  log_id(&c.log, "conn", conn->id);
  log_str(&c.log, "path", path);
  log_create_params(&c.log, params);
  log_bool(&c.log, "progress", progress != NULL);
  if (call_inject(&c, true, &err, NULL))
    return call_end(&c, err);
  if (conn->remote)                  /* VDDK creates local disks only */
    return call_end(&c, VIX_E_NOT_SUPPORTED);
  if (!params || !path || path[0] != '/')
    return call_end(&c, VIX_E_INVALID_ARG);
  return call_end(&c, disk_create(path, params));
}
