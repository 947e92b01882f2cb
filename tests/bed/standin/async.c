/* async.c -- completion engine for ReadAsync/WriteAsync.
 *
 * Like real VDDK with a network transport, accepted requests are completed
 * later by library-owned threads (started in InitEx), never inline in the
 * submitting thread unless the config asks for "async_inline".  Requests
 * sit in a min-heap keyed by due time, so latencies overlap: N requests
 * submitted together with a 1 ms delay all finish after about 1 ms.
 *
 * The heap stores requests by value (no malloc per request), and the queue
 * lock is dropped while the data is moved and the callback runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fakevddk.h"

#define MAX_THREADS 64

struct slot {
  uint64_t seq;              /* FIFO order among equal due times */
  struct fv_async_req req;
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake;       /* new request or stop */
  struct slot *heap;
  size_t n, cap;
  uint64_t seq;
  bool stop;
  bool started;
  unsigned nthreads;
  pthread_t threads[MAX_THREADS];
} q = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- min-heap on (due_ns, seq) ---- */

static bool before(const struct slot *a, const struct slot *b)
{
  if (a->req.due_ns != b->req.due_ns)
    return a->req.due_ns < b->req.due_ns;
  return a->seq < b->seq;
}

static void swap_slots(size_t i, size_t j)
{
  struct slot t = q.heap[i];
  q.heap[i] = q.heap[j];
  q.heap[j] = t;
}

static int heap_push(const struct fv_async_req *req)
{
  if (q.n == q.cap) {
    size_t cap = q.cap ? q.cap * 2 : 64;
    struct slot *h = realloc(q.heap, cap * sizeof *h);
    if (!h)
      return -1;
    q.heap = h;
    q.cap = cap;
  }
  size_t i = q.n++;
  q.heap[i].seq = q.seq++;
  q.heap[i].req = *req;
  while (i > 0 && before(&q.heap[i], &q.heap[(i - 1) / 2])) {
    swap_slots(i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
  return 0;
}

static struct fv_async_req heap_pop(void)
{
  struct fv_async_req top = q.heap[0].req;
  size_t i = 0;

  q.heap[0] = q.heap[--q.n];
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < q.n && before(&q.heap[l], &q.heap[m]))
      m = l;
    if (r < q.n && before(&q.heap[r], &q.heap[m]))
      m = r;
    if (m == i)
      break;
    swap_slots(i, m);
    i = m;
  }
  return top;
}

/* ---- completing one request ---- */

static VixError do_io(const struct fv_async_req *req)
{
  if (req->forced)
    return req->forced_result;
  if (req->op == OP_READ)
    return disk_read(&req->h->disk, req->start, req->count, req->buf);
  return disk_write(&req->h->disk, req->start, req->count, req->buf);
}

/* Move the data, log, call back, and only then count the request as
 * finished, so Wait returns after the callback has returned. */
static void complete(const struct fv_async_req *req)
{
  struct fv_handle *h = req->h;
  VixError result = do_io(req);
  struct fv_log l;

  log_begin(&l, "AsyncDone");
  log_str(&l, "op", req->op == OP_READ ? "ReadAsync" : "WriteAsync");
  log_id(&l, "handle", h->id);
  log_u64(&l, "start", req->start);
  log_u64(&l, "count", req->count);
  log_end_result(&l, result);

  if (req->cb)
    req->cb(req->cb_data, result);

  pthread_mutex_lock(&h->lock);
  if (--h->outstanding == 0)
    pthread_cond_broadcast(&h->idle);
  pthread_mutex_unlock(&h->lock);
  /* h may be closed and freed from here on. */
}

static void wait_until(uint64_t due_ns)
{
  struct timespec ts = { .tv_sec = due_ns / 1000000000u,
                         .tv_nsec = due_ns % 1000000000u };

  pthread_cond_timedwait(&q.wake, &q.lock, &ts);
}

static void *completion_thread(void *arg)
{
  (void)arg;
  /* Named, so that a test can see whether any is left (/proc/PID/task). */
  pthread_setname_np(pthread_self(), "fakevddk-async");
  pthread_mutex_lock(&q.lock);
  for (;;) {
    if (q.n == 0) {
      if (q.stop)
        break;
      pthread_cond_wait(&q.wake, &q.lock);
      continue;
    }
    if (q.heap[0].req.due_ns > fv_now_ns()) {
      wait_until(q.heap[0].req.due_ns);
      continue;
    }
    struct fv_async_req req = heap_pop();
    pthread_mutex_unlock(&q.lock);
    complete(&req);
    pthread_mutex_lock(&q.lock);
  }
  pthread_mutex_unlock(&q.lock);
  return NULL;
}

/* ---- public ---- */

int async_start(unsigned nthreads)
{
  pthread_condattr_t attr;

  if (nthreads > MAX_THREADS)
    nthreads = MAX_THREADS;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&q.wake, &attr);
  pthread_condattr_destroy(&attr);
  q.stop = false;
  q.started = true;
  q.nthreads = 0;
  for (unsigned i = 0; i < nthreads; i++) {
    int err = pthread_create(&q.threads[i], NULL, completion_thread, NULL);
    if (err) {
      fprintf(stderr, "fakevddk: pthread_create: %s\n", strerror(err));
      async_stop();
      return -1;
    }
    q.nthreads++;
  }
  return 0;
}

/* Drain the queue (outstanding requests still complete), then join. */
void async_stop(void)
{
  if (!q.started)
    return;
  pthread_mutex_lock(&q.lock);
  q.stop = true;
  pthread_cond_broadcast(&q.wake);
  pthread_mutex_unlock(&q.lock);
  for (unsigned i = 0; i < q.nthreads; i++)
    pthread_join(q.threads[i], NULL);
  q.nthreads = 0;
  pthread_cond_destroy(&q.wake);
  free(q.heap);
  q.heap = NULL;
  q.n = q.cap = 0;
  q.started = false;
}

void async_forget(void)
{
  pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;

  q.lock = fresh;          /* may have been held by a thread at fork */
  q.heap = NULL;           /* the parent's queue: leaked on purpose */
  q.n = q.cap = 0;
  q.nthreads = 0;
  q.started = false;
}

unsigned async_submit(const struct fv_async_req *req, bool run_inline)
{
  struct fv_handle *h = req->h;
  unsigned inflight;

  pthread_mutex_lock(&h->lock);
  inflight = ++h->outstanding;
  pthread_mutex_unlock(&h->lock);

  if (run_inline) {
    uint64_t now = fv_now_ns();
    if (req->due_ns > now)
      fv_sleep_us((req->due_ns - now) / 1000);
    complete(req);
    return inflight;
  }

  pthread_mutex_lock(&q.lock);
  if (heap_push(req) == -1) {
    pthread_mutex_unlock(&q.lock);
    complete(req);        /* out of memory: degrade to inline */
    return inflight;
  }
  pthread_cond_signal(&q.wake);
  pthread_mutex_unlock(&q.lock);
  return inflight;
}

void async_wait_handle(struct fv_handle *h)
{
  pthread_mutex_lock(&h->lock);
  while (h->outstanding > 0)
    pthread_cond_wait(&h->idle, &h->lock);
  pthread_mutex_unlock(&h->lock);
}
