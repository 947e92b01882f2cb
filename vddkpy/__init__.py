"""vddkpy: VMware VDDK (libvixDiskLib) through cffi, served by nbdkit."""

__version__ = "0.1.0"
