/*
 * dirlist.h - opening a directory of a dataset to list it, where a
 * directory that does not exist yet simply holds nothing (gc, the catalog's
 * versions and intents all list folders that appear on first use).
 *
 * Kept apart from fsutil.h so that only the files that list directories see
 * <dirent.h> (and the limits it brings in).
 */
#ifndef SF_DIRLIST_H
#define SF_DIRLIST_H

#include <dirent.h>

#include "core/base/error.h"

/* Opens the directory "<base>/<rel>" to list it. *dir receives its path
 * (malloc'd: the caller frees) and *d the stream (the caller closedirs).
 * A directory that does not exist is SF_OK with *d and *dir NULL: there is
 * nothing to list. Any other failure is SF_EIO ("cannot list <dir>") or
 * SF_ENOMEM, with both NULL. */
sf_code sf_dirlist_open(const char *base, const char *rel, char **dir, DIR **d,
                        sf_err *err);

#endif
