"""The network face of the stand-in's emulated ESXi host, for tests that
need one (``vddkpy check``): what a real host offers before VDDK is even
called.

* the HTTPS API port, with a self-signed certificate (its SHA-1
  thumbprint is what the stand-in's ``server`` block checks), answering
  vSphere's anonymous ``RetrieveServiceContent`` on ``POST /sdk`` with the
  ``about`` data of a chosen version, as ESXi and vCenter do;
* the NFC port (902 on a real host): a TCP listener.

``sdk=False`` makes the HTTPS port a web server that is not vSphere.

``config()`` writes the matching stand-in ``server`` block, so that VDDK
(the stand-in) and the network agree on ports and certificate.
"""

import http.server
import socket
import ssl
import subprocess
import sys
import threading

from bed import ROOT, stop_listening
from vddkpy.vsphere.thumbprint import format_thumbprint  # noqa: E402

_ABOUT = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><RetrieveServiceContentResponse xmlns="urn:vim25">
<returnval><rootFolder type="Folder">ha-folder-root</rootFolder>
<about><name>%(name)s</name><fullName>%(name)s %(version)s build-1</fullName>
<vendor>VMware, Inc.</vendor><version>%(version)s</version><build>1</build>
<apiType>%(api_type)s</apiType><apiVersion>%(version)s.0</apiVersion>
</about></returnval></RetrieveServiceContentResponse>
</soapenv:Body></soapenv:Envelope>"""


def _certificate(directory):
    key, cert = directory / "host-key.pem", directory / "host-cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return key, cert


def free_port():
    """A local TCP port nothing listens on (the blocked-port cases)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


class Host:
    """An emulated ESXi (or vCenter) host on 127.0.0.1."""

    def __init__(self, directory, version="8.0.2", api_type="HostAgent",
                 nfc=True, sdk=True):
        key, cert = _certificate(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.thumbprint = format_thumbprint(
            ssl.PEM_cert_to_DER_cert(cert.read_text()))
        about = (_ABOUT % {"name": "VMware vCenter Server" if api_type ==
                           "VirtualCenter" else "VMware ESXi",
                           "version": version, "api_type": api_type}).encode()

        class Api(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = 200 if sdk and self.path == "/sdk" else 404
                self.send_response(status)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(about)))
                self.end_headers()
                self.wfile.write(about)

            def log_message(self, *args):
                pass

        self.api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
        self.api.socket = context.wrap_socket(self.api.socket,
                                              server_side=True)
        self.port = self.api.server_address[1]
        self.nfc = socket.create_server(("127.0.0.1", 0)) if nfc else None
        self.nfc_port = self.nfc.getsockname()[1] if nfc else free_port()
        self._threads = [threading.Thread(target=self.api.serve_forever,
                                          daemon=True)]
        if nfc:
            self._threads.append(threading.Thread(target=self._accept,
                                                  daemon=True))
        for thread in self._threads:
            thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.nfc.accept()
            except OSError:
                return
            conn.close()

    def args(self):
        """The plugin parameters that reach this host."""
        return ["server=127.0.0.1", "port=%d" % self.port,
                "nfchostport=%d" % self.nfc_port,
                "thumbprint=%s" % self.thumbprint]

    def config(self, datastore, vm_lines=""):
        """The stand-in's server block for this host."""
        return ("server 127.0.0.1\n  port %d\n  nfc_port %d\n"
                "  thumbprint %s\n  user root sekret\n"
                "  transports nbdssl:nbd\n  vm moref=2\n"
                "    datastore datastore1 %s\n    snapshot snapshot-1\n%s"
                % (self.port, self.nfc_port, self.thumbprint, datastore,
                   vm_lines))

    def close(self):
        self.api.shutdown()
        self.api.server_close()
        if self.nfc is not None:
            stop_listening(self.nfc)
