/* types.c - see types.h. */
#include "core/base/types.h"

#include <strings.h>

static const char *const type_names[] = {"IVF_FLAT", "IVF_SQ", "IVF_PQ"};
static const char *const metric_names[] = {"L2", "COSINE", "DOT"};

const char *sf_index_type_name(sf_index_type t) {
  return (unsigned)t < 3 ? type_names[t] : "UNKNOWN";
}

const char *sf_metric_name(sf_metric m) {
  return (unsigned)m < 3 ? metric_names[m] : "UNKNOWN";
}

sf_code sf_index_type_parse(const char *s, sf_index_type *out, sf_err *err) {
  for (unsigned i = 0; s && i < 3; i++)
    if (!strcasecmp(s, type_names[i])) {
      *out = (sf_index_type)i;
      return SF_OK;
    }
  return sf_err_set(err, SF_EINVAL,
                    "unknown index type '%s': use IVF_FLAT, IVF_SQ or IVF_PQ",
                    s ? s : "");
}

sf_code sf_metric_parse(const char *s, sf_metric *out, sf_err *err) {
  for (unsigned i = 0; s && i < 3; i++)
    if (!strcasecmp(s, metric_names[i])) {
      *out = (sf_metric)i;
      return SF_OK;
    }
  return sf_err_set(err, SF_EINVAL, "unknown metric '%s': use L2, COSINE or DOT",
                    s ? s : "");
}
