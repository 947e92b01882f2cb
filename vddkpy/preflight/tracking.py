"""The ``cbt`` step: whether vSphere tracks the disk's changed blocks, read
through the vSphere API with pyvmomi (python3-pyvmomi) when it is
installed: ``config.changeTrackingEnabled`` of the VM and the disk's
``backing.changeId``.  Warm migrations (virt-v2v, CDI, Forklift) copy
only what changed since a changeId, so they need it on."""

import socket
import ssl

from .network import API_PORT, TIMEOUT
from .report import OK, WARN, Result


def _pyvmomi():
    try:
        from pyVim import connect
        from pyVmomi import vim
    except ImportError:
        return None
    return connect, vim


def _session(connect, params):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE     # pinned by the thumbprint
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT)
    try:
        return connect.SmartConnect(
            host=params.server, port=params.port or API_PORT,
            user=params.user, pwd=params.password, sslContext=context,
            thumbprint=params.thumbprint)
    finally:
        socket.setdefaulttimeout(previous)


def _disk(vim, vm, filename):
    for device in vm.config.hardware.device:
        if isinstance(device, vim.vm.device.VirtualDisk) and \
                getattr(device.backing, "fileName", None) == filename:
            return device
    return None


def change_tracking(params):
    """The step's result, or None without pyvmomi or a moref to look at."""
    modules = _pyvmomi()
    if modules is None or params.cookie is not None or \
            params.file is None or not params.vm.startswith("moref="):
        return None
    connect, vim = modules
    try:
        si = _session(connect, params)
    except Exception as e:          # pyvmomi's faults, sockets, parsing
        return Result(WARN, "cbt", "could not ask the vSphere API with "
                      "pyvmomi: %s" % (str(e).strip().splitlines()
                                       or [type(e).__name__])[0])
    try:
        vm = vim.VirtualMachine(params.vm[len("moref="):], si._stub)
        enabled = vm.config.changeTrackingEnabled
        disk = _disk(vim, vm, params.file)
    finally:
        connect.Disconnect(si)
    if disk is None:
        return Result(WARN, "cbt", "the VM's configuration has no disk "
                      "named %s" % params.file, "file= names the disk as "
                      "the VM's configuration does")
    if not enabled:
        return Result(WARN, "cbt", "changed block tracking is off for vm=%s: "
                      "each warm-migration pass copies the whole disk"
                      % params.vm, "enable changeTrackingEnabled on the VM "
                      "(ReconfigVM), then take a new snapshot")
    return Result(OK, "cbt", "changed block tracking is on; the disk's "
                  "changeId is %s" % disk.backing.changeId)
