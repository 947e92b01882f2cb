"""vddkpy sync: a VM's disks kept up to date in a directory, one round at
a time, from vSphere's changed block tracking (warm migration,
incremental backup).  ``vddkpy sync KEY=VALUE... --to DIR`` runs one
round (command.py); backup tools call ``sync()``:

    from vddkpy.sync import sync, SyncError
    disks = sync(["server=esxi.example.com", "user=root",
                  "password=+/root/pw", "thumbprint=AA:...",
                  "vm=moref=vm-42"], to="/backup/vm-42")
    for disk in disks:
        print(disk.file, disk.image, disk.bytes_read, disk.change_id)
"""

from .rounds import DiskResult, SyncError  # noqa: F401


def sync(params, to, image_format="raw", final=False, enable_cbt=False,
         quiesce=False, progress=None, targets=None):
    """One round: bring directory ``to`` up to date with the VM named by
    ``params`` (the plugin's KEY=VALUE parameters).  Returns a DiskResult
    per disk; raises SyncError (state unchanged, snapshot removed) on
    failure.  ``progress``: None (quiet), "json" or "bar"; ``targets``:
    {disk file: block device or NBD URI} for disks not kept as images."""
    from .progress import reporter
    from .rounds import Round
    return Round(params, to, image_format=image_format, final=final,
                 enable_cbt=enable_cbt, quiesce=quiesce, targets=targets,
                 progress=reporter(progress or "none")).run()
