/*  pconfig - loads and validates the configuration against pconfig_schema.c. */
#include "common/pconfig.h"
#include "common/palloc.h"
#include "common/pconfig_schema.h"
#include "common/plog.h"
#include "common/ptable.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 256

typedef struct {
    char *err;          //  where the first error goes
    size_t errlen;
    bool strict;        //  unknown keys are errors
    int warnings;
    const char *origin; //  file name for messages
} s_ctx_t;

static int s_fail (s_ctx_t *ctx, const char *path, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static int s_fail (s_ctx_t *ctx, const char *path, const char *fmt, ...)
{
    char what[512];
    va_list args;
    va_start (args, fmt);
    vsnprintf (what, sizeof what, fmt, args);
    va_end (args);
    snprintf (ctx->err, ctx->errlen, "%s: %s: %s", ctx->origin, *path ? path : "(top level)", what);
    return -1;
}

const char *pcfg_json_type (const json_t *v)
{
    if (!v)
        return "nothing";
    switch (json_typeof (v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "something else";
}

//  Edit distance, for "did you mean" on unknown keys.
static size_t s_distance (const char *a, const char *b)
{
    size_t la = strlen (a), lb = strlen (b);
    if (la > 40 || lb > 40)
        return 99;
    size_t row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = (a[i - 1] | 32) == (b[j - 1] | 32) ? 0 : 1;
            size_t best = prev + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

//  Replaces line and block comments outside strings with spaces, keeping line
//  breaks, so the seeds' annotated configs load and jansson's line numbers
//  still point at the right place.
static char *s_strip_comments (const char *text)
{
    char *out = pstrdup (text);
    bool in_string = false;
    for (char *p = out; *p; p++) {
        if (in_string) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '"')
                in_string = false;
        }
        else if (*p == '"')
            in_string = true;
        else if (p[0] == '/' && p[1] == '/') {
            while (*p && *p != '\n')
                *p++ = ' ';
            if (!*p)
                break;
        }
        else if (p[0] == '/' && p[1] == '*') {
            *p++ = ' ';
            *p = ' ';
            for (p++; *p && !(p[0] == '*' && p[1] == '/'); p++)
                if (*p != '\n')
                    *p = ' ';
            if (!*p)
                break;
            *p++ = ' ';
            *p = ' ';
        }
    }
    return out;
}

static int s_load_object (s_ctx_t *ctx, const pcfg_schema_t *schema, char *base, json_t *obj,
                          const char *path);

static void s_join (char *out, const char *path, const char *key)
{
    snprintf (out, PATH_MAX_LEN, "%s%s%s", path, *path ? "." : "", key);
}

//  Parses an environment override into JSON of the field's type.
static json_t *s_env_value (const pcfg_field_t *f, const char *text)
{
    switch (f->type) {
    case PCFG_STR: return json_string (text);
    case PCFG_INT: {
        char *end;
        errno = 0;
        long long v = strtoll (text, &end, 10);
        return (errno || *end || end == text) ? json_string (text) : json_integer (v);
    }
    case PCFG_NUM: {
        char *end;
        double v = strtod (text, &end);
        return (*end || end == text) ? json_string (text) : json_real (v);
    }
    case PCFG_BOOL:
        if (!strcmp (text, "1") || !strcmp (text, "true"))
            return json_true ();
        if (!strcmp (text, "0") || !strcmp (text, "false"))
            return json_false ();
        return json_string (text);
    default: return json_loads (text, JSON_DECODE_ANY, NULL);
    }
}

static int s_load_strs (s_ctx_t *ctx, pcfg_strs_t *out, json_t *v, const char *path)
{
    if (!json_is_array (v))
        return s_fail (ctx, path, "expected an array of strings, got %s", pcfg_json_type (v));
    size_t n = json_array_size (v);
    out->items = pcalloc (n ? n : 1, sizeof (char *));
    out->count = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get (v, i);
        if (!json_is_string (item)) {
            char ipath[PATH_MAX_LEN];
            snprintf (ipath, sizeof ipath, "%s[%zu]", path, i);
            return s_fail (ctx, ipath, "expected a string, got %s", pcfg_json_type (item));
        }
        out->items[out->count++] = pstrdup (json_string_value (item));
    }
    return 0;
}

static int s_load_field (s_ctx_t *ctx, const pcfg_field_t *f, char *base, json_t *v,
                         const char *path)
{
    void *at = base + f->offset;
    switch (f->type) {
    case PCFG_INT: {
        double d;
        if (json_is_integer (v))
            d = (double) json_integer_value (v);
        else if (json_is_real (v) && floor (json_real_value (v)) == json_real_value (v))
            d = json_real_value (v);
        else
            return s_fail (ctx, path, "expected an integer, got %s", pcfg_json_type (v));
        if (f->min <= f->max && (d < f->min || d > f->max))
            return s_fail (ctx, path, "%.0f is out of range %.0f..%.0f", d, f->min, f->max);
        *(int64_t *) at = json_is_integer (v) ? json_integer_value (v) : (int64_t) d;
        return 0;
    }
    case PCFG_NUM: {
        if (!json_is_number (v))
            return s_fail (ctx, path, "expected a number, got %s", pcfg_json_type (v));
        double d = json_number_value (v);
        if (f->min <= f->max && (d < f->min || d > f->max))
            return s_fail (ctx, path, "%g is out of range %g..%g", d, f->min, f->max);
        *(double *) at = d;
        return 0;
    }
    case PCFG_BOOL:
        if (!json_is_boolean (v))
            return s_fail (ctx, path, "expected true or false, got %s", pcfg_json_type (v));
        *(bool *) at = json_is_true (v);
        return 0;
    case PCFG_STR: {
        if (!json_is_string (v))
            return s_fail (ctx, path, "expected a string, got %s", pcfg_json_type (v));
        const char *s = json_string_value (v);
        if (f->choices) {
            bool found = false;
            size_t len = strlen (s);
            for (const char *c = f->choices; *c;) {
                const char *bar = strchr (c, '|');
                size_t clen = bar ? (size_t) (bar - c) : strlen (c);
                if (clen == len && strncmp (c, s, len) == 0)
                    found = true;
                c += clen + (bar ? 1 : 0);
            }
            if (!found)
                return s_fail (ctx, path, "\"%s\" is not one of %s", s, f->choices);
        }
        free (*(char **) at);
        *(char **) at = pstrdup (s);
        return 0;
    }
    case PCFG_STRS: return s_load_strs (ctx, (pcfg_strs_t *) at, v, path);
    case PCFG_JSON:
        json_decref (*(json_t **) at);
        *(json_t **) at = json_incref (v);
        return 0;
    case PCFG_OBJ: return s_load_object (ctx, f->sub, base + f->offset, v, path);
    case PCFG_ARR: {
        if (!json_is_array (v))
            return s_fail (ctx, path, "expected an array, got %s", pcfg_json_type (v));
        pcfg_arr_t *arr = (pcfg_arr_t *) at;
        size_t n = json_array_size (v);
        arr->items = pcalloc (n ? n : 1, f->sub->size);
        arr->count = n;
        for (size_t i = 0; i < n; i++) {
            char ipath[PATH_MAX_LEN];
            snprintf (ipath, sizeof ipath, "%s[%zu]", path, i);
            if (s_load_object (ctx, f->sub, (char *) arr->items + i * f->sub->size,
                               json_array_get (v, i), ipath))
                return -1;
        }
        return 0;
    }
    case PCFG_IGNORE: return 0;
    }
    return 0;
}

static int s_load_object (s_ctx_t *ctx, const pcfg_schema_t *schema, char *base, json_t *obj,
                          const char *path)
{
    if (obj && !json_is_object (obj))
        return s_fail (ctx, path, "expected an object, got %s", pcfg_json_type (obj));
    for (size_t i = 0; i < schema->count; i++) {
        const pcfg_field_t *f = &schema->fields[i];
        if (f->type == PCFG_IGNORE)
            continue;
        char fpath[PATH_MAX_LEN + 80];
        s_join (fpath, path, f->key);
        json_t *v = obj ? json_object_get (obj, f->key) : NULL;
        json_t *owned = NULL;
        const char *env = f->env ? getenv (f->env) : NULL;
        if (env && *env) {
            owned = s_env_value (f, env);
            if (!owned)
                return s_fail (ctx, fpath, "environment variable %s is not valid JSON", f->env);
            v = owned;
            size_t used = strlen (fpath);
            snprintf (fpath + used, sizeof fpath - used, " (from $%s)", f->env);
        }
        if (!v && f->def) {
            owned = json_loads (f->def, JSON_DECODE_ANY, NULL);
            v = owned;
        }
        if (!v) {
            if (f->flags & PCFG_REQUIRED)
                return s_fail (ctx, fpath, "required, but missing");
            continue;
        }
        int rc = s_load_field (ctx, f, base, v, fpath);
        json_decref (owned);
        if (rc)
            return rc;
    }
    if (!obj)
        return 0;
    const char *key;
    json_t *value;
    json_object_foreach (obj, key, value) {
        const pcfg_field_t *known = NULL;
        const char *best = NULL;
        size_t best_d = 3;
        for (size_t i = 0; i < schema->count; i++) {
            if (strcmp (schema->fields[i].key, key) == 0)
                known = &schema->fields[i];
            size_t d = s_distance (schema->fields[i].key, key);
            if (d < best_d) {
                best_d = d;
                best = schema->fields[i].key;
            }
        }
        if (known)
            continue;
        char kpath[PATH_MAX_LEN];
        s_join (kpath, path, key);
        if (ctx->strict) {
            if (best)
                return s_fail (ctx, kpath, "unknown key (did you mean '%s'?)", best);
            return s_fail (ctx, kpath, "unknown key");
        }
        ctx->warnings++;
        if (best)
            plog_warn ("%s: %s: unknown key, ignored (did you mean '%s'?)", ctx->origin, kpath, best);
        else
            plog_warn ("%s: %s: unknown key, ignored", ctx->origin, kpath);
    }
    return 0;
}

static void s_free_object (const pcfg_schema_t *schema, char *base)
{
    for (size_t i = 0; i < schema->count; i++) {
        const pcfg_field_t *f = &schema->fields[i];
        void *at = base + f->offset;
        switch (f->type) {
        case PCFG_STR:
            free (*(char **) at);
            *(char **) at = NULL;
            break;
        case PCFG_STRS: {
            pcfg_strs_t *s = (pcfg_strs_t *) at;
            for (size_t j = 0; j < s->count; j++)
                free (s->items[j]);
            free (s->items);
            s->items = NULL;
            s->count = 0;
            break;
        }
        case PCFG_JSON:
            json_decref (*(json_t **) at);
            *(json_t **) at = NULL;
            break;
        case PCFG_OBJ: s_free_object (f->sub, base + f->offset); break;
        case PCFG_ARR: {
            pcfg_arr_t *arr = (pcfg_arr_t *) at;
            for (size_t j = 0; j < arr->count; j++)
                s_free_object (f->sub, (char *) arr->items + j * f->sub->size);
            free (arr->items);
            arr->items = NULL;
            arr->count = 0;
            break;
        }
        default: break;
        }
    }
}

//  Rules that span several keys.
static const void *s_entity_id (const void *item)
{
    return ((const pcfg_entity_t *) item)->id;
}

static bool s_entity_id_match (const void *item, const void *key)
{
    return strcmp (((const pcfg_entity_t *) item)->id, key) == 0;
}

static int s_validate (s_ctx_t *ctx, pcfg_t *self)
{
    char path[PATH_MAX_LEN];
    //  Every job names its entity: broker, worker and sink look it up per
    //  job, so with a thousand entities a walk of the list was a tenth of
    //  the broker's time. One table, built here, finds each in one probe.
    self->entity_ids = ptable_new (ptable_hash_str, s_entity_id, s_entity_id_match);
    for (size_t i = 0; i < self->entities.count; i++) {
        pcfg_entity_t *e = pcfg_entity (self, i);
        snprintf (path, sizeof path, "entities[%zu].id", i);
        if (!*e->id)
            return s_fail (ctx, path, "must not be empty");
        if (strpbrk (e->id, " /\t\n"))
            return s_fail (ctx, path, "\"%s\" must not contain spaces or '/'", e->id);
        const pcfg_entity_t *same = ptable_lookup (self->entity_ids, e->id);
        if (same)
            return s_fail (ctx, path, "\"%s\" is also the id of entities[%zu]", e->id,
                           (size_t) (same - pcfg_entity (self, 0)));
        ptable_insert (self->entity_ids, e);
        if (!*e->name) {
            free (e->name);
            e->name = pstrdup (e->id);
        }
    }
    pcfg_source_t *sources = self->sources.items;
    for (size_t i = 0; i < self->sources.count; i++) {
        snprintf (path, sizeof path, "poller.sources[%zu].name", i);
        if (!*sources[i].name || strpbrk (sources[i].name, " /\t\n"))
            return s_fail (ctx, path, "must be a non-empty name without spaces or '/'");
        for (size_t j = 0; j < i; j++)
            if (strcmp (sources[j].name, sources[i].name) == 0)
                return s_fail (ctx, path, "\"%s\" is also the name of poller.sources[%zu]",
                               sources[i].name, j);
    }
    pcfg_llm_server_t *servers = self->llm_servers.items;
    for (size_t i = 0; i < self->llm_servers.count; i++) {
        pcfg_llm_server_t *s = &servers[i];
        if (!*s->url && *s->ip) {
            char url[300];
            snprintf (url, sizeof url, "http://%s:%lld", s->ip, (long long) s->port);
            free (s->url);
            s->url = pstrdup (url);
        }
        snprintf (path, sizeof path, "lmStudioServers[%zu]", i);
        if (!*s->url)
            return s_fail (ctx, path, "needs \"url\" (or \"ip\" and \"port\")");
        if (!*s->name) {
            free (s->name);
            s->name = pstrdup (s->url);
        }
    }
    const pcfg_delay_t *delays[] = {&self->delay_urgent, &self->delay_normal, &self->delay_low};
    const char *names[] = {"urgent", "normal", "low"};
    for (int i = 0; i < 3; i++)
        if (delays[i]->min_ms > delays[i]->max_ms) {
            snprintf (path, sizeof path, "queueSettings.responseDelays.%s", names[i]);
            return s_fail (ctx, path, "minMs (%lld) is greater than maxMs (%lld)",
                           (long long) delays[i]->min_ms, (long long) delays[i]->max_ms);
        }
    if (self->retry_base_ms > self->retry_max_ms)
        return s_fail (ctx, "queueSettings.retryBaseMs", "is greater than retryMaxMs");
    return 0;
}

json_t *pcfg_parse_string (const char *text, const char *origin, char *err, size_t errlen)
{
    char *clean = s_strip_comments (text);
    if (!clean) {
        snprintf (err, errlen, "%s: out of memory", origin);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loads (clean, JSON_REJECT_DUPLICATES, &jerr);
    free (clean);
    if (!root)
        snprintf (err, errlen, "%s: line %d, column %d: %s", origin, jerr.line, jerr.column,
                  jerr.text);
    return root;
}

json_t *pcfg_parse_file (const char *path, char *err, size_t errlen)
{
    if (!path)
        return pcfg_parse_string (pconfig_default_json, "embedded default", err, errlen);
    FILE *f = fopen (path, "rb");
    if (!f) {
        snprintf (err, errlen, "%s: cannot open: %s", path, strerror (errno));
        return NULL;
    }
    char *text = NULL;
    size_t size = 0, cap = 0;
    for (;;) {
        if (size + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *grown = prealloc (text, cap);
            if (!grown) {
                free (text);
                fclose (f);
                snprintf (err, errlen, "%s: out of memory", path);
                return NULL;
            }
            text = grown;
        }
        size_t n = fread (text + size, 1, 4096, f);
        size += n;
        if (n < 4096)
            break;
    }
    fclose (f);
    text[size] = 0;
    json_t *root = pcfg_parse_string (text, path, err, errlen);
    free (text);
    return root;
}

pcfg_t *pcfg_from_json (json_t *root, const char *origin, bool strict, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    s_ctx_t ctx = {err, errlen, strict, 0, origin ? origin : "config"};
    pcfg_t *self = pcalloc (1, sizeof *self);
    if (s_load_object (&ctx, &pcfg_root_schema, (char *) self, root, "")
        || s_validate (&ctx, self)) {
        pcfg_destroy (&self);
        return NULL;
    }
    self->root = json_incref (root);
    return self;
}

pcfg_t *pcfg_load_string (const char *text, const char *origin, bool strict, char *err,
                          size_t errlen)
{
    json_t *root = pcfg_parse_string (text, origin ? origin : "config", err, errlen);
    if (!root)
        return NULL;
    pcfg_t *self = pcfg_from_json (root, origin, strict, err, errlen);
    json_decref (root);
    return self;
}

pcfg_t *pcfg_load (const char *path, bool strict, char *err, size_t errlen)
{
    json_t *root = pcfg_parse_file (path, err, errlen);
    if (!root)
        return NULL;
    pcfg_t *self = pcfg_from_json (root, path ? path : "embedded default", strict, err, errlen);
    json_decref (root);
    return self;
}

void pcfg_destroy (pcfg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pcfg_t *self = *self_p;
    s_free_object (&pcfg_root_schema, (char *) self);
    ptable_destroy (&self->entity_ids);
    json_decref (self->root);
    free (self);
    *self_p = NULL;
}

int pcfg_entity_index (const pcfg_t *self, const char *id)
{
    const pcfg_entity_t *e = self->entity_ids ? ptable_lookup (self->entity_ids, id) : NULL;
    return e ? (int) (e - pcfg_entity (self, 0)) : -1;
}

//  --- documentation from the table -------------------------------------------

static void s_indent (FILE *out, int depth)
{
    for (int i = 0; i < depth; i++)
        fputs ("  ", out);
}

static void s_sample_object (FILE *out, const pcfg_schema_t *schema, int depth);

static void s_sample_value (FILE *out, const pcfg_field_t *f, int depth)
{
    if (f->type == PCFG_OBJ) {
        //  An object with a default of its own shows that default (the
        //  sub-schema's defaults apply only to keys left out of a given object).
        if (f->def && strcmp (f->def, "{}") != 0) {
            json_t *def = json_loads (f->def, 0, NULL);
            char *text = def ? json_dumps (def, JSON_COMPACT) : NULL;
            fputs (text ? text : f->def, out);
            free (text);
            json_decref (def);
        }
        else
            s_sample_object (out, f->sub, depth);
        return;
    }
    if (f->type == PCFG_ARR) {
        //  Show the default list when it has items, else one example element.
        json_t *def = json_loads (f->def, JSON_DECODE_ANY, NULL);
        if (def && json_array_size (def) > 0) {
            char *text = json_dumps (def, JSON_COMPACT | JSON_ENCODE_ANY);
            fputs (text, out);
            free (text);
        }
        else {
            fputs ("[\n", out);
            s_indent (out, depth + 1);
            s_sample_object (out, f->sub, depth + 1);
            fputs ("\n", out);
            s_indent (out, depth);
            fputs ("]", out);
        }
        json_decref (def);
        return;
    }
    //  Inside an example element, an example says more than an empty default.
    fputs (f->example ? f->example : f->def ? f->def : "null", out);
}

static void s_sample_object (FILE *out, const pcfg_schema_t *schema, int depth)
{
    fputs ("{\n", out);
    bool first = true;
    for (size_t i = 0; i < schema->count; i++) {
        const pcfg_field_t *f = &schema->fields[i];
        if (f->type == PCFG_IGNORE)
            continue;
        if (!first)
            fputs (",\n", out);
        first = false;
        s_indent (out, depth + 1);
        fprintf (out, "// %s", f->doc);
        if (f->env)
            fprintf (out, " (environment: %s)", f->env);
        if (f->flags & PCFG_REQUIRED)
            fputs (" Required.", out);
        fputs ("\n", out);
        s_indent (out, depth + 1);
        fprintf (out, "\"%s\": ", f->key);
        s_sample_value (out, f, depth + 1);
    }
    fputs ("\n", out);
    s_indent (out, depth);
    fputs ("}", out);
}

void pcfg_write_sample (FILE *out)
{
    fputs ("// Parley configuration: every setting at its default, with what it does.\n"
           "// Generated by `parleyctl config sample`; comments are allowed in Parley configs.\n",
           out);
    s_sample_object (out, &pcfg_root_schema, 0);
    fputs ("\n", out);
}

static const char *s_type_name (const pcfg_field_t *f)
{
    switch (f->type) {
    case PCFG_INT: return "integer";
    case PCFG_NUM: return "number";
    case PCFG_BOOL: return "boolean";
    case PCFG_STR: return f->choices ? f->choices : "string";
    case PCFG_STRS: return "array of strings";
    case PCFG_OBJ: return "object";
    case PCFG_ARR: return "array of objects";
    case PCFG_JSON: return "JSON";
    case PCFG_IGNORE: return "ignored";
    }
    return "?";
}

static void s_reference_table (FILE *out, const pcfg_schema_t *schema, const char *path,
                               bool defaults_above)
{
    //  A schema used in several places (the three delays) is described once.
    static const pcfg_schema_t *printed[64];
    static size_t printed_count;
    for (size_t i = 0; i < printed_count; i++)
        if (printed[i] == schema)
            return;
    if (printed_count < 64)
        printed[printed_count++] = schema;
    fprintf (out, "\n#### `%s`\n\n| key | type | default | description |\n|---|---|---|---|\n",
             *path ? path : "(top level)");
    for (size_t i = 0; i < schema->count; i++) {
        const pcfg_field_t *f = &schema->fields[i];
        char def[128];
        bool object_default = f->type == PCFG_OBJ && f->def && strcmp (f->def, "{}") != 0;
        if (defaults_above)
            snprintf (def, sizeof def, "see above");
        else if (object_default && strlen (f->def) <= 60)
            snprintf (def, sizeof def, "`%s`", f->def);
        else if (f->type == PCFG_OBJ || (f->type == PCFG_ARR && !strcmp (f->def, "[]")))
            snprintf (def, sizeof def, "see below");
        else if (strlen (f->def ? f->def : "") > 60)
            snprintf (def, sizeof def, "see below");
        else
            snprintf (def, sizeof def, "`%s`",
                      f->def ? f->def : (f->flags & PCFG_REQUIRED) ? "required" : "-");
        fprintf (out, "| `%s` | %s | %s | %s%s%s%s |\n", f->key, s_type_name (f), def, f->doc,
                 f->env ? " Environment: `" : "", f->env ? f->env : "", f->env ? "`." : "");
    }
    for (size_t i = 0; i < schema->count; i++) {
        const pcfg_field_t *f = &schema->fields[i];
        if (f->type == PCFG_OBJ || f->type == PCFG_ARR) {
            //  Siblings that share this schema (urgent, normal, low) get one table.
            char sub[PATH_MAX_LEN];
            int n = snprintf (sub, sizeof sub, "%s%s%s%s", path, *path ? "." : "", f->key,
                              f->type == PCFG_ARR ? "[]" : "");
            for (size_t k = i + 1; k < schema->count && n > 0 && (size_t) n < sizeof sub; k++)
                if (schema->fields[k].sub == f->sub)
                    n += snprintf (sub + n, sizeof sub - (size_t) n, "`, `.%s", schema->fields[k].key);
            if (f->type == PCFG_ARR && strcmp (f->def, "[]") != 0)
                fprintf (out, "\nDefault of `%s`: `%s`\n", sub, f->def);
            bool object_default = f->type == PCFG_OBJ && f->def && strcmp (f->def, "{}") != 0;
            s_reference_table (out, f->sub, sub, object_default);
        }
    }
}

size_t pcfg_notes (const pcfg_t *self, const char *role, pcfg_note_fn *fn, void *arg)
{
    size_t n = 0;
    char text[400];
    bool all = !role;
    if ((all || !strcmp (role, "worker")) && self->llm_servers.count > 0
        && strcmp (self->worker_backend, "template") == 0) {
        snprintf (text, sizeof text,
                  "lmStudioServers lists %zu LLM server(s), but worker.backend is \"template\": workers"
                  " write template replies, not LLM ones (set worker.backend to \"openai\")",
                  self->llm_servers.count);
        fn (arg, text);
        n++;
    }
    const pcfg_source_t *src = self->sources.items;
    if ((all || !strcmp (role, "poller")) && self->sources.count == 1 && !strcmp (src[0].type, "demo")
        && !strcmp (src[0].name, "demo")) {
        fn (arg, "poller.sources is not set: the built-in demo chat is read, not a real one (set"
                 " poller.sources)");
        n++;
    }
    const pcfg_destination_t *dst = self->destinations.items;
    if ((all || !strcmp (role, "sink")) && self->destinations.count == 1
        && !strcmp (dst[0].type, "stdout") && !strcmp (dst[0].name, "console")) {
        fn (arg, "sink.destinations is not set: replies are printed on standard output, not posted"
                 " anywhere (set sink.destinations)");
        n++;
    }
    return n;
}

void pcfg_write_reference (FILE *out)
{
    const pcfg_schema_t *root = &pcfg_root_schema;
    for (size_t i = 0; i < root->count; i++) {
        const pcfg_field_t *f = &root->fields[i];
        if (f->type == PCFG_OBJ || f->type == PCFG_ARR) {
            char sub[PATH_MAX_LEN];
            snprintf (sub, sizeof sub, "%s%s", f->key, f->type == PCFG_ARR ? "[]" : "");
            fprintf (out, "\n### `%s`\n\n%s\n", sub, f->doc);
            s_reference_table (out, f->sub, sub, false);
        }
    }
    fputs ("\n### Top-level keys\n", out);
    fputs ("\n| key | type | default | description |\n|---|---|---|---|\n", out);
    for (size_t i = 0; i < root->count; i++) {
        const pcfg_field_t *f = &root->fields[i];
        if (f->type != PCFG_OBJ && f->type != PCFG_ARR)
            fprintf (out, "| `%s` | %s | `%s` | %s |\n", f->key, s_type_name (f),
                     f->def ? f->def : "-", f->doc);
    }
}
