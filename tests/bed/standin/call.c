/* call.c -- the prologue/epilogue every VixDiskLib_* entry point shares:
 * fork check, call log, threading guards, emit/latency/fail injection. */
#include "fakevddk.h"

void call_begin(struct fv_call *c, enum fv_fn fn, bool check_process)
{
  c->fn = fn;
  c->handle_owner = NULL;
  c->global_owned = false;
  if (check_process)
    fv_check_process(fn);
  log_begin(&c->log, fv_fn_names[fn]);
}

void call_guard_handle(struct fv_call *c, struct fv_handle *h)
{
  if (owner_enter(&h->owner, c->fn, h->id))
    c->handle_owner = &h->owner;
}

void call_guard_global(struct fv_call *c)
{
  uint64_t us = fv_cfg()->serialize_delay_us;

  c->global_owned = owner_enter(&fv_global_owner, c->fn, 0);
  if (us)
    fv_sleep_us(us);
}

bool call_inject(struct fv_call *c, bool sleep, VixError *code, bool *async)
{
  uint64_t us = fault_latency_us(c->fn);
  bool is_async = false;

  fault_emit(c->fn);
  if (sleep && us)
    fv_sleep_us(us);
  if (!fault_should_fail(c->fn, code, &is_async))
    return false;
  if (async)
    *async = is_async;
  return true;
}

void call_release(struct fv_call *c)
{
  if (c->handle_owner)
    owner_leave(c->handle_owner);
  if (c->global_owned)
    owner_leave(&fv_global_owner);
  c->handle_owner = NULL;
  c->global_owned = false;
}

/* The log line is written before the guards are released so that its
 * t0..t1 interval lies inside the guarded region. */
VixError call_end(struct fv_call *c, VixError result)
{
  log_end_result(&c->log, result);
  call_release(c);
  return result;
}

void call_end_void(struct fv_call *c)
{
  log_end(&c->log);
  call_release(c);
}
