"""``vddkpy sync KEY=VALUE... --to DIR [--format raw|qcow2] [--final]
[--enable-cbt] [--quiesce] [--progress=json]``: one sync round (see
rounds.py).  Prints each disk's image; exit status 0 when every disk is
up to date, 1 on failure and 130 / 143 when interrupted by SIGINT /
SIGTERM (state unchanged, snapshot removed: run it again)."""

import signal
import sys

from ..printable import printable

USAGE = ("usage: vddkpy sync server=HOST user=NAME password=SOURCE "
         "thumbprint=XX:.. vm=moref=ID [file=DISK] [KEY=VALUE...] --to DIR "
         "[--format raw|qcow2] [--target DISK=DEVICE|NBD-URI]... [--final] "
         "[--enable-cbt] [--quiesce] [--progress=json]")

_FLAGS = {"--final": "final", "--enable-cbt": "enable_cbt",
          "--quiesce": "quiesce"}


class Terminated(BaseException):
    """SIGTERM, handled like SIGINT."""


class UsageError(Exception):
    pass


def parse(argv):
    """(plugin parameters, options)."""
    params = []
    options = {"to": None, "image_format": "raw", "progress": None,
               "final": False, "enable_cbt": False, "quiesce": False,
               "targets": {}}
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name == "--target":
            value = arg[len("--target="):] if eq else (
                args.pop(0) if args else "")
            disk, eq, dest = value.partition("=")
            if not (disk and eq and dest):
                raise UsageError("--target needs DISK=DEVICE or DISK=NBD-URI")
            options["targets"][disk] = dest
        elif name in ("--to", "--format", "--progress"):
            if not eq:
                if not args:
                    raise UsageError("%s needs a value" % name)
                value = args.pop(0)
            key = {"--to": "to", "--format": "image_format",
                   "--progress": "progress"}[name]
            options[key] = value
        elif arg in _FLAGS:
            options[_FLAGS[arg]] = True
        elif arg in ("-h", "--help"):
            raise UsageError(None)
        elif arg.startswith("-"):
            raise UsageError("unknown option %s" % printable(arg))
        else:
            params.append(arg)
    if options["to"] is None:
        raise UsageError("--to DIR is required")
    if options["image_format"] not in ("raw", "qcow2"):
        raise UsageError("--format must be raw or qcow2, not %s"
                         % printable(options["image_format"]))
    if options["progress"] not in (None, "json", "bar", "none"):
        raise UsageError("--progress must be json, bar or none")
    return params, options


def _terminate(signum, frame):
    raise Terminated()


def main(argv):
    from .progress import reporter
    from .rounds import Round, SyncError
    try:
        params, options = parse(argv)
    except UsageError as e:
        if e.args[0]:
            print("vddkpy sync: error: %s" % e.args[0], file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2 if e.args[0] else 0
    kind = options.pop("progress")
    progress = reporter(kind)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        results = Round(params, progress=progress, **options).run()
    except SyncError as e:
        print("vddkpy sync: error: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vddkpy sync: interrupted: the state is unchanged and the "
              "round's snapshot removed; run it again", file=sys.stderr)
        return 130
    except Terminated:
        print("vddkpy sync: terminated: the state is unchanged and the "
              "round's snapshot removed; run it again", file=sys.stderr)
        return 143
    except Exception as e:          # a bug: still one line, state unchanged
        print("vddkpy sync: error: unexpected %s: %s (the state is "
              "unchanged)" % (type(e).__name__, printable(str(e))),
              file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if kind == "json":
        progress.step("done", disks=[
            {"file": r.file, "image": r.image, "full": r.full,
             "bytes_read": r.bytes_read, "change_id": r.change_id}
            for r in results])
        return 0
    for r in results:
        print("%s: %s (%s, %d bytes read)" % (
            printable(r.file), printable(r.image),
            "full copy" if r.full else "changes", r.bytes_read))
    return 0
