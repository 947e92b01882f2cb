/* outage.c -- network faults of emulated remote servers: a timed outage
 * ("down_for") and the NFC server's memory limit ("nfc_max_request").
 *
 * Since VDDK 8.0.2 a lost server shows up as the network error itself
 * (VIX_E_HOST_SERVER_SHUTDOWN, VIX_E_HOST_NETWORK_CONN_REFUSED, ...) from
 * ConnectEx, Open and the data calls.  A handle whose NFC connection broke
 * stays broken after the server returns: the client has to close it and
 * open a new one, which is what nbdkit's retry filter does.
 */
#include <pthread.h>

#include "fakevddk.h"

/* Real NFC adds a 24-byte message header to the data it asks the server
 * to allocate: a 2 MiB read shows up as "the requested 2097176 bytes". */
#define NFC_HEADER_BYTES 24

static pthread_mutex_t outage_lock = PTHREAD_MUTEX_INITIALIZER;

static bool started(const struct fv_outage *o)
{
  return o->started_ns != 0;
}

static bool over(const struct fv_outage *o, uint64_t now)
{
  if (!started(o))
    return false;
  if (o->seconds)
    return now - o->started_ns >= o->seconds * 1000000000u;
  return o->failed >= o->calls;
}

/* Count one call on the server; true while the server is down. */
static bool count_call(struct fv_outage *o)
{
  uint64_t now = fv_now_ns();
  bool down = false;

  pthread_mutex_lock(&outage_lock);
  o->seen++;
  if (!started(o) && o->seen > o->after)
    o->started_ns = now;
  if (started(o) && !over(o, now)) {
    o->failed++;
    down = true;
  }
  pthread_mutex_unlock(&outage_lock);
  return down;
}

VixError outage_check_server(const struct fv_server *s)
{
  if (s->outage && count_call(s->outage))
    return s->outage->code;
  return VIX_OK;
}

void outage_note_open(struct fv_handle *h)
{
  const struct fv_server *s = h->conn->remote ? h->conn->server : NULL;

  if (!s || !s->outage)
    return;
  pthread_mutex_lock(&outage_lock);
  h->opened_after_outage = started(s->outage);
  pthread_mutex_unlock(&outage_lock);
}

VixError outage_check_handle(const struct fv_handle *h)
{
  const struct fv_server *s = h->conn->remote ? h->conn->server : NULL;
  bool severed;

  if (!s || !s->outage)
    return VIX_OK;
  if (count_call(s->outage))
    return s->outage->code;
  pthread_mutex_lock(&outage_lock);
  severed = started(s->outage) && !h->opened_after_outage;
  pthread_mutex_unlock(&outage_lock);
  return severed ? s->outage->code : VIX_OK;
}

VixError nfc_check_request(const struct fv_handle *h, uint64_t count)
{
  const struct fv_server *s = h->conn->remote ? h->conn->server : NULL;
  uint64_t bytes = count * VIXDISKLIB_SECTOR_SIZE;

  if (!s || !s->nfc_max_request || bytes <= s->nfc_max_request)
    return VIX_OK;
  if (fv_warn_cb)
    fv_callf(fv_warn_cb, "[NFC ERROR] NfcFssrvrProcessErrorMsg: received "
             "NFC error 5 from server: Failed to allocate the requested "
             "%llu bytes\n",
             (unsigned long long)(bytes + NFC_HEADER_BYTES));
  return VIX_E_OUT_OF_MEMORY;
}
