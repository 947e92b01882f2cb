/* vmdk_desc.c -- the text descriptor of a VMDK: parse and write.
 *
 * A descriptor is line based: "# ..." comments, "key=value" header lines
 * (CID, parentCID, createType, parentFileNameHint), extent lines
 * ("RW 2048 SPARSE \"x.vmdk\"", FLAT ones end with a start offset) and the
 * disk database ("ddb.key = \"value\"").
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vmdk.h"

static const char *const adapter_names[] = {
  [1] = "ide", [2] = "buslogic", [3] = "lsilogic", [4] = "legacyESX",
};

int vmdk_adapter_from_name(const char *name)
{
  for (int i = 1; i < 5; i++)
    if (name && strcasecmp(name, adapter_names[i]) == 0)
      return i;
  return 2;                     /* BusLogic, VMware's default */
}

const char *vmdk_adapter_name(int adapter)
{
  return adapter >= 1 && adapter <= 4 ? adapter_names[adapter] : "buslogic";
}

static char *trim(char *s)
{
  char *end;

  while (*s == ' ' || *s == '\t')
    s++;
  end = s + strlen(s);
  while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
    *--end = '\0';
  return s;
}

static char *unquote(char *s)
{
  size_t n = strlen(s);

  if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
    s[n - 1] = '\0';
    return s + 1;
  }
  return s;
}

static bool is_extent_line(const char *line)
{
  static const char *const access[] = { "RW ", "RDONLY ", "NOACCESS " };

  for (size_t i = 0; i < 3; i++)
    if (strncmp(line, access[i], strlen(access[i])) == 0)
      return true;
  return false;
}

/* ACCESS SECTORS TYPE ["FILE" [OFFSET]] */
static int parse_extent(char *line, struct vmdk_desc *d)
{
  struct vmdk_desc_extent e = { 0 };
  char *q1, *q2;
  void *v;
  int used = 0;

  if (sscanf(line, "%11s %" SCNu64 " %15s %n", e.access, &e.sectors, e.type,
             &used) < 3 || used == 0 || e.sectors == 0)
    return -1;
  q1 = strchr(line + used, '"');
  if (q1) {
    if (!(q2 = strchr(q1 + 1, '"')))
      return -1;
    e.file = strndup(q1 + 1, q2 - q1 - 1);
    if (sscanf(q2 + 1, "%" SCNu64, &e.offset) != 1)
      e.offset = 0;
  } else if (strcmp(e.type, "ZERO") != 0) {
    return -1;
  }
  v = realloc(d->extents, (d->nextents + 1) * sizeof e);
  if (!v) {
    free(e.file);
    return -1;
  }
  d->extents = v;
  d->extents[d->nextents++] = e;
  return 0;
}

static void set_u32(const char *value, int base, uint32_t *out)
{
  *out = strtoul(value, NULL, base);
}

static void set_key(struct vmdk_desc *d, const char *key, char *value)
{
  static const struct { const char *key; size_t off; } u32s[] = {
    { "ddb.geometry.cylinders", offsetof(struct vmdk_desc, cylinders) },
    { "ddb.geometry.heads", offsetof(struct vmdk_desc, heads) },
    { "ddb.geometry.sectors", offsetof(struct vmdk_desc, sectors) },
    { "ddb.geometry.biosCylinders",
      offsetof(struct vmdk_desc, bios_cylinders) },
    { "ddb.geometry.biosHeads", offsetof(struct vmdk_desc, bios_heads) },
    { "ddb.geometry.biosSectors", offsetof(struct vmdk_desc, bios_sectors) },
  };
  static const struct { const char *key; size_t off; } strs[] = {
    { "createType", offsetof(struct vmdk_desc, create_type) },
    { "parentFileNameHint", offsetof(struct vmdk_desc, parent_hint) },
    { "ddb.adapterType", offsetof(struct vmdk_desc, adapter_type) },
    { "ddb.virtualHWVersion", offsetof(struct vmdk_desc, hw_version) },
    { "ddb.uuid", offsetof(struct vmdk_desc, uuid) },
  };

  if (strcmp(key, "CID") == 0)
    return set_u32(value, 16, &d->cid);
  if (strcmp(key, "parentCID") == 0)
    return set_u32(value, 16, &d->parent_cid);
  for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++)
    if (strcmp(key, u32s[i].key) == 0)
      return set_u32(value, 10, (uint32_t *)((char *)d + u32s[i].off));
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    if (strcmp(key, strs[i].key) == 0) {
      char **slot = (char **)((char *)d + strs[i].off);
      free(*slot);
      *slot = strdup(value);
      return;
    }
  }
}

int vmdk_desc_parse(const char *text, struct vmdk_desc *d)
{
  char *copy = strdup(text), *save = NULL, *line;
  bool version = false;
  int r = 0;

  memset(d, 0, sizeof *d);
  d->parent_cid = VMDK_NO_PARENT_CID;
  if (!copy)
    return -1;
  for (line = strtok_r(copy, "\n", &save); line && r == 0;
       line = strtok_r(NULL, "\n", &save)) {
    char *eq;
    line = trim(line);
    if (*line == '\0' || *line == '#')
      continue;
    if (is_extent_line(line)) {
      r = parse_extent(line, d);
    } else if ((eq = strchr(line, '='))) {
      *eq = '\0';
      char *key = trim(line);
      version |= strcmp(key, "version") == 0;
      set_key(d, key, unquote(trim(eq + 1)));
    } else {
      r = -1;                   /* neither comment, setting nor extent */
    }
  }
  free(copy);
  if (r == 0 && (!version || !d->create_type || d->nextents == 0))
    r = -1;
  if (r != 0)
    vmdk_desc_free(d);
  return r;
}

void vmdk_desc_free(struct vmdk_desc *d)
{
  for (size_t i = 0; i < d->nextents; i++)
    free(d->extents[i].file);
  free(d->extents);
  free(d->create_type);
  free(d->parent_hint);
  free(d->adapter_type);
  free(d->hw_version);
  free(d->uuid);
  memset(d, 0, sizeof *d);
}

static void print_extent(FILE *f, const struct vmdk_desc_extent *e)
{
  fprintf(f, "%s %" PRIu64 " %s", e->access, e->sectors, e->type);
  if (e->file)
    fprintf(f, " \"%s\"", e->file);
  if (strcmp(e->type, "FLAT") == 0)
    fprintf(f, " %" PRIu64, e->offset);
  fputc('\n', f);
}

char *vmdk_desc_format(const struct vmdk_desc *d)
{
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);

  if (!f)
    return NULL;
  fprintf(f, "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n"
          "CID=%08" PRIx32 "\nparentCID=%08" PRIx32 "\ncreateType=\"%s\"\n",
          d->cid, d->parent_cid, d->create_type);
  if (d->parent_hint)
    fprintf(f, "parentFileNameHint=\"%s\"\n", d->parent_hint);
  fputs("\n# Extent description\n", f);
  for (size_t i = 0; i < d->nextents; i++)
    print_extent(f, &d->extents[i]);
  fprintf(f, "\n# The Disk Data Base\n#DDB\n\n"
          "ddb.adapterType = \"%s\"\n"
          "ddb.geometry.cylinders = \"%" PRIu32 "\"\n"
          "ddb.geometry.heads = \"%" PRIu32 "\"\n"
          "ddb.geometry.sectors = \"%" PRIu32 "\"\n"
          "ddb.uuid = \"%s\"\n"
          "ddb.virtualHWVersion = \"%s\"\n",
          d->adapter_type, d->cylinders, d->heads, d->sectors, d->uuid,
          d->hw_version);
  if (fclose(f) != 0) {
    free(text);
    return NULL;
  }
  return text;
}
