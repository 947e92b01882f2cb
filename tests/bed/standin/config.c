/* config.c -- the $FAKEVDDK_CONFIG file and the fault injection it drives.
 *
 * The file is line based; see README.md for the directives.  A config is
 * immutable once published (fv_set_cfg), apart from the atomic counters of
 * its fail rules, so the data path reads it without locking.  A config
 * replaced by a later InitEx is retired but never freed: connections and
 * handles made under it keep pointers to its server/vm entries, and
 * ListTransportModes may have handed out one of its strings.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fakevddk.h"

#define DEFAULT_TRANSPORT_MODES "file:san:hotadd:nbdssl:nbd"
#define DEFAULT_SERVER_TRANSPORTS "nbdssl:nbd"
#define MAX_TOKENS 32

/* ---- function names ---- */

const char *const fv_fn_names[FN__COUNT] = {
#define FV_NAME(name) #name,
  FV_FUNCTIONS(FV_NAME)
#undef FV_NAME
};

int fv_fn_lookup(const char *name)
{
  for (int i = 0; i < FN__COUNT; i++)
    if (strcmp(name, fv_fn_names[i]) == 0)
      return i;
  return -1;
}

/* ---- arena: everything a config owns, freed in one go ---- */

struct fv_arena {
  struct fv_arena *next;
  alignas(max_align_t) char data[];
};

static void *arena_alloc(struct fv_config *cfg, size_t size)
{
  struct fv_arena *a = calloc(1, sizeof *a + size);

  if (!a)
    return NULL;
  a->next = cfg->arena;
  cfg->arena = a;
  return a->data;
}

static char *arena_strdup(struct fv_config *cfg, const char *s)
{
  char *p = arena_alloc(cfg, strlen(s) + 1);

  return p ? strcpy(p, s) : NULL;
}

static void config_free(struct fv_config *cfg)
{
  while (cfg->arena) {
    struct fv_arena *next = cfg->arena->next;
    free(cfg->arena);
    cfg->arena = next;
  }
  free(cfg);
}

/* ---- defaults and the published config ---- */

static void set_defaults(struct fv_config *cfg)
{
  cfg->logical_sector_size = 512;
  cfg->physical_sector_size = 512;
  cfg->transport_modes = DEFAULT_TRANSPORT_MODES;
  cfg->async_threads = 1;
}

static struct fv_config default_cfg;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static void init_default_cfg(void) { set_defaults(&default_cfg); }

static _Atomic(struct fv_config *) current_cfg;
static struct fv_config *retired_cfgs;

const struct fv_config *fv_cfg(void)
{
  struct fv_config *cfg = atomic_load(&current_cfg);

  if (cfg)
    return cfg;
  pthread_once(&default_once, init_default_cfg);
  return &default_cfg;
}

void fv_set_cfg(struct fv_config *cfg)
{
  struct fv_config *old = atomic_exchange(&current_cfg, cfg);

  if (old) {                /* only InitEx gets here: no lock needed */
    old->retired_next = retired_cfgs;
    retired_cfgs = old;
  }
}

/* Exit: no connection or handle may outlive the library, so every config
 * can go; later calls see the defaults again. */
void fv_free_cfgs(void)
{
  struct fv_config *cfg = atomic_exchange(&current_cfg, NULL);

  if (cfg)
    config_free(cfg);
  while (retired_cfgs) {
    cfg = retired_cfgs;
    retired_cfgs = cfg->retired_next;
    config_free(cfg);
  }
}

const struct fv_server *config_find_server(const struct fv_config *cfg,
                                           const char *name)
{
  for (const struct fv_server *s = cfg->servers; s; s = s->next)
    if (strcasecmp(s->name, name) == 0)
      return s;
  return NULL;
}

/* ---- tokenizer ---- */

/* Split LINE in place into tokens.  A token may be double-quoted, with the
 * C escapes \n \t \\ \" inside; '#' at the start of a token starts a
 * comment.  Returns the number of tokens or -1 for an unterminated quote. */
static int tokenize(char *line, char **tok, int max)
{
  int n = 0;
  char *p = line;

  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
      p++;
    if (*p == '\0' || *p == '#' || n == max)
      return n;
    if (*p != '"') {
      tok[n++] = p;
      while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
        p++;
      if (*p)
        *p++ = '\0';
      continue;
    }
    char *out = ++p;
    tok[n++] = out;
    for (;; p++) {
      if (*p == '\0')
        return -1;
      if (*p == '"')
        break;
      if (*p == '\\' && p[1]) {
        p++;
        *out++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
      } else {
        *out++ = *p;
      }
    }
    *out = '\0';
    p++;
  }
}

/* ---- parser ---- */

struct parser {
  struct fv_config *cfg;
  const char *file;
  int lineno;
  struct fv_server *server;   /* most recent "server" block */
  struct fv_vm *vm;           /* most recent "vm" inside it */
  bool unknown;               /* error was an unknown directive */
};

static int perr(struct parser *ps, const char *fmt, const char *arg)
{
  fprintf(stderr, "fakevddk: config line %d: ", ps->lineno);
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  return -1;
}

static int parse_u64(struct parser *ps, const char *s, uint64_t *out)
{
  char *end;

  errno = 0;
  if (*s < '0' || *s > '9')
    return perr(ps, "expected a number, got \"%s\"", s);
  *out = strtoull(s, &end, 10);
  if (errno || *end)
    return perr(ps, "expected a number, got \"%s\"", s);
  return 0;
}

static int parse_u32(struct parser *ps, const char *s, uint32_t *out)
{
  uint64_t v;

  if (parse_u64(ps, s, &v) == -1)
    return -1;
  if (v > UINT32_MAX)
    return perr(ps, "number too large: %s", s);
  *out = v;
  return 0;
}

static int want_args(struct parser *ps, int ntok, int min, int max,
                     const char *name)
{
  if (ntok - 1 < min || ntok - 1 > max)
    return perr(ps, "wrong number of arguments for %s", name);
  return 0;
}

static int parse_function(struct parser *ps, const char *name)
{
  int fn = fv_fn_lookup(name);

  if (fn == -1)
    perr(ps, "unknown function %s", name);
  return fn;
}

static bool returns_vixerror(int fn)
{
  switch (fn) {
  case FN_Exit: case FN_ListTransportModes: case FN_GetErrorText:
  case FN_FreeErrorText: case FN_FreeConnectParams: case FN_FreeInfo:
  case FN_GetTransportMode: case FN_AllocateConnectParams:
    return false;
  default:
    return true;
  }
}

/* fail FUNC CODE [nth=N] [after=N] [every=N] [prob=P seed=S] [times=N]
 *      [async] */
static int parse_fail(struct parser *ps, char **tok, int ntok)
{
  struct fv_fail *f;
  int fn;

  if (want_args(ps, ntok, 2, MAX_TOKENS, "fail") == -1 ||
      (fn = parse_function(ps, tok[1])) == -1)
    return -1;
  if (!returns_vixerror(fn))
    return perr(ps, "fail: %s does not return a VixError", tok[1]);
  f = arena_alloc(ps->cfg, sizeof *f);
  if (!f || parse_u64(ps, tok[2], &f->code) == -1)
    return -1;
  for (int i = 3; i < ntok; i++) {
    const char *t = tok[i];
    int r = 0;
    if (strncmp(t, "nth=", 4) == 0)
      r = parse_u64(ps, t + 4, &f->nth);
    else if (strncmp(t, "after=", 6) == 0)
      r = parse_u64(ps, t + 6, &f->after);
    else if (strncmp(t, "every=", 6) == 0)
      r = parse_u64(ps, t + 6, &f->every);
    else if (strncmp(t, "times=", 6) == 0)
      r = parse_u64(ps, t + 6, &f->times);
    else if (strncmp(t, "seed=", 5) == 0)
      r = parse_u64(ps, t + 5, &f->seed);
    else if (strncmp(t, "prob=", 5) == 0) {
      char *end;
      f->prob = strtod(t + 5, &end);
      f->has_prob = true;
      if (*end || end == t + 5 || f->prob < 0 || f->prob > 1)
        r = perr(ps, "prob must be between 0 and 1: %s", t);
    } else if (strcmp(t, "async") == 0) {
      if (fn != FN_ReadAsync && fn != FN_WriteAsync)
        r = perr(ps, "fail: %s cannot take the async option", tok[1]);
      f->async = true;
    } else
      r = perr(ps, "fail: unknown option %s", t);
    if (r == -1)
      return -1;
  }
  /* Append so rules are tried in file order. */
  struct fv_fail **pp = &ps->cfg->fails[fn];
  while (*pp)
    pp = &(*pp)->next;
  *pp = f;
  return 0;
}

/* emit FUNC CHANNEL FORMAT */
static int parse_emit(struct parser *ps, char **tok, int ntok)
{
  struct fv_emit *e;
  int fn;

  if (want_args(ps, ntok, 3, 3, "emit") == -1 ||
      (fn = parse_function(ps, tok[1])) == -1)
    return -1;
  e = arena_alloc(ps->cfg, sizeof *e);
  if (!e || !(e->format = arena_strdup(ps->cfg, tok[3])))
    return perr(ps, "out of memory%s", "");
  if (strcmp(tok[2], "log") == 0)
    e->channel = CH_LOG;
  else if (strcmp(tok[2], "warn") == 0)
    e->channel = CH_WARN;
  else if (strcmp(tok[2], "panic") == 0)
    e->channel = CH_PANIC;
  else
    return perr(ps, "emit: channel must be log, warn or panic, not %s",
                tok[2]);
  struct fv_emit **pp = &ps->cfg->emits[fn];
  while (*pp)
    pp = &(*pp)->next;
  *pp = e;
  return 0;
}

static int parse_geometry(struct parser *ps, char **tok, int ntok,
                          VixDiskLibGeometry *g, bool *set)
{
  if (want_args(ps, ntok, 3, 3, tok[0]) == -1 ||
      parse_u32(ps, tok[1], &g->cylinders) == -1 ||
      parse_u32(ps, tok[2], &g->heads) == -1 ||
      parse_u32(ps, tok[3], &g->sectors) == -1)
    return -1;
  *set = true;
  return 0;
}

/* A string argument; the word NULL gives NULL when ALLOW_NULL. */
static int parse_string(struct parser *ps, char **tok, int ntok,
                        const char **out, bool allow_null)
{
  if (want_args(ps, ntok, 1, 1, tok[0]) == -1)
    return -1;
  if (allow_null && strcmp(tok[1], "NULL") == 0) {
    *out = NULL;
    return 0;
  }
  if (!(*out = arena_strdup(ps->cfg, tok[1])))
    return perr(ps, "out of memory%s", "");
  return 0;
}

static int parse_flag(struct parser *ps, char **tok, int ntok, bool *out)
{
  uint64_t v;

  if (want_args(ps, ntok, 1, 1, tok[0]) == -1 ||
      parse_u64(ps, tok[1], &v) == -1)
    return -1;
  *out = v != 0;
  return 0;
}

static int parse_cred(struct parser *ps, char *user, char *secret,
                      struct fv_cred **list)
{
  struct fv_cred *c = arena_alloc(ps->cfg, sizeof *c);

  if (!c || !(c->user = arena_strdup(ps->cfg, user)) ||
      !(c->secret = arena_strdup(ps->cfg, secret)))
    return perr(ps, "out of memory%s", "");
  c->next = *list;
  *list = c;
  return 0;
}

static int parse_server(struct parser *ps, char **tok, int ntok)
{
  struct fv_server *s;

  if (want_args(ps, ntok, 1, 1, "server") == -1)
    return -1;
  s = arena_alloc(ps->cfg, sizeof *s);
  if (!s || !(s->name = arena_strdup(ps->cfg, tok[1])) ||
      !(s->transports = arena_strdup(ps->cfg, DEFAULT_SERVER_TRANSPORTS)))
    return perr(ps, "out of memory%s", "");
  s->port = 443;
  s->nfc_port = 902;
  s->next = ps->cfg->servers;
  ps->cfg->servers = s;
  ps->server = s;
  ps->vm = NULL;
  return 0;
}

static int parse_down(struct parser *ps, char **tok, int ntok)
{
  if (want_args(ps, ntok, 1, 1, "down") == -1)
    return -1;
  if (strcmp(tok[1], "0") == 0)
    ps->server->down = DOWN_NO;
  else if (strcmp(tok[1], "1") == 0)
    ps->server->down = DOWN_YES;
  else if (strcmp(tok[1], "open") == 0)
    ps->server->down = DOWN_AT_OPEN;
  else
    return perr(ps, "down must be 0, 1 or open, not %s", tok[1]);
  return 0;
}

/* down_for calls=N|seconds=S [after=N] [code=C] */
static int parse_down_for(struct parser *ps, char **tok, int ntok)
{
  struct fv_outage *o;

  if (want_args(ps, ntok, 1, 3, "down_for") == -1)
    return -1;
  if (ps->server->outage)
    return perr(ps, "down_for given twice for server %s", ps->server->name);
  if (!(o = arena_alloc(ps->cfg, sizeof *o)))
    return perr(ps, "out of memory%s", "");
  o->code = VIX_E_HOST_SERVER_SHUTDOWN;
  for (int i = 1; i < ntok; i++) {
    const char *t = tok[i];
    int r;
    if (strncmp(t, "calls=", 6) == 0)
      r = parse_u64(ps, t + 6, &o->calls);
    else if (strncmp(t, "seconds=", 8) == 0)
      r = parse_u64(ps, t + 8, &o->seconds);
    else if (strncmp(t, "after=", 6) == 0)
      r = parse_u64(ps, t + 6, &o->after);
    else if (strncmp(t, "code=", 5) == 0)
      r = parse_u64(ps, t + 5, &o->code);
    else
      r = perr(ps, "down_for: unknown option %s", t);
    if (r == -1)
      return -1;
  }
  if (!o->calls == !o->seconds)
    return perr(ps, "down_for needs one of calls=N or seconds=S (N, S > 0)%s",
                "");
  ps->server->outage = o;
  return 0;
}

static int parse_vm(struct parser *ps, char **tok, int ntok)
{
  struct fv_vm *vm;

  if (want_args(ps, ntok, 1, 1, "vm") == -1)
    return -1;
  vm = arena_alloc(ps->cfg, sizeof *vm);
  if (!vm || !(vm->spec = arena_strdup(ps->cfg, tok[1])))
    return perr(ps, "out of memory%s", "");
  vm->next = ps->server->vms;
  ps->server->vms = vm;
  ps->vm = vm;
  return 0;
}

/* A datastore NAME at absolute DIR, added to *list. */
static int add_datastore(struct parser *ps, struct fv_datastore **list,
                         const char *name, const char *dir)
{
  struct fv_datastore *d;

  if (dir[0] != '/')
    return perr(ps, "datastore directory must be absolute: %s", dir);
  d = arena_alloc(ps->cfg, sizeof *d);
  if (!d || !(d->name = arena_strdup(ps->cfg, name)) ||
      !(d->dir = arena_strdup(ps->cfg, dir)))
    return perr(ps, "out of memory%s", "");
  d->next = *list;
  *list = d;
  return 0;
}

static int parse_datastore(struct parser *ps, char **tok, int ntok)
{
  if (want_args(ps, ntok, 2, 2, "datastore") == -1)
    return -1;
  return add_datastore(ps, &ps->vm->datastores, tok[1], tok[2]);
}

/* snapshot MOREF [DATASTORE=DIR]... */
static int parse_snapshot(struct parser *ps, char **tok, int ntok)
{
  struct fv_snapshot *s;

  if (want_args(ps, ntok, 1, MAX_TOKENS, "snapshot") == -1)
    return -1;
  s = arena_alloc(ps->cfg, sizeof *s);
  if (!s || !(s->name = arena_strdup(ps->cfg, tok[1])))
    return perr(ps, "out of memory%s", "");
  for (int i = 2; i < ntok; i++) {
    char *eq = strchr(tok[i], '=');

    if (!eq || eq == tok[i])
      return perr(ps, "snapshot: expected DATASTORE=DIR, got %s", tok[i]);
    *eq = '\0';
    if (add_datastore(ps, &s->datastores, tok[i], eq + 1) == -1)
      return -1;
  }
  s->next = ps->vm->snapshots;
  ps->vm->snapshots = s;
  return 0;
}

/* "snapshots DIR" and "running_while PATH": one absolute path. */
static int parse_absolute_dir(struct parser *ps, char **tok, int ntok,
                              char **out)
{
  if (want_args(ps, ntok, 1, 1, tok[0]) == -1)
    return -1;
  if (tok[1][0] != '/')
    return perr(ps, "path must be absolute: %s", tok[1]);
  if (!(*out = arena_strdup(ps->cfg, tok[1])))
    return perr(ps, "out of memory%s", "");
  return 0;
}

/* Directives valid inside a "server" block. */
static int parse_server_directive(struct parser *ps, char **tok, int ntok)
{
  struct fv_server *s = ps->server;
  const char *d = tok[0];

  if (strcmp(d, "port") == 0)
    return want_args(ps, ntok, 1, 1, d) ?: parse_u32(ps, tok[1], &s->port);
  if (strcmp(d, "nfc_port") == 0)
    return want_args(ps, ntok, 1, 1, d) ?:
           parse_u32(ps, tok[1], &s->nfc_port);
  if (strcmp(d, "thumbprint") == 0)
    return parse_string(ps, tok, ntok, (const char **)&s->thumbprint, true);
  if (strcmp(d, "transports") == 0)
    return parse_string(ps, tok, ntok, (const char **)&s->transports, false);
  if (strcmp(d, "user") == 0)
    return want_args(ps, ntok, 2, 2, d) ?:
           parse_cred(ps, tok[1], tok[2], &s->users);
  if (strcmp(d, "cookie") == 0)   /* cookie COOKIE USER */
    return want_args(ps, ntok, 2, 2, d) ?:
           parse_cred(ps, tok[2], tok[1], &s->cookies);
  if (strcmp(d, "down") == 0)
    return parse_down(ps, tok, ntok);
  if (strcmp(d, "down_for") == 0)
    return parse_down_for(ps, tok, ntok);
  if (strcmp(d, "nfc_max_request") == 0)
    return want_args(ps, ntok, 1, 1, d) ?:
           parse_u64(ps, tok[1], &s->nfc_max_request);
  if (strcmp(d, "vm") == 0)
    return parse_vm(ps, tok, ntok);
  return 1;                        /* not a server directive */
}

/* Directives valid inside a "vm" block. */
static int parse_vm_directive(struct parser *ps, char **tok, int ntok)
{
  if (strcmp(tok[0], "datastore") == 0)
    return parse_datastore(ps, tok, ntok);
  if (strcmp(tok[0], "snapshot") == 0)
    return parse_snapshot(ps, tok, ntok);
  if (strcmp(tok[0], "snapshots") == 0)
    return parse_absolute_dir(ps, tok, ntok, &ps->vm->snapshots_dir);
  if (strcmp(tok[0], "running_while") == 0)
    return parse_absolute_dir(ps, tok, ntok, &ps->vm->running_while);
  if (strcmp(tok[0], "running") == 0) {
    if (want_args(ps, ntok, 0, 0, "running") == -1)
      return -1;
    ps->vm->running = true;
    return 0;
  }
  return 1;
}

static bool is_block_directive(const char *d, bool vm)
{
  static const char *const server_words[] = {
    "port", "nfc_port", "thumbprint", "transports", "user", "cookie",
    "down", "down_for", "nfc_max_request", "vm", NULL
  };
  static const char *const vm_words[] = {
    "datastore", "snapshot", "snapshots", "running", "running_while", NULL
  };
  const char *const *w = vm ? vm_words : server_words;

  for (; *w; w++)
    if (strcmp(d, *w) == 0)
      return true;
  return false;
}

static int parse_u64_arg(struct parser *ps, char **tok, int ntok,
                         uint64_t *out)
{
  return want_args(ps, ntok, 1, 1, tok[0]) ?: parse_u64(ps, tok[1], out);
}

static int parse_u32_arg(struct parser *ps, char **tok, int ntok,
                         uint32_t *out)
{
  return want_args(ps, ntok, 1, 1, tok[0]) ?: parse_u32(ps, tok[1], out);
}

static int parse_int_arg(struct parser *ps, char **tok, int ntok, int *out)
{
  uint32_t v;

  if (parse_u32_arg(ps, tok, ntok, &v) == -1)
    return -1;
  *out = (int)v;
  return 0;
}

/* Top-level directives. */
static int parse_global(struct parser *ps, char **tok, int ntok)
{
  struct fv_config *cfg = ps->cfg;
  const char *d = tok[0];
  uint64_t v;

  if (strcmp(d, "logical_sector_size") == 0)
    return parse_u32_arg(ps, tok, ntok, &cfg->logical_sector_size);
  if (strcmp(d, "physical_sector_size") == 0)
    return parse_u32_arg(ps, tok, ntok, &cfg->physical_sector_size);
  if (strcmp(d, "adapter_type") == 0) {
    cfg->adapter_type_set = true;
    return parse_int_arg(ps, tok, ntok, &cfg->adapter_type);
  }
  if (strcmp(d, "num_links") == 0) {
    cfg->num_links_set = true;
    return parse_int_arg(ps, tok, ntok, &cfg->num_links);
  }
  if (strcmp(d, "transport_modes") == 0)
    return parse_string(ps, tok, ntok, &cfg->transport_modes, true);
  if (strcmp(d, "error_text_null") == 0)
    return parse_flag(ps, tok, ntok, &cfg->error_text_null);
  if (strcmp(d, "error_text") == 0)
    return parse_string(ps, tok, ntok, (const char **)&cfg->error_text,
                        false);
  if (strcmp(d, "async_delay_us") == 0)
    return parse_u64_arg(ps, tok, ntok, &cfg->async_delay_us);
  if (strcmp(d, "serialize_delay_us") == 0)
    return parse_u64_arg(ps, tok, ntok, &cfg->serialize_delay_us);
  if (strcmp(d, "async_inline") == 0)
    return parse_flag(ps, tok, ntok, &cfg->async_inline);
  if (strcmp(d, "async_threads") == 0) {
    if (parse_u64_arg(ps, tok, ntok, &v) == -1)
      return -1;
    if (v < 1 || v > 64)
      return perr(ps, "async_threads must be 1..64, not %s", tok[1]);
    cfg->async_threads = v;
    return 0;
  }
  if (strcmp(d, "bios_geo") == 0)
    return parse_geometry(ps, tok, ntok, &cfg->bios_geo, &cfg->bios_geo_set);
  if (strcmp(d, "phys_geo") == 0)
    return parse_geometry(ps, tok, ntok, &cfg->phys_geo, &cfg->phys_geo_set);
  if (strcmp(d, "uuid") == 0) {
    cfg->uuid_set = true;
    return parse_string(ps, tok, ntok, (const char **)&cfg->uuid, true);
  }
  if (strcmp(d, "parent_hint") == 0)
    return parse_string(ps, tok, ntok, (const char **)&cfg->parent_hint,
                        true);
  if (strcmp(d, "emit") == 0)
    return parse_emit(ps, tok, ntok);
  if (strcmp(d, "fail") == 0)
    return parse_fail(ps, tok, ntok);
  if (strcmp(d, "latency") == 0) {
    int fn;
    if (want_args(ps, ntok, 2, 2, d) == -1 ||
        (fn = parse_function(ps, tok[1])) == -1)
      return -1;
    return parse_u64(ps, tok[2], &cfg->latency_us[fn]);
  }
  if (strcmp(d, "server") == 0)
    return parse_server(ps, tok, ntok);
  ps->unknown = true;
  fprintf(stderr, "fakevddk: config line %d: unknown directive %s\n",
          ps->lineno, d);
  return -1;
}

static int parse_line(struct parser *ps, char *line)
{
  char *tok[MAX_TOKENS];
  int ntok = tokenize(line, tok, MAX_TOKENS), r;

  if (ntok == -1)
    return perr(ps, "unterminated quoted string%s", "");
  if (ntok == 0)
    return 0;
  if (ps->vm && (r = parse_vm_directive(ps, tok, ntok)) != 1)
    return r;
  if (ps->server && (r = parse_server_directive(ps, tok, ntok)) != 1)
    return r;
  if (is_block_directive(tok[0], true))
    return perr(ps, "%s must follow a vm line", tok[0]);
  if (is_block_directive(tok[0], false))
    return perr(ps, "%s must follow a server line", tok[0]);
  return parse_global(ps, tok, ntok);
}

static int parse_file(struct parser *ps, FILE *fp)
{
  char *line = NULL;
  size_t cap = 0;
  int r = 0;

  while (r == 0 && getline(&line, &cap, fp) != -1) {
    ps->lineno++;
    r = parse_line(ps, line);
  }
  free(line);
  return r;
}

VixError config_load(const char *file, struct fv_config **out)
{
  struct fv_config *cfg = calloc(1, sizeof *cfg);
  struct parser ps = { .cfg = cfg, .file = file };
  FILE *fp;
  int r;

  if (!cfg)
    return VIX_E_OUT_OF_MEMORY;
  set_defaults(cfg);
  *out = cfg;
  if (!file)
    return VIX_OK;
  fp = fopen(file, "re");
  if (!fp) {
    fprintf(stderr, "fakevddk: cannot open FAKEVDDK_CONFIG %s: %m\n", file);
    return VIX_E_INVALID_ARG;
  }
  r = parse_file(&ps, fp);
  fclose(fp);
  if (r == 0)
    return VIX_OK;
  /* Broken file: fall back to defaults so the library stays usable. */
  config_free(cfg);
  cfg = calloc(1, sizeof *cfg);
  if (!cfg)
    return VIX_E_OUT_OF_MEMORY;
  set_defaults(cfg);
  *out = cfg;
  return VIX_E_INVALID_ARG;
}

/* ---- fault injection ---- */

/* Calls per function since the process started (1-based numbering). */
static atomic_uint_fast64_t call_counts[FN__COUNT];

/* splitmix64: a tiny deterministic PRNG indexed by sequence position, so
 * concurrent evaluation needs only an atomic counter. */
static uint64_t splitmix64(uint64_t x)
{
  x += 0x9e3779b97f4a7c15u;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
  return x ^ (x >> 31);
}

static bool rule_matches(struct fv_fail *f, uint64_t n)
{
  if (f->nth && n != f->nth)
    return false;
  if (f->after && n <= f->after)
    return false;
  if (f->every && n % f->every != 0)
    return false;
  if (f->has_prob) {
    uint64_t k = atomic_fetch_add(&f->evaluated, 1);
    double r = (splitmix64(f->seed + k) >> 11) * 0x1.0p-53;
    if (r >= f->prob)
      return false;
  }
  return true;
}

/* Claim one of the rule's times= failures; false when used up. */
static bool claim_failure(struct fv_fail *f)
{
  uint_fast64_t fired = atomic_load(&f->fired);

  do {
    if (f->times && fired >= f->times)
      return false;
  } while (!atomic_compare_exchange_weak(&f->fired, &fired, fired + 1));
  return true;
}

bool fault_should_fail(enum fv_fn fn, VixError *code, bool *async)
{
  uint64_t n = atomic_fetch_add(&call_counts[fn], 1) + 1;

  for (struct fv_fail *f = fv_cfg()->fails[fn]; f; f = f->next) {
    if (rule_matches(f, n) && claim_failure(f)) {
      *code = f->code;
      *async = f->async;
      return true;
    }
  }
  return false;
}

void fault_emit(enum fv_fn fn)
{
  for (const struct fv_emit *e = fv_cfg()->emits[fn]; e; e = e->next) {
    VixDiskLibGenericLogFunc *cb =
        e->channel == CH_LOG ? fv_log_cb :
        e->channel == CH_WARN ? fv_warn_cb : fv_panic_cb;
    if (cb)
      fv_callf(cb, e->format, 42, "hello");
  }
}

uint64_t fault_latency_us(enum fv_fn fn)
{
  return fv_cfg()->latency_us[fn];
}
