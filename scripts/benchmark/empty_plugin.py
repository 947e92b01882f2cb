"""An nbdkit Python plugin whose pread does nothing: what nbdkit's python
plugin costs by itself (same API version and thread model as vddkpy).
The bench serves it; it is not imported."""
import os

import nbdkit

API_VERSION = 2
size = 0


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def config(key, value):
    global size
    if key != "file":
        raise RuntimeError("unknown parameter " + key)
    size = os.stat(value).st_size


def open(readonly):
    return 1


def get_size(h):
    return size


def pread(h, buf, offset, flags):
    pass
