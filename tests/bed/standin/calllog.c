/* calllog.c -- the JSON-lines call log named by $FAKEVDDK_LOG.
 *
 * Each call produces exactly one line, assembled in memory and written with
 * a single write() on an O_APPEND descriptor, so lines from concurrent
 * threads (and from forked processes sharing the file) never interleave.
 * When the variable is unset every function here is a cheap no-op, which
 * keeps the data path fast for benchmarks.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fakevddk.h"

static int log_fd = -1;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void open_log(void)
{
  const char *path = getenv("FAKEVDDK_LOG");

  if (path && *path) {
    log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log_fd == -1)
      fprintf(stderr, "fakevddk: cannot open FAKEVDDK_LOG %s: %m\n", path);
  }
}

/* Make room for N more bytes; on allocation failure the line is dropped. */
static bool reserve(struct fv_log *l, size_t n)
{
  if (l->len + n <= l->cap)
    return true;
  size_t cap = (l->len + n) * 2;
  char *p = l->buf == l->inline_buf ? malloc(cap) : realloc(l->buf, cap);
  if (!p) {
    l->on = false;
    return false;
  }
  if (l->buf == l->inline_buf)
    memcpy(p, l->buf, l->len);
  l->buf = p;
  l->cap = cap;
  return true;
}

static void put(struct fv_log *l, const char *s, size_t n)
{
  if (l->on && reserve(l, n)) {
    memcpy(l->buf + l->len, s, n);
    l->len += n;
  }
}

static void puts_(struct fv_log *l, const char *s)
{
  put(l, s, strlen(s));
}

static void put_json_string(struct fv_log *l, const char *s)
{
  char esc[8];

  put(l, "\"", 1);
  for (; *s; s++) {
    unsigned char c = *s;
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = c;
      put(l, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      put(l, esc, 6);
    } else {
      put(l, (const char *)s, 1);
    }
  }
  put(l, "\"", 1);
}

static void put_key(struct fv_log *l, const char *key)
{
  put(l, ",", 1);
  put_json_string(l, key);
  put(l, ":", 1);
}

void log_begin(struct fv_log *l, const char *fn)
{
  char num[64];

  pthread_once(&log_once, open_log);
  l->on = log_fd >= 0;
  l->buf = l->inline_buf;
  l->len = 0;
  l->cap = sizeof l->inline_buf;
  if (!l->on)
    return;
  puts_(l, "{\"fn\":");
  put_json_string(l, fn);
  snprintf(num, sizeof num, ",\"tid\":%d,\"pid\":%d,\"t0\":%" PRIu64,
           (int)fv_gettid(), (int)getpid(), fv_now_ns() / 1000);
  puts_(l, num);
}

void log_str(struct fv_log *l, const char *key, const char *val)
{
  if (!l->on)
    return;
  put_key(l, key);
  if (val)
    put_json_string(l, val);
  else
    puts_(l, "null");
}

void log_u64(struct fv_log *l, const char *key, uint64_t val)
{
  char num[32];

  if (!l->on)
    return;
  put_key(l, key);
  snprintf(num, sizeof num, "%" PRIu64, val);
  puts_(l, num);
}

void log_int(struct fv_log *l, const char *key, long long val)
{
  char num[32];

  if (!l->on)
    return;
  put_key(l, key);
  snprintf(num, sizeof num, "%lld", val);
  puts_(l, num);
}

void log_bool(struct fv_log *l, const char *key, bool val)
{
  if (!l->on)
    return;
  put_key(l, key);
  puts_(l, val ? "true" : "false");
}

void log_id(struct fv_log *l, const char *key, int id)
{
  if (!l->on)
    return;
  if (id > 0) {
    log_int(l, key, id);
  } else {
    put_key(l, key);
    puts_(l, "null");
  }
}

void log_end(struct fv_log *l)
{
  char num[40];

  if (l->on) {
    snprintf(num, sizeof num, ",\"t1\":%" PRIu64 "}\n", fv_now_ns() / 1000);
    puts_(l, num);
  }
  if (l->on) {
    /* One write per line: O_APPEND keeps concurrent lines whole. */
    ssize_t r = write(log_fd, l->buf, l->len);
    (void)r;
  }
  if (l->buf != l->inline_buf)
    free(l->buf);
  l->buf = l->inline_buf;
  l->on = false;
}

void log_end_result(struct fv_log *l, VixError result)
{
  log_u64(l, "result", result);
  log_end(l);
}
