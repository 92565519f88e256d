/* json_test_util.h: reading the CLI's --json output in the product tests: the last line as an
 * object (or a command run for it: run_json), and a member as a number or a string with a value
 * that fails any check when it is absent (NAN, ""). Header-only, on top of test_product_util.h
 * (run_vfmt, last_line). */
#ifndef PK_JSON_TEST_UTIL_H
#define PK_JSON_TEST_UTIL_H

#include "test_product_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The last line of out parsed as one JSON object (owned, cJSON_Delete), or NULL after showing
 * that line on stderr. out is changed in place (last_line). */
static inline cJSON *last_json(char *out)
{
    cJSON *j = cJSON_Parse(last_line(out));
    if (j != NULL && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        j = NULL;
    }
    if (j == NULL)
        fprintf(stderr, "not a JSON object: '%s'\n", last_line(out));
    return j;
}

/* Runs a command line (printf format) as run_fmt does with `how`, and parses the last line of its
 * output as last_json does: *j gets that object (owned, cJSON_Delete) or NULL. Returns the exit
 * status, as run_fmt. */
static inline int run_json(cJSON **j, int how, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int run_json(cJSON **j, int how, const char *fmt, ...)
{
    char *o = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = run_vfmt(&o, how, fmt, ap);
    va_end(ap);
    *j = last_json(o);
    free(o);
    return rc;
}

/* The number j.key, or NAN if it is absent or not a number. */
static inline double json_num(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : (double)NAN;
}

/* The string j.key (a view into j), or "" if it is absent or not a string. */
static inline const char *json_str(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* json_str copied into buf (n bytes, cut short if longer). */
static inline void json_str_copy(const cJSON *j, const char *key, char *buf, size_t n)
{
    snprintf(buf, n, "%s", json_str(j, key));
}

/* 1 if the last line of out (changed in place, last_line) is a JSON object whose "weights" is
 * hash: the final weights a train, replay or export reported. */
static inline int json_weights_are(char *out, const char *hash)
{
    cJSON *j = last_json(out);
    int same = j != NULL && !strcmp(json_str(j, "weights"), hash);
    cJSON_Delete(j);
    return same;
}

#endif /* PK_JSON_TEST_UTIL_H */
