"""One line saying what to do, for the VDDK errors whose text does not.

VDDK answers several unrelated set-up mistakes with the same opaque code
("Error 1 (Unknown error)", "Error 13 (You do not have access rights to
this file)").  Upstream prints one hint after Error 1 from Open; these are
that hint and ours for the other cases users meet (see the manual's
TROUBLESHOOTING).  The plugin prints them after its error line, and
``vddkpy check`` gives them as the fix of a failing step.  Ours start with
``hint: `` so that they can be told from upstream's lines.
"""

from .vddk.abi import (VIX_E_FAIL, VIX_E_FILE_ACCESS_ERROR,
                       VIX_E_HOST_NETWORK_CONN_REFUSED, VIX_E_OUT_OF_MEMORY,
                       VIX_E_SNAPSHOT_NOTFOUND, VIX_E_VM_NOT_FOUND,
                       error_code)

# Upstream's text, word for word: users search for it.
OPEN_HINT = ('VDDK "Unknown error" can be caused by several problems.  '
             'Refer to nbdkit-vddk-plugin(1) section "Error 1 (Unknown '
             'error) when opening a disk" for details.')

REFUSED = ("hint: the server refused the connection: check server= and "
           "port= (HTTPS, 443) and that this machine reaches TCP port 902 "
           "(NFC, nfchostport=) of the ESXi host; 'vddkpy check' tests both")
RUNNING_VM = ("hint: Error 13 opening the disk of a running VM: create a "
              "snapshot and pass snapshot=MOREF (as virt-v2v, CDI and "
              "Forklift do for warm migrations), or power the VM off")
NO_TRANSPORT = ("hint: Error 13 also means that no mode of transports= "
                "worked (HotAdd: no free SCSI slot): try transports=nbdssl:nbd")
# Error 13 when transports= lists only modes that need this machine's
# place in the vSphere installation (whatever the VM's power state).
PLACED_MODES = {
    "hotadd": "hotadd works only where nbdkit runs in a VM (a backup proxy) "
              "on an ESXi host that sees the disk's datastore",
    "san": "san works only where this machine reaches the datastore's LUNs "
           "over Fibre Channel or iSCSI",
    "file": "file opens local files, not a VM's disk on a server",
}
NFC_MEMORY = ("hint: the ESXi host's NFC server could not allocate memory for "
              "a request this large: add --filter=blocksize maxdata=2M (less "
              "if it still fails) and use fewer connections to the host")
VM_NOT_FOUND = ("hint: vm=moref= takes the VM's managed object reference "
                "(vm-NN on vCenter, a number on ESXi), not its name")
SNAPSHOT_NOT_FOUND = ("hint: snapshot= names no snapshot of this VM now: "
                      "one removed since (take a new snapshot and pass its "
                      "reference), or not a managed object reference "
                      "(snapshot-NN)")


def thumbprint_hint(actual, given):
    if given is None:
        return ("hint: no thumbprint= was given; the server's certificate "
                "has %s: add thumbprint=%s" % (actual, actual))
    return ("hint: the server's certificate has thumbprint %s, not %s: use "
            "thumbprint=%s" % (actual, given, actual))


def _open_hints(full_code, params, actual_thumbprint):
    # Upstream compares the whole 64-bit value for its Error 1 hint.
    if full_code == VIX_E_FAIL:
        lines = [OPEN_HINT]
        if actual_thumbprint and (params.thumbprint or "").upper() \
                != actual_thumbprint.upper():
            lines.append(thumbprint_hint(actual_thumbprint,
                                         params.thumbprint))
        return lines
    if error_code(full_code) == VIX_E_FILE_ACCESS_ERROR:
        placed = _placed_modes_only(params.transports)
        if placed:
            return [placed]
        return [RUNNING_VM if params.snapshot is None else NO_TRANSPORT]
    return []


def _placed_modes_only(transports):
    """The hint when transports= lists only hotadd, san or file, else
    None (nbd and nbdssl work from anywhere)."""
    modes = [m for m in (transports or "").split(":") if m]
    if not modes or any(m not in PLACED_MODES for m in modes):
        return None
    return ("hint: Error 13 with transports=%s: %s; try transports=nbdssl:nbd"
            % (":".join(modes), "; ".join(PLACED_MODES[m] for m in modes)))


_CONNECT_HINTS = {
    VIX_E_VM_NOT_FOUND: VM_NOT_FOUND,
    VIX_E_SNAPSHOT_NOTFOUND: SNAPSHOT_NOT_FOUND,
}


def for_error(code, params, where, actual_thumbprint=None):
    """The hint lines (maybe none) after VixError ``code`` from ``where``
    ("connect", "open" or "data") on a remote disk."""
    full_code, code = code, error_code(code)
    if not params.is_remote:
        return []
    if code == VIX_E_HOST_NETWORK_CONN_REFUSED and where != "data":
        return [REFUSED]
    if where == "connect" and code in _CONNECT_HINTS:
        return [_CONNECT_HINTS[code]]
    if where == "open":
        return _open_hints(full_code, params, actual_thumbprint)
    if where == "data" and code == VIX_E_OUT_OF_MEMORY:
        return [NFC_MEMORY]
    return []
