/* dirlist.c - see dirlist.h. */
#include "core/base/dirlist.h"

#include <errno.h>
#include <stdlib.h>

#include "core/base/fsutil.h"

sf_code sf_dirlist_open(const char *base, const char *rel, char **dir, DIR **d,
                        sf_err *err) {
  *d = NULL;
  *dir = sf_fs_join(base, rel);
  if (!*dir) return sf_err_set(err, SF_ENOMEM, "out of memory");
  *d = opendir(*dir);
  if (*d) return SF_OK;
  sf_code rc =
      errno == ENOENT ? SF_OK : sf_err_errno(err, SF_EIO, errno, "cannot list %s", *dir);
  free(*dir);
  *dir = NULL;
  return rc;
}
