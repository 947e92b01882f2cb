/* companion.c -- stands in for the private libraries real VDDK ships next
 * to libvixDiskLib.so (libssl, libcurl, ...) and dlopens by bare name at
 * InitEx.  Its presence tests that the plugin puts the library directory
 * into LD_LIBRARY_PATH. */
__attribute__((visibility("default"))) int fakevddk_companion_ping(void)
{
  return 42;
}
