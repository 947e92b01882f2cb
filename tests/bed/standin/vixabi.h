/* vixabi.h -- the VixDiskLib ABI as seen by a client on x86-64 Linux.
 *
 * Everything here must match VMware's libvixDiskLib.so byte for byte,
 * because the plugin under test fills and reads these structures at fixed
 * offsets (see shared/spec/vddk-api.md sections 1-4).  The static
 * assertions at the end pin every offset so a careless edit cannot
 * silently change the layout.
 */
#ifndef FAKEVDDK_VIXABI_H
#define FAKEVDDK_VIXABI_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define VIX_EXPORT __attribute__((visibility("default")))

typedef uint64_t VixError;
typedef uint64_t VixDiskLibSectorType;
typedef char Bool;

#define VIX_ERROR_CODE(e) ((e) & 0xFFFF)

/* Error codes (values from VMware's vix.h). */
enum {
  VIX_OK = 0,
  VIX_E_FAIL = 1,
  VIX_E_OUT_OF_MEMORY = 2,
  VIX_E_INVALID_ARG = 3,
  VIX_E_FILE_NOT_FOUND = 4,
  VIX_E_OBJECT_IS_BUSY = 5,
  VIX_E_NOT_SUPPORTED = 6,
  VIX_E_FILE_ERROR = 7,
  VIX_E_DISK_FULL = 8,
  VIX_E_FILE_READ_ONLY = 11,
  VIX_E_FILE_ALREADY_EXISTS = 12,
  VIX_E_FILE_ACCESS_ERROR = 13,
  VIX_E_FILE_ALREADY_LOCKED = 15,
  VIX_E_AUTHENTICATION_FAIL = 35,
  VIX_E_HOST_CONNECTION_LOST = 36,
  VIX_E_VM_NOT_FOUND = 4000,
  VIX_E_SNAPSHOT_NOTFOUND = 13003,
  VIX_E_HOST_SERVER_NOT_FOUND = 14008,
  VIX_E_HOST_NETWORK_CONN_REFUSED = 14009,
  VIX_E_HOST_TCP_SOCKET_ERROR = 14010,
  VIX_E_HOST_TCP_CONN_LOST = 14011,
  VIX_E_HOST_SERVER_SHUTDOWN = 14014,
  VIX_E_HOST_SERVER_NOT_AVAILABLE = 14015,
  VIX_E_DISK_INVAL = 16000,
  VIX_E_DISK_NOINIT = 16001,
  VIX_E_DISK_NOIO = 16002,
  VIX_E_DISK_OUTOFRANGE = 16007,
  VIX_E_DISK_NOTSUPPORTED = 16013,
  VIX_E_CANNOT_CONNECT_TO_HOST = 18000,
  VIX_ASYNC = 25000,
  VIX_E_ASYNC_MIXEDMODE_UNSUPPORTED = 26000,
};

/* Open flags. */
#define VIXDISKLIB_FLAG_OPEN_UNBUFFERED 1
#define VIXDISKLIB_FLAG_OPEN_SINGLE_LINK 2
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY 4

#define VIXDISKLIB_SECTOR_SIZE 512
#define VIXDISKLIB_MIN_CHUNK_SIZE 128
#define VIXDISKLIB_MAX_CHUNK_NUMBER 524288

#define VIXDISKLIB_CRED_UID 1
#define VIXDISKLIB_CRED_SESSIONID 2

typedef void VixDiskLibGenericLogFunc(const char *fmt, va_list args);
typedef void (*VixDiskLibCompletionCB)(void *cbData, VixError result);
typedef Bool (*VixDiskLibProgressFunc)(void *progressData, int percentCompleted);

/* Opaque to clients; defined in fakevddk.h. */
typedef struct fv_conn *VixDiskLibConnection;
typedef struct fv_handle *VixDiskLibHandle;

/* 3.1 connect params (VDDK >= 7 layout, 128 bytes). */
typedef struct {
  char *vmxSpec;
  char *serverName;
  char *thumbPrint;
  long privateUse;
  int credType;
  union {
    struct {
      char *userName;
      char *password;
    } uid;
    struct {
      char *cookie;
      char *userName;
      char *key;
    } sessionId;
    void *ticketId;
  } creds;
  uint32_t port;
  uint32_t nfcHostPort;
  void *reserved1;
  char reserved2[8];
  void *reserved3;
  struct {
    char *id;
    char *datastoreMoRef;
    char *ssId;
  } spec;
  int specType;
} VixDiskLibConnectParams;

/* 3.2 disk info (64 bytes; 6.x clients only know the first 56). */
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
  uint32_t logicalSectorSize;
  uint32_t physicalSectorSize;
} VixDiskLibInfo;

/* 3.3 block list: header followed by numBlocks entries. */
typedef struct {
  VixDiskLibSectorType offset;
  VixDiskLibSectorType length;
} VixDiskLibBlock;

typedef struct {
  uint32_t numBlocks;
  VixDiskLibBlock blocks[1];
} VixDiskLibBlockList;

/* 3.4 create params (VDDK >= 7 layout, 32 bytes). */
typedef struct {
  int diskType;
  int adapterType;
  uint16_t hwVersion;
  VixDiskLibSectorType capacity;
  uint32_t logicalSectorSize;
  uint32_t physicalSectorSize;
} VixDiskLibCreateParams;

/* Pin the layouts (spec section 3). */
#define FV_AT(type, field, off) \
  _Static_assert(offsetof(type, field) == (off), #type "." #field)
FV_AT(VixDiskLibConnectParams, vmxSpec, 0);
FV_AT(VixDiskLibConnectParams, serverName, 8);
FV_AT(VixDiskLibConnectParams, thumbPrint, 16);
FV_AT(VixDiskLibConnectParams, privateUse, 24);
FV_AT(VixDiskLibConnectParams, credType, 32);
FV_AT(VixDiskLibConnectParams, creds.uid.userName, 40);
FV_AT(VixDiskLibConnectParams, creds.uid.password, 48);
FV_AT(VixDiskLibConnectParams, creds.sessionId.cookie, 40);
FV_AT(VixDiskLibConnectParams, creds.sessionId.userName, 48);
FV_AT(VixDiskLibConnectParams, creds.sessionId.key, 56);
FV_AT(VixDiskLibConnectParams, creds.ticketId, 40);
FV_AT(VixDiskLibConnectParams, port, 64);
FV_AT(VixDiskLibConnectParams, nfcHostPort, 68);
FV_AT(VixDiskLibConnectParams, reserved1, 72);
FV_AT(VixDiskLibConnectParams, reserved2, 80);
FV_AT(VixDiskLibConnectParams, reserved3, 88);
FV_AT(VixDiskLibConnectParams, spec.id, 96);
FV_AT(VixDiskLibConnectParams, spec.datastoreMoRef, 104);
FV_AT(VixDiskLibConnectParams, spec.ssId, 112);
FV_AT(VixDiskLibConnectParams, specType, 120);
_Static_assert(sizeof(VixDiskLibConnectParams) == 128, "connect params size");

FV_AT(VixDiskLibInfo, biosGeo.cylinders, 0);
FV_AT(VixDiskLibInfo, biosGeo.heads, 4);
FV_AT(VixDiskLibInfo, biosGeo.sectors, 8);
FV_AT(VixDiskLibInfo, physGeo.cylinders, 12);
FV_AT(VixDiskLibInfo, physGeo.heads, 16);
FV_AT(VixDiskLibInfo, physGeo.sectors, 20);
FV_AT(VixDiskLibInfo, capacity, 24);
FV_AT(VixDiskLibInfo, adapterType, 32);
FV_AT(VixDiskLibInfo, numLinks, 36);
FV_AT(VixDiskLibInfo, parentFileNameHint, 40);
FV_AT(VixDiskLibInfo, uuid, 48);
FV_AT(VixDiskLibInfo, logicalSectorSize, 56);
FV_AT(VixDiskLibInfo, physicalSectorSize, 60);
_Static_assert(sizeof(VixDiskLibInfo) == 64, "disk info size");

FV_AT(VixDiskLibBlockList, numBlocks, 0);
FV_AT(VixDiskLibBlockList, blocks, 8);
FV_AT(VixDiskLibBlock, offset, 0);
FV_AT(VixDiskLibBlock, length, 8);
_Static_assert(sizeof(VixDiskLibBlock) == 16, "block size");

FV_AT(VixDiskLibCreateParams, diskType, 0);
FV_AT(VixDiskLibCreateParams, adapterType, 4);
FV_AT(VixDiskLibCreateParams, hwVersion, 8);
FV_AT(VixDiskLibCreateParams, capacity, 16);
FV_AT(VixDiskLibCreateParams, logicalSectorSize, 24);
FV_AT(VixDiskLibCreateParams, physicalSectorSize, 28);
_Static_assert(sizeof(VixDiskLibCreateParams) == 32, "create params size");
#undef FV_AT

/* The 23 exported functions (spec section 4). */
VIX_EXPORT VixError VixDiskLib_InitEx(uint32_t major, uint32_t minor,
                                      VixDiskLibGenericLogFunc *log,
                                      VixDiskLibGenericLogFunc *warn,
                                      VixDiskLibGenericLogFunc *panic,
                                      const char *libDir,
                                      const char *configFile);
VIX_EXPORT void VixDiskLib_Exit(void);
VIX_EXPORT const char *VixDiskLib_ListTransportModes(void);
VIX_EXPORT char *VixDiskLib_GetErrorText(VixError err, const char *locale);
VIX_EXPORT void VixDiskLib_FreeErrorText(char *text);
VIX_EXPORT VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void);
VIX_EXPORT void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *p);
VIX_EXPORT VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *p,
                                         Bool readOnly,
                                         const char *snapshotRef,
                                         const char *transportModes,
                                         VixDiskLibConnection *conn);
VIX_EXPORT VixError VixDiskLib_Disconnect(VixDiskLibConnection conn);
VIX_EXPORT VixError VixDiskLib_Open(VixDiskLibConnection conn,
                                    const char *path, uint32_t flags,
                                    VixDiskLibHandle *handle);
VIX_EXPORT const char *VixDiskLib_GetTransportMode(VixDiskLibHandle h);
VIX_EXPORT VixError VixDiskLib_Close(VixDiskLibHandle h);
VIX_EXPORT VixError VixDiskLib_GetInfo(VixDiskLibHandle h,
                                       VixDiskLibInfo **info);
VIX_EXPORT void VixDiskLib_FreeInfo(VixDiskLibInfo *info);
VIX_EXPORT VixError VixDiskLib_Read(VixDiskLibHandle h,
                                    VixDiskLibSectorType start,
                                    VixDiskLibSectorType count,
                                    uint8_t *buf);
VIX_EXPORT VixError VixDiskLib_Write(VixDiskLibHandle h,
                                     VixDiskLibSectorType start,
                                     VixDiskLibSectorType count,
                                     const uint8_t *buf);
VIX_EXPORT VixError VixDiskLib_Create(VixDiskLibConnection conn,
                                      const char *path,
                                      const VixDiskLibCreateParams *cp,
                                      VixDiskLibProgressFunc progress,
                                      void *progressData);
VIX_EXPORT VixError VixDiskLib_Flush(VixDiskLibHandle h);
VIX_EXPORT VixError VixDiskLib_ReadAsync(VixDiskLibHandle h,
                                         VixDiskLibSectorType start,
                                         VixDiskLibSectorType count,
                                         uint8_t *buf,
                                         VixDiskLibCompletionCB cb,
                                         void *cbData);
VIX_EXPORT VixError VixDiskLib_WriteAsync(VixDiskLibHandle h,
                                          VixDiskLibSectorType start,
                                          VixDiskLibSectorType count,
                                          const uint8_t *buf,
                                          VixDiskLibCompletionCB cb,
                                          void *cbData);
#ifndef FAKEVDDK_OMIT_WAIT
VIX_EXPORT VixError VixDiskLib_Wait(VixDiskLibHandle h);
#endif
VIX_EXPORT VixError VixDiskLib_QueryAllocatedBlocks(
    VixDiskLibHandle h, VixDiskLibSectorType start,
    VixDiskLibSectorType count, VixDiskLibSectorType chunk,
    VixDiskLibBlockList **list);
VIX_EXPORT VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *list);

#endif
