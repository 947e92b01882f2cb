/* errtext.c -- message texts for VixError codes.
 *
 * Where a real VIX/VDDK wording is known (seen in VMware tool output or
 * bug reports) it is used; the others are plain descriptions in the same
 * style.  Real VDDK's GetErrorText returns just the message, without the
 * code.
 */
#include <stddef.h>

#include "fakevddk.h"

struct text {
  unsigned code;
  const char *msg;
};

static const struct text texts[] = {
  { VIX_OK, "The operation was successfully completed" },
  { VIX_E_FAIL, "Unknown error" },
  { VIX_E_OUT_OF_MEMORY, "Memory allocation failed: out of memory" },
  { VIX_E_INVALID_ARG, "One of the parameters was invalid" },
  { VIX_E_FILE_NOT_FOUND, "A file was not found" },
  { VIX_E_OBJECT_IS_BUSY, "The object is busy" },
  { VIX_E_NOT_SUPPORTED, "The operation is not supported" },
  { VIX_E_FILE_ERROR,
    "A file access error occurred on the host or guest operating system" },
  { VIX_E_DISK_FULL,
    "An error occurred while writing a file; the disk is full. Data has "
    "not been saved. Free some disk space and try again" },
  { 10, "The operation was canceled" },
  { VIX_E_FILE_READ_ONLY, "The file is write-protected" },
  { VIX_E_FILE_ALREADY_EXISTS, "The file already exists" },
  { VIX_E_FILE_ACCESS_ERROR, "You do not have access rights to this file" },
  { VIX_E_FILE_ALREADY_LOCKED, "The file is already in use" },
  { VIX_E_AUTHENTICATION_FAIL,
    "Authentication failure or insufficient permissions in guest "
    "operating system" },
  { VIX_E_HOST_CONNECTION_LOST, "The host connection was lost" },
  { VIX_E_VM_NOT_FOUND, "The virtual machine cannot be found" },
  { VIX_E_SNAPSHOT_NOTFOUND, "The snapshot does not exist" },
  { VIX_E_HOST_SERVER_NOT_FOUND, "The host is not available" },
  { VIX_E_HOST_NETWORK_CONN_REFUSED, "The server refused connection" },
  { VIX_E_HOST_TCP_SOCKET_ERROR, "There was an error in communication" },
  { VIX_E_HOST_TCP_CONN_LOST, "The connection with the host was lost" },
  { VIX_E_HOST_SERVER_SHUTDOWN, "The host is shutting down" },
  { VIX_E_HOST_SERVER_NOT_AVAILABLE, "The host is not available" },
  { VIX_E_DISK_INVAL, "One of the parameters supplied is invalid" },
  { VIX_E_DISK_NOINIT, "The disk library has not been initialized" },
  { VIX_E_DISK_NOIO,
    "The called function requires the virtual disk to be opened for I/O" },
  { VIX_E_DISK_OUTOFRANGE, "Attempted to access beyond the end of the disk" },
  { VIX_E_DISK_NOTSUPPORTED,
    "The operation is not supported for this type of disk" },
  { VIX_E_CANNOT_CONNECT_TO_HOST, "Cannot connect to host" },
  { VIX_ASYNC, "The asynchronous operation was started" },
  { VIX_E_ASYNC_MIXEDMODE_UNSUPPORTED,
    "Mixing synchronous and asynchronous I/O on one disk is not supported" },
};

const char *fv_error_text(VixError err)
{
  unsigned code = VIX_ERROR_CODE(err);

  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
    if (texts[i].code == code)
      return texts[i].msg;
  return "Unknown error";
}
