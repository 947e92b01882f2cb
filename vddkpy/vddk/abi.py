"""The VixDiskLib ABI (x86-64), declared once.

Everything else in vddkpy derives from the tables here: the cffi
declarations (``DECLARATIONS``, which ``ffibuild`` compiles into the
generated module ``binding`` loads), the symbol lookup at load time, the
``--dump-plugin`` lines and the statistics rows.  Struct layouts follow
VMware's public ``vixDiskLib.h`` field for field; the offsets are checked
in ``check_layouts`` because the plugin writes into structures that VDDK
allocates.  This module is plain data: importing it costs nothing.
"""

VDDK_DECLARATIONS = """
typedef uint64_t VixError;
typedef uint64_t VixDiskLibSectorType;
typedef char Bool;
typedef struct VixDiskLibConnectParam *VixDiskLibConnection;
typedef struct VixDiskLibHandleStruct *VixDiskLibHandle;

/* A va_list argument is passed as a pointer on x86-64. */
typedef void VixDiskLibGenericLogFunc(const char *fmt, void *args);
typedef void (*VixDiskLibCompletionCB)(void *cbData, VixError result);
typedef Bool (*VixDiskLibProgressFunc)(void *progressData, int percentCompleted);

typedef struct {
    char *userName;
    char *password;
} VixDiskLibUidPasswdCreds;

typedef struct {
    char *cookie;
    char *userName;
    char *key;
} VixDiskLibSessionIdCreds;

typedef struct {
    char *id;
    char *datastoreMoRef;
    char *ssId;
} VixDiskLibVStorageObjectSpec;

typedef struct VixDiskLibConnectParams {
    char *vmxSpec;
    char *serverName;
    char *thumbPrint;
    long privateUse;
    int credType;
    union {
        VixDiskLibUidPasswdCreds uid;
        VixDiskLibSessionIdCreds sessionId;
        void *ticketId;
    } creds;
    uint32_t port;
    uint32_t nfcHostPort;
    void *vimApiVer;
    char reserved[8];
    void *ssoCertificate;
    union {
        VixDiskLibVStorageObjectSpec vStorageObjSpec;
    } spec;
    int specType;
} VixDiskLibConnectParams;

typedef struct {
    uint32_t cylinders;
    uint32_t heads;
    uint32_t sectors;
} VixDiskLibGeometry;

typedef struct {
    VixDiskLibGeometry biosGeo;
    VixDiskLibGeometry physGeo;
    VixDiskLibSectorType capacity;
    int adapterType;
    int numLinks;
    char *parentFileNameHint;
    char *uuid;
    uint32_t logicalSectorSize;   /* VDDK >= 7 only */
    uint32_t physicalSectorSize;  /* VDDK >= 7 only */
} VixDiskLibInfo;

typedef struct {
    VixDiskLibSectorType offset;
    VixDiskLibSectorType length;
} VixDiskLibBlock;

typedef struct {
    uint32_t numBlocks;
    VixDiskLibBlock blocks[1];
} VixDiskLibBlockList;

typedef struct {
    int diskType;
    int adapterType;
    uint16_t hwVersion;
    VixDiskLibSectorType capacity;
    uint32_t logicalSectorSize;
    uint32_t physicalSectorSize;
} VixDiskLibCreateParams;
"""

# What vddkpy calls in its own process (``native``): libc for the dynamic
# loader's error texts, vsnprintf for VDDK's va_list log messages, glibc's
# fnmatch and thread-exit hook (``threadstate``); and the helpers the
# nbdkit server exports to plugins.
PROCESS_DECLARATIONS = """
void *dlopen(const char *filename, int flags);
void *dlsym(void *handle, const char *symbol);
char *dlerror(void);
typedef struct {
    const char *dli_fname;
    void *dli_fbase;
    const char *dli_sname;
    void *dli_saddr;
} Dl_info;
int dladdr(const void *addr, Dl_info *info);
int vsnprintf(char *str, size_t size, const char *format, void *ap);
int fnmatch(const char *pattern, const char *string, int flags);
void *newlocale(int category_mask, const char *locale, void *base);
void *uselocale(void *newloc);
void exit(int status);
int fflush(void *stream);
void free(void *ptr);
int prctl(int option, unsigned long arg2, unsigned long arg3,
          unsigned long arg4, unsigned long arg5);
int __cxa_thread_atexit_impl(void (*func)(void *), void *obj,
                             void *dso_symbol);

void nbdkit_error(const char *fs, ...);
void nbdkit_debug(const char *fs, ...);
int nbdkit_parse_bool(const char *str);
int nbdkit_parse_uint16_t(const char *what, const char *str, uint16_t *r);
int64_t nbdkit_parse_size(const char *str);
int nbdkit_read_password(const char *value, char **password);
char *nbdkit_realpath(const char *path);
const char *nbdkit_export_name(void);
int nbdkit_nanosleep(unsigned sec, unsigned nsec);
"""

DECLARATIONS = VDDK_DECLARATIONS + PROCESS_DECLARATIONS
# The module ffibuild generates from them at build time, which binding
# loads (in this package).
GENERATED_MODULE = "_vddk_cffi"
GENERATED_QUALIFIED = "%s.%s" % (__package__, GENERATED_MODULE)

# Byte offsets from VMware's headers; the plugin fills VDDK-allocated
# structures, so a mismatch would silently corrupt them.
LAYOUTS = {
    "VixDiskLibConnectParams": (128, {
        "vmxSpec": 0, "serverName": 8, "thumbPrint": 16, "privateUse": 24,
        "credType": 32, "creds": 40, "port": 64, "nfcHostPort": 68,
        "spec": 96, "specType": 120}),
    "VixDiskLibInfo": (64, {
        "biosGeo": 0, "physGeo": 12, "capacity": 24, "adapterType": 32,
        "numLinks": 36, "parentFileNameHint": 40, "uuid": 48,
        "logicalSectorSize": 56, "physicalSectorSize": 60}),
    "VixDiskLibBlockList": (24, {"numBlocks": 0, "blocks": 8}),
    "VixDiskLibCreateParams": (32, {
        "diskType": 0, "adapterType": 4, "hwVersion": 8, "capacity": 16,
        "logicalSectorSize": 24, "physicalSectorSize": 28}),
}


def check_layouts(ffi):
    """Raise AssertionError if ``ffi``'s layout differs from VDDK's."""
    for struct, (size, fields) in LAYOUTS.items():
        assert ffi.sizeof(struct) == size, (struct, ffi.sizeof(struct))
        for field, offset in fields.items():
            assert ffi.offsetof(struct, field) == offset, (struct, field)


class Function:
    """One VixDiskLib function: its C signature and how we treat it."""

    def __init__(self, name, restype, args, datapath=False, required=True):
        self.name = name              # without the VixDiskLib_ prefix
        self.symbol = "VixDiskLib_" + name
        self.ctype = "%s(*)(%s)" % (restype, args)
        self.datapath = datapath      # silenced by -D vddk.datapath=0
        self.required = required


# In the order upstream's plugin looks them up (and dumps them).
FUNCTIONS = [
    Function("InitEx", "VixError",
             "uint32_t, uint32_t, VixDiskLibGenericLogFunc *, "
             "VixDiskLibGenericLogFunc *, VixDiskLibGenericLogFunc *, "
             "const char *, const char *"),
    Function("Exit", "void", "void"),
    Function("ListTransportModes", "const char *", "void"),
    Function("GetErrorText", "char *", "VixError, const char *"),
    Function("FreeErrorText", "void", "char *"),
    Function("FreeConnectParams", "void", "VixDiskLibConnectParams *"),
    Function("ConnectEx", "VixError",
             "const VixDiskLibConnectParams *, Bool, const char *, "
             "const char *, VixDiskLibConnection *"),
    Function("Open", "VixError",
             "const VixDiskLibConnection, const char *, uint32_t, "
             "VixDiskLibHandle *"),
    Function("GetTransportMode", "const char *", "VixDiskLibHandle"),
    Function("Close", "VixError", "VixDiskLibHandle"),
    Function("Disconnect", "VixError", "VixDiskLibConnection"),
    Function("GetInfo", "VixError", "VixDiskLibHandle, VixDiskLibInfo **"),
    Function("FreeInfo", "void", "VixDiskLibInfo *"),
    Function("Read", "VixError",
             "VixDiskLibHandle, VixDiskLibSectorType, VixDiskLibSectorType, "
             "uint8_t *", datapath=True),
    Function("Write", "VixError",
             "VixDiskLibHandle, VixDiskLibSectorType, VixDiskLibSectorType, "
             "const uint8_t *", datapath=True),
    Function("Create", "VixError",
             "const VixDiskLibConnection, const char *, "
             "const VixDiskLibCreateParams *, VixDiskLibProgressFunc, void *"),
    Function("Flush", "VixError", "VixDiskLibHandle"),
    Function("ReadAsync", "VixError",
             "VixDiskLibHandle, VixDiskLibSectorType, VixDiskLibSectorType, "
             "uint8_t *, VixDiskLibCompletionCB, void *", datapath=True),
    Function("WriteAsync", "VixError",
             "VixDiskLibHandle, VixDiskLibSectorType, VixDiskLibSectorType, "
             "const uint8_t *, VixDiskLibCompletionCB, void *", datapath=True),
    Function("Wait", "VixError", "VixDiskLibHandle"),
    Function("QueryAllocatedBlocks", "VixError",
             "VixDiskLibHandle, VixDiskLibSectorType, VixDiskLibSectorType, "
             "VixDiskLibSectorType, VixDiskLibBlockList **", required=False),
    Function("FreeBlockList", "VixError", "VixDiskLibBlockList *",
             required=False),
    Function("AllocateConnectParams", "VixDiskLibConnectParams *", "void",
             required=False),
]

# VixError (vix.h): a status whose low 16 bits are the code; the codes
# vddkpy tells apart, named as VMware names them.  ``error_code`` is the
# one way to read a status's code.
VIX_OK = 0
VIX_E_FAIL = 1
VIX_E_OUT_OF_MEMORY = 2
VIX_E_INVALID_ARG = 3
VIX_E_DISK_FULL = 8
VIX_E_FILE_READ_ONLY = 11
VIX_E_FILE_ACCESS_ERROR = 13
VIX_E_AUTHENTICATION_FAIL = 35
VIX_E_VM_NOT_FOUND = 4000
VIX_E_SNAPSHOT_NOTFOUND = 13003
VIX_E_HOST_NETWORK_CONN_REFUSED = 14009
VIX_E_HOST_SERVER_SHUTDOWN = 14014
VIX_E_DISK_INVAL = 16000
VIX_E_DISK_OUTOFRANGE = 16007
VIX_ASYNC = 25000


def error_code(status):
    """The code of a VixError status (its other bits are flags)."""
    return status & 0xFFFF


SECTOR_SIZE = 512
MIN_CHUNK_SIZE = 128            # sectors
MAX_CHUNK_NUMBER = 512 * 1024   # chunks per QueryAllocatedBlocks call

FLAG_OPEN_UNBUFFERED = 1
FLAG_OPEN_SINGLE_LINK = 2
FLAG_OPEN_READ_ONLY = 4
FLAG_OPEN_COMPRESSION_ZLIB = 16
FLAG_OPEN_COMPRESSION_FASTLZ = 32
FLAG_OPEN_COMPRESSION_SKIPZ = 64

CRED_UID = 1
CRED_SESSIONID = 2
SPEC_VMX = 0

DISK_TYPES = {
    "monolithic-sparse": 1, "monolithic-flat": 2, "split-sparse": 3,
    "split-flat": 4, "vmfs-flat": 5, "stream-optimized": 6,
    "vmfs-thin": 7, "vmfs-sparse": 8,
}
ADAPTER_TYPES = {"ide": 1, "scsi-buslogic": 2, "scsi-lsilogic": 3}
HW_VERSIONS = {
    "workstation4": 3, "workstation5": 4, "workstation6": 6, "esx30": 4,
    "esx4x": 7, "esx50": 8, "esx51": 9, "esx55": 10, "esx60": 11,
    "esx65": 13,
}
COMPRESSION_FLAGS = {
    "none": 0, "zlib": FLAG_OPEN_COMPRESSION_ZLIB,
    "fastlz": FLAG_OPEN_COMPRESSION_FASTLZ,
    "skipz": FLAG_OPEN_COMPRESSION_SKIPZ,
}
