/* fakevddk.h -- internal declarations shared by the stand-in's sources.
 *
 * Nothing here is exported: the Makefile builds with -fvisibility=hidden and
 * only the VixDiskLib_* functions (marked VIX_EXPORT in vixabi.h) are
 * visible to the program that loads the library.
 */
#ifndef FAKEVDDK_H
#define FAKEVDDK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vixabi.h"
#include "disk.h"

/* ---- function identities (for config rules, call log, messages) ---- */

#define FV_FUNCTIONS(X)                                                   \
  X(InitEx) X(Exit) X(ListTransportModes) X(GetErrorText)                 \
  X(FreeErrorText) X(FreeConnectParams) X(ConnectEx) X(Open)              \
  X(GetTransportMode) X(Close) X(Disconnect) X(GetInfo) X(FreeInfo)       \
  X(Read) X(Write) X(Create) X(Flush) X(ReadAsync) X(WriteAsync) X(Wait)  \
  X(QueryAllocatedBlocks) X(FreeBlockList) X(AllocateConnectParams)

enum fv_fn {
#define FV_ENUM(name) FN_##name,
  FV_FUNCTIONS(FV_ENUM)
#undef FV_ENUM
  FN__COUNT
};

extern const char *const fv_fn_names[FN__COUNT];
int fv_fn_lookup(const char *name); /* -1 if unknown */

/* ---- configuration (config.c) ---- */

struct fv_strlist {
  char *s;
  struct fv_strlist *next;
};

/* A "user NAME PASSWORD" or "cookie COOKIE NAME" line. */
struct fv_cred {
  char *user;
  char *secret;
  struct fv_cred *next;
};

struct fv_datastore {
  char *name;
  char *dir;
  struct fv_datastore *next;
};

/* "snapshot MOREF [DATASTORE=DIR]...": a snapshot of the vm; opening a
 * disk with it as snapshotRef finds the named datastores in DIR (where the
 * disks are frozen as they were when the snapshot was taken), the others
 * in the vm's datastores. */
struct fv_snapshot {
  char *name;
  struct fv_datastore *datastores;
  struct fv_snapshot *next;
};

struct fv_vm {
  char *spec;
  struct fv_datastore *datastores;
  struct fv_snapshot *snapshots;
  /* "snapshots DIR": a snapshotRef with no "snapshot" line is a snapshot
   * when DIR/MOREF is a directory, its datastores DIR/MOREF/NAME (where the
   * simulated vCenter freezes them: no config rewrite per snapshot). */
  char *snapshots_dir;
  bool running;                   /* powered on: base disks are locked */
  /* "running_while PATH": powered on while PATH exists (the simulated
   * vCenter keeps it), instead of a fixed "running". */
  char *running_while;
  struct fv_vm *next;
};

enum fv_down { DOWN_NO = 0, DOWN_YES, DOWN_AT_OPEN };

/* "down_for": one timed outage of a server (outage.c).  The settings are
 * fixed at parse time; the progress fields change under outage.c's lock. */
struct fv_outage {
  uint64_t after;     /* server calls that succeed before it goes down */
  uint64_t calls;     /* down for this many failed calls, or ... */
  uint64_t seconds;   /* ... for this many seconds */
  VixError code;      /* what every affected call returns */
  uint64_t seen;      /* server calls so far */
  uint64_t failed;    /* calls failed during the outage */
  uint64_t started_ns;/* when it went down; 0 not yet */
};

struct fv_server {
  char *name;
  uint32_t port;
  uint32_t nfc_port;
  char *thumbprint; /* NULL: not configured, no check */
  struct fv_cred *users;
  struct fv_cred *cookies;
  char *transports;
  enum fv_down down;
  struct fv_outage *outage;       /* NULL: no down_for */
  uint64_t nfc_max_request;       /* bytes; 0: no limit */
  struct fv_vm *vms;
  struct fv_server *next;
};

enum fv_channel { CH_LOG, CH_WARN, CH_PANIC };

struct fv_emit {
  enum fv_channel channel;
  char *format;
  struct fv_emit *next;
};

struct fv_fail {
  VixError code;
  uint64_t nth, after, every, times;
  double prob;
  uint64_t seed;
  bool has_prob;
  bool async;
  atomic_uint_fast64_t evaluated; /* PRNG sequence position */
  atomic_uint_fast64_t fired;     /* for times= */
  struct fv_fail *next;
};

struct fv_config {
  uint32_t logical_sector_size;
  uint32_t physical_sector_size;
  bool adapter_type_set;        /* else the disk's own */
  int adapter_type;
  const char *transport_modes; /* NULL means "return NULL" */
  bool error_text_null;
  char *error_text;            /* override for every code, or NULL */
  uint64_t async_delay_us;
  uint64_t serialize_delay_us;
  bool async_inline;
  unsigned async_threads;
  bool bios_geo_set, phys_geo_set;
  VixDiskLibGeometry bios_geo, phys_geo;
  bool uuid_set;
  char *uuid;                  /* when uuid_set; NULL means NULL */
  bool num_links_set;           /* else the disk's own */
  int num_links;
  char *parent_hint;           /* else the disk's own */
  struct fv_emit *emits[FN__COUNT];
  struct fv_fail *fails[FN__COUNT];
  uint64_t latency_us[FN__COUNT];
  struct fv_server *servers;
  struct fv_config *retired_next;
  struct fv_arena *arena;      /* every allocation of this config */
};

/* Parse FILE (may be NULL: defaults).  Returns VIX_OK or an error after
 * printing the reason to stderr; *out is set either way (defaults on
 * error) so that later GetErrorText etc. keep working. */
VixError config_load(const char *file, struct fv_config **out);
const struct fv_config *fv_cfg(void);          /* current config */
void fv_set_cfg(struct fv_config *cfg);        /* retire the old one */
void fv_free_cfgs(void);                       /* at Exit */
const struct fv_server *config_find_server(const struct fv_config *,
                                           const char *name);

/* Fault injection (config.c). */
bool fault_should_fail(enum fv_fn fn, VixError *code, bool *async);
void fault_emit(enum fv_fn fn);
uint64_t fault_latency_us(enum fv_fn fn);

/* ---- library state (api_lib.c) ---- */

extern VixDiskLibGenericLogFunc *fv_log_cb, *fv_warn_cb, *fv_panic_cb;
int fv_version(void);
void fv_callf(VixDiskLibGenericLogFunc *fn, const char *fmt, ...);
void fv_check_process(enum fv_fn fn);

/* ---- call log (calllog.c) ---- */

struct fv_log {
  bool on;
  size_t len, cap;
  char *buf;
  char inline_buf[768];
};

void log_begin(struct fv_log *l, const char *fn);
void log_str(struct fv_log *l, const char *key, const char *val);
void log_u64(struct fv_log *l, const char *key, uint64_t val);
void log_int(struct fv_log *l, const char *key, long long val);
void log_bool(struct fv_log *l, const char *key, bool val);
void log_id(struct fv_log *l, const char *key, int id); /* 0 -> null */
void log_end(struct fv_log *l);
void log_end_result(struct fv_log *l, VixError result);

/* ---- threading-rule detection and misc (guard.c) ---- */

/* Who is currently inside a guarded region; tid 0 = nobody. */
struct fv_owner {
  _Atomic pid_t tid;
  _Atomic(const char *) fn;
};

pid_t fv_gettid(void);
uint64_t fv_now_ns(void);
void fv_sleep_us(uint64_t us);
bool owner_enter(struct fv_owner *o, enum fv_fn fn, int handle_id);
void owner_leave(struct fv_owner *o);
extern struct fv_owner fv_global_owner; /* Open/Close/ConnectEx/Disconnect */
_Noreturn void fv_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* ---- connections and handles ---- */

#define FV_CONN_MAGIC 0x436f6e6eu   /* "Conn" */
#define FV_HANDLE_MAGIC 0x48616e64u /* "Hand" */
#define FV_DEAD_MAGIC 0xdeadbeefu

struct fv_conn {
  uint32_t magic;
  int id;
  bool remote;
  bool readonly;
  const struct fv_server *server; /* remote only */
  const struct fv_vm *vm;
  const struct fv_snapshot *snapshot; /* snapshotRef, NULL if none */
  char *snapshot_dir;             /* or DIR/MOREF of "snapshots DIR" */
  char *mode;                     /* chosen transport, NULL if none */
  char *thumbprint;
  uint32_t nfc_port;
};

struct fv_handle {
  uint32_t magic;
  int id;
  struct fv_conn *conn;
  uint32_t flags;
  const char *mode;
  char *path;                     /* as passed to Open */
  struct fv_disk disk;
  struct fv_owner owner;
  pthread_mutex_t lock;           /* protects outstanding */
  pthread_cond_t idle;
  unsigned outstanding;           /* accepted async requests not finished */
  bool opened_after_outage;       /* remote: the outage had already begun */
};

struct fv_conn *fv_conn_check(VixDiskLibConnection c, enum fv_fn fn);
struct fv_handle *fv_handle_check(VixDiskLibHandle h, enum fv_fn fn);

/* ---- per-call bookkeeping shared by every entry point (call.c) ---- */

/* One in-progress library call: its log line and the guards it holds. */
struct fv_call {
  enum fv_fn fn;
  struct fv_log log;
  struct fv_owner *handle_owner; /* non-NULL while we own a handle */
  bool global_owned;             /* we own fv_global_owner */
};

/* Fork check (unless the function is exempt) and start of the log line. */
void call_begin(struct fv_call *c, enum fv_fn fn, bool check_process);
/* Enter the handle's "inside" marker; aborts if another thread is in. */
void call_guard_handle(struct fv_call *c, struct fv_handle *h);
/* Enter the Open/Close/ConnectEx/Disconnect section and sleep for
 * serialize_delay_us inside it, making overlaps easy to catch. */
void call_guard_global(struct fv_call *c);
/* emit messages, sleep the configured latency (unless SLEEP is false),
 * then decide whether this call fails.  Returns true with *code set when
 * it must fail; *async says the failure goes to the completion callback. */
bool call_inject(struct fv_call *c, bool sleep, VixError *code, bool *async);
/* Release guards. */
void call_release(struct fv_call *c);
/* Release guards, finish the log line with "result", return RESULT. */
VixError call_end(struct fv_call *c, VixError result);
/* Same for functions without a VixError result. */
void call_end_void(struct fv_call *c);

/* ---- emulated network faults of remote servers (outage.c) ---- */

/* ConnectEx/Open on server S: VIX_OK, or the outage's code while down. */
VixError outage_check_server(const struct fv_server *s);
/* Remember whether H is opened after its server's outage began. */
void outage_note_open(struct fv_handle *h);
/* A call on H's disk: the outage's code while the server is down, and
 * forever for a handle opened before the outage (its NFC link is gone). */
VixError outage_check_handle(const struct fv_handle *h);
/* A read or write of COUNT sectors over NFC: VIX_E_OUT_OF_MEMORY and an
 * NFC error message through the warn callback when above the server's
 * nfc_max_request. */
VixError nfc_check_request(const struct fv_handle *h, uint64_t count);

/* ---- asynchronous completion engine (async.c) ---- */

enum fv_op { OP_READ, OP_WRITE };

struct fv_async_req {
  enum fv_op op;
  struct fv_handle *h;
  uint64_t start, count;
  void *buf;
  VixDiskLibCompletionCB cb;
  void *cb_data;
  uint64_t due_ns;
  bool forced;          /* complete with forced_result, no data moved */
  VixError forced_result;
};

int async_start(unsigned nthreads);
void async_stop(void);
/* In a child forked after InitEx the parent's threads do not exist:
 * forget them instead of joining. */
void async_forget(void);
/* Accept a request; returns the number of outstanding requests on the
 * handle including this one. */
unsigned async_submit(const struct fv_async_req *req, bool run_inline);
void async_wait_handle(struct fv_handle *h);

/* ---- error texts (errtext.c) ---- */

const char *fv_error_text(VixError err);

#endif
