/* api_lib.c -- library-wide entry points: InitEx/Exit, error texts,
 * transport list, connect-param allocation; and the process-wide state
 * they manage (callbacks, pid of InitEx, pretended version). */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fakevddk.h"

#define COMPANION "libfakevddk-companion.so"
#define DEFAULT_VERSION 8

VixDiskLibGenericLogFunc *fv_log_cb, *fv_warn_cb, *fv_panic_cb;

static _Atomic pid_t init_pid;   /* process that ran InitEx; 0 = none */
static int version = DEFAULT_VERSION;
static void *companion;

void fv_callf(VixDiskLibGenericLogFunc *fn, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  fn(fmt, ap);
  va_end(ap);
}

void fv_check_process(enum fv_fn fn)
{
  pid_t p = atomic_load(&init_pid);

  if (p == 0)
    fv_die("fakevddk: VixDiskLib_%s called before InitEx\n",
           fv_fn_names[fn]);
  if (p != getpid())
    fv_die("fakevddk: VixDiskLib_%s called in process %d but InitEx ran in "
           "process %d (InitEx must be called after fork)\n",
           fv_fn_names[fn], (int)getpid(), (int)p);
}

int fv_version(void)
{
  return version;
}

/* ---- where we were loaded from ---- */

/* The file name the dynamic linker loaded us under (not symlink-resolved,
 * so a link named libvixDiskLib.so.9 gives version 9). */
static const char *self_path(void)
{
  Dl_info info;

  if (dladdr((void *)&VixDiskLib_InitEx, &info) && info.dli_fname)
    return info.dli_fname;
  return NULL;
}

static int version_from_name(const char *path)
{
  static const char stem[] = "libvixDiskLib.so.";
  const char *base = strrchr(path, '/');
  const char *p;

  base = base ? base + 1 : path;
  if (strncmp(base, stem, sizeof stem - 1) != 0)
    return -1;
  p = base + sizeof stem - 1;
  if (!isdigit((unsigned char)*p))
    return -1;
  return (int)strtol(p, NULL, 10);
}

static int detect_version(void)
{
  const char *env = getenv("FAKEVDDK_VERSION");
  const char *path;
  int v;

  if (env && isdigit((unsigned char)*env))
    return atoi(env);
  path = self_path();
  if (path && (v = version_from_name(path)) >= 0)
    return v;
  return DEFAULT_VERSION;
}

/* Real VDDK dlopens its bundled libraries (libssl, ...) by bare name, so
 * they are only found when its directory is in LD_LIBRARY_PATH.  Emulate
 * that with a companion library placed next to us. */
static VixError load_companion(void)
{
  const char *self = self_path();
  char path[PATH_MAX];
  const char *slash;

  if (companion || !self || !(slash = strrchr(self, '/')))
    return VIX_OK;
  snprintf(path, sizeof path, "%.*s/%s", (int)(slash - self), self,
           COMPANION);
  if (access(path, F_OK) != 0)
    return VIX_OK;
  companion = dlopen(COMPANION, RTLD_NOW);
  if (!companion) {
    /* Copy: the callback may itself call into libdl and clobber it. */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", dlerror());
    if (fv_warn_cb)
      fv_callf(fv_warn_cb, "%s\n", msg);
    return VIX_E_FAIL;
  }
  return VIX_OK;
}

/* Stop what a previous InitEx started. */
static void shutdown_library(void)
{
  pid_t p = atomic_load(&init_pid);

  if (p == getpid())
    async_stop();
  else if (p != 0)
    async_forget();
  if (companion && p == getpid()) {
    dlclose(companion);
    companion = NULL;
  }
  atomic_store(&init_pid, 0);
}

/* ---- exported ---- */

static void log_initex_args(struct fv_log *l, uint32_t major, uint32_t minor,
                            VixDiskLibGenericLogFunc *log,
                            VixDiskLibGenericLogFunc *warn,
                            VixDiskLibGenericLogFunc *panic,
                            const char *libDir, const char *configFile)
{
  log_u64(l, "major", major);
  log_u64(l, "minor", minor);
  log_str(l, "libDir", libDir);
  log_str(l, "configFile", configFile);
  log_bool(l, "log", log != NULL);
  log_bool(l, "warn", warn != NULL);
  log_bool(l, "panic", panic != NULL);
}

VIX_EXPORT VixError VixDiskLib_InitEx(uint32_t major, uint32_t minor,
                                      VixDiskLibGenericLogFunc *log,
                                      VixDiskLibGenericLogFunc *warn,
                                      VixDiskLibGenericLogFunc *panic,
                                      const char *libDir,
                                      const char *configFile)
{
  struct fv_call c;
  struct fv_config *cfg;
  VixError err;

  call_begin(&c, FN_InitEx, false);
  log_initex_args(&c.log, major, minor, log, warn, panic, libDir,
                  configFile);
  shutdown_library();                 /* InitEx twice: re-initialise */
  fv_log_cb = log;
  fv_warn_cb = warn;
  fv_panic_cb = panic;
  version = detect_version();
  log_int(&c.log, "version", version);

  err = config_load(getenv("FAKEVDDK_CONFIG"), &cfg);
  fv_set_cfg(cfg);
  if (err != VIX_OK)
    return call_end(&c, err);
  if (call_inject(&c, true, &err, NULL))
    return call_end(&c, err);
  err = load_companion();
  if (err != VIX_OK)
    return call_end(&c, err);
  /* Like real VDDK, start background threads here: a plugin that calls
   * InitEx before forking loses them, which the pid check catches. */
  if (async_start(cfg->async_threads) == -1)
    return call_end(&c, VIX_E_FAIL);
  atomic_store(&init_pid, getpid());
  return call_end(&c, VIX_OK);
}

VIX_EXPORT void VixDiskLib_Exit(void)
{
  struct fv_call c;

  call_begin(&c, FN_Exit, false);
  if (atomic_load(&init_pid) != 0)
    call_inject(&c, true, &(VixError){0}, NULL);
  shutdown_library();       /* waits for outstanding async requests */
  fv_log_cb = fv_warn_cb = fv_panic_cb = NULL;
  call_end_void(&c);
  fv_free_cfgs();
}

VIX_EXPORT const char *VixDiskLib_ListTransportModes(void)
{
  struct fv_call c;
  const char *modes = fv_cfg()->transport_modes;

  call_begin(&c, FN_ListTransportModes, false);
  call_inject(&c, true, &(VixError){0}, NULL);
  log_str(&c.log, "modes", modes);
  call_end_void(&c);
  return modes;
}

VIX_EXPORT char *VixDiskLib_GetErrorText(VixError err, const char *locale)
{
  struct fv_call c;
  const struct fv_config *cfg = fv_cfg();
  char *text = NULL;

  call_begin(&c, FN_GetErrorText, false);
  log_u64(&c.log, "code", err);
  log_str(&c.log, "locale", locale);
  call_inject(&c, true, &(VixError){0}, NULL);
  if (!cfg->error_text_null)
    text = strdup(cfg->error_text ? cfg->error_text : fv_error_text(err));
  log_str(&c.log, "text", text);
  call_end_void(&c);
  return text;
}

VIX_EXPORT void VixDiskLib_FreeErrorText(char *text)
{
  struct fv_call c;

  call_begin(&c, FN_FreeErrorText, false);
  call_inject(&c, true, &(VixError){0}, NULL);
  free(text);
  call_end_void(&c);
}

VIX_EXPORT VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void)
{
  struct fv_call c;
  VixDiskLibConnectParams *p;

  call_begin(&c, FN_AllocateConnectParams, false);
  call_inject(&c, true, &(VixError){0}, NULL);
  p = calloc(1, sizeof *p);
  call_end_void(&c);
  return p;
}

VIX_EXPORT void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *p)
{
  struct fv_call c;

  call_begin(&c, FN_FreeConnectParams, false);
  call_inject(&c, true, &(VixError){0}, NULL);
  free(p);
  call_end_void(&c);
}
