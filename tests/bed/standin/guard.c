/* guard.c -- detection of VixDiskLib threading-rule violations, plus small
 * time/thread helpers.
 *
 * Real VDDK forbids (a) two threads inside calls on the same disk handle
 * and (b) concurrent Open/Close/ConnectEx/Disconnect.  A plugin that breaks
 * these rules usually works by luck, so the stand-in turns every violation
 * into an immediate abort with a clear message.  It must only *detect*:
 * taking a lock here would serialise the caller and hide the bug, hence the
 * compare-and-swap on an owner word instead.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fakevddk.h"

struct fv_owner fv_global_owner;

pid_t fv_gettid(void)
{
  return (pid_t)syscall(SYS_gettid);
}

uint64_t fv_now_ns(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

void fv_sleep_us(uint64_t us)
{
  struct timespec ts = { .tv_sec = us / 1000000,
                         .tv_nsec = (us % 1000000) * 1000 };

  while (us > 0 && nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* Print one message with a single write (so it is not torn by other
 * threads' output) and abort. */
void fv_die(const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  if ((size_t)n >= sizeof msg)
    n = sizeof msg - 1;
  ssize_t r = write(STDERR_FILENO, msg, n);
  (void)r;
  abort();
}

/* Returns true if this call now owns O (call owner_leave later), false if
 * the same thread already owns it (a nested call, e.g. from a callback
 * run inline).  Another thread owning it is a violation. */
bool owner_enter(struct fv_owner *o, enum fv_fn fn, int handle_id)
{
  pid_t me = fv_gettid(), other = 0;

  if (atomic_compare_exchange_strong(&o->tid, &other, me)) {
    atomic_store(&o->fn, fv_fn_names[fn]);
    return true;
  }
  if (other == me)
    return false;

  const char *other_fn = atomic_load(&o->fn);
  if (!other_fn)
    other_fn = "?";
  if (handle_id > 0)
    fv_die("fakevddk: threading violation: VixDiskLib_%s on handle %d from "
           "thread %d while VixDiskLib_%s is running on thread %d\n",
           fv_fn_names[fn], handle_id, (int)me, other_fn, (int)other);
  fv_die("fakevddk: threading violation: VixDiskLib_%s from thread %d "
         "while VixDiskLib_%s is running on thread %d (Open, Close, "
         "ConnectEx and Disconnect must not run concurrently)\n",
         fv_fn_names[fn], (int)me, other_fn, (int)other);
}

void owner_leave(struct fv_owner *o)
{
  atomic_store(&o->fn, NULL);
  atomic_store(&o->tid, 0);
}
