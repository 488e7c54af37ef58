/*  pdaemon - command line, configuration and logging set-up. See pdaemon.h. */
#include "common/pdaemon.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

//  Walks "a.b[2].c" (or "a.b.2.c") in `root`, creating objects on the way,
//  and sets the last key to `value` (reference stolen).
static int s_apply_set (json_t *root, const char *path, json_t *value, char *err, size_t errlen)
{
    char buf[512];
    snprintf (buf, sizeof buf, "%s", path);
    for (char *p = buf; *p; p++)
        if (*p == '[' || *p == ']')
            *p = '.';
    json_t *node = root;
    char *save = NULL;
    char *tok = strtok_r (buf, ".", &save);
    while (tok) {
        char *next = strtok_r (NULL, ".", &save);
        bool is_index = strspn (tok, "0123456789") == strlen (tok);
        if (json_is_array (node) && is_index) {
            size_t i = strtoul (tok, NULL, 10);
            if (i > json_array_size (node)) {
                snprintf (err, errlen, "--set %s: index %zu past the end of the array", path, i);
                json_decref (value);
                return -1;
            }
            if (!next) {
                if (i == json_array_size (node))
                    json_array_append_new (node, value);
                else
                    json_array_set_new (node, i, value);
                return 0;
            }
            if (i == json_array_size (node))
                json_array_append_new (node, json_object ());
            node = json_array_get (node, i);
        }
        else if (json_is_object (node)) {
            //  jansson refuses a key that is not UTF-8, and then frees the value.
            if (!next) {
                if (json_object_set_new (node, tok, value) == 0)
                    return 0;
                snprintf (err, errlen, "--set %s: \"%s\" is not a valid key", path, tok);
                return -1;
            }
            json_t *child = json_object_get (node, tok);
            if (!child) {
                child = strspn (next, "0123456789") == strlen (next) ? json_array () : json_object ();
                if (json_object_set_new (node, tok, child)) {
                    snprintf (err, errlen, "--set %s: \"%s\" is not a valid key", path, tok);
                    json_decref (value);
                    return -1;
                }
            }
            node = child;
        }
        else {
            snprintf (err, errlen, "--set %s: \"%s\" is not inside an object or array", path, tok);
            json_decref (value);
            return -1;
        }
        tok = next;
    }
    json_decref (value);
    snprintf (err, errlen, "--set %s: empty path", path);
    return -1;
}

int pdaemon_apply_sets (json_t *root, char **sets, size_t nsets, char *err, size_t errlen)
{
    for (size_t i = 0; i < nsets; i++) {
        char *eq = strchr (sets[i], '=');
        if (!eq) {
            snprintf (err, errlen, "--set %s: expected PATH=VALUE", sets[i]);
            return -1;
        }
        *eq = 0;
        json_t *value = json_loads (eq + 1, JSON_DECODE_ANY, NULL);
        if (!value)
            value = json_string (eq + 1);   //  a plain word is a string
        if (!value) {
            *eq = '=';
            snprintf (err, errlen, "--set %s: the value is neither JSON nor UTF-8 text", sets[i]);
            return -1;
        }
        int rc = s_apply_set (root, sets[i], value, err, errlen);
        *eq = '=';
        if (rc)
            return -1;
    }
    return 0;
}

pcfg_t *pdaemon_load_config (const char *path, char **sets, size_t nsets, bool strict, char *err,
                             size_t errlen)
{
    json_t *root = pcfg_parse_file (path, err, errlen);
    if (!root)
        return NULL;
    if (pdaemon_apply_sets (root, sets, nsets, err, errlen)) {
        json_decref (root);
        return NULL;
    }
    pcfg_t *config = pcfg_from_json (root, path ? path : "embedded default", strict, err, errlen);
    json_decref (root);
    return config;
}

static void s_usage (const pdaemon_info_t *info, FILE *out)
{
    fprintf (out,
             "Usage: %s [options]\n"
             "%s\n\n"
             "Options:\n"
             "  -c, --config FILE      configuration file (default: $PARLEY_CONFIG, else the\n"
             "                         embedded demo)\n"
             "  -s, --set PATH=VALUE   override one setting, e.g. --set worker.concurrency=8\n"
             "      --strict-config    unknown configuration keys are errors\n"
             "  -v, --verbose          more logging (twice for trace)\n"
             "  -q, --quiet            only warnings and errors\n"
             "      --ready-file FILE  once listening, write the endpoints there as JSON\n"
             "  -h, --help             show this help\n"
             "  -V, --version          show the version\n",
             info->name, info->summary);
    if (info->extra_help)
        fprintf (out, "\n%s\n", info->extra_help);
    fprintf (out, "\nEnvironment variables override endpoints and ids; see README.md.\n");
}

static void s_log_note (void *arg, const char *note)
{
    (void) arg;
    plog_warn ("%s", note);
}
//  What pdaemon_run_actor runs around the actor (one daemon per process).
static const pdaemon_info_t *s_info;
static const pcfg_t *s_config;

void pdaemon_start (pdaemon_t *self, const pdaemon_info_t *info, int argc, char **argv)
{
    palloc_install ();
    //  A file size limit (ulimit -f, or a quota) must read as a failed write,
    //  which every store and destination handles (a jsonl output is cut back
    //  to its last whole line and the post retried; a journal's commit fails
    //  and the daemon stops before acknowledging anything), not kill the
    //  process with SIGXFSZ. A named pipe whose reader left is an EPIPE for
    //  its destination, not a SIGPIPE for the daemon.
    signal (SIGXFSZ, SIG_IGN);
    signal (SIGPIPE, SIG_IGN);
    memset (self, 0, sizeof *self);
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"set", required_argument, NULL, 's'},
        {"strict-config", no_argument, NULL, 'S'},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"ready-file", required_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    char **sets = pcalloc ((size_t) argc + 1, sizeof (char *));
    size_t nsets = 0;
    bool strict = false;
    int opt;
    while ((opt = getopt_long (argc, argv, "c:s:vqhV", options, NULL)) != -1) {
        switch (opt) {
        case 'c': self->config_path = pstrdup (optarg); break;
        case 's': sets[nsets++] = optarg; break;
        case 'S': strict = true; break;
        case 'v': self->verbosity++; break;
        case 'q': self->verbosity--; break;
        case 'R': self->ready_file = pstrdup (optarg); break;
        case 'h':
            s_usage (info, stdout);
            exit (0);
        case 'V':
            printf ("%s %s\n", info->name, PARLEY_VERSION);
            exit (0);
        default:
            s_usage (info, stderr);
            exit (2);
        }
    }
    if (optind < argc) {
        fprintf (stderr, "%s: unexpected argument '%s' (see --help)\n", info->name, argv[optind]);
        exit (2);
    }
    //  In containers the configuration file is easier to give by environment.
    if (!self->config_path && getenv ("PARLEY_CONFIG") && *getenv ("PARLEY_CONFIG"))
        self->config_path = pstrdup (getenv ("PARLEY_CONFIG"));
    plog_init (info->role, PLOG_INFO);
    char err[1024];
    self->config = pdaemon_load_config (self->config_path, sets, nsets, strict, err, sizeof err);
    free (sets);
    if (!self->config) {
        fprintf (stderr, "%s: configuration error: %s\n", info->name, err);
        exit (2);
    }
    int level = plog_level_parse (self->config->log_level);
    plog_init (info->role, (level < 0 ? PLOG_INFO : level) + self->verbosity);
    //  A configuration file that quietly runs something else than meant: say so
    //  (the embedded demo is meant to).
    if (self->config_path)
        pcfg_notes (self->config, info->role, s_log_note, NULL);
    s_info = info;
    s_config = self->config;
}

void pdaemon_finish (pdaemon_t *self)
{
    s_info = NULL;
    s_config = NULL;
    if (self->ready_file)
        unlink (self->ready_file);
    pcfg_destroy (&self->config);
    free (self->config_path);
    free (self->ready_file);
    self->config_path = self->ready_file = NULL;
}

void pdaemon_write_ready (const char *path, json_t *json)
{
    if (path) {
        char tmp[4096];
        snprintf (tmp, sizeof tmp, "%s.tmp", path);
        json_object_set_new (json, "pid", json_integer (getpid ()));
        if (json_dump_file (json, tmp, JSON_COMPACT) != 0 || rename (tmp, path) != 0)
            plog_error ("cannot write ready file %s: %s", path, strerror (errno));
    }
    json_decref (json);
}

int pdaemon_run_actor (zactor_fn *actor, void *args)
{
    if (s_info && s_info->before && s_info->before (s_config)) {
        plog_error ("not starting (see above)");
        return 1;
    }
    //  The actor signals 0 once it is serving, or -1 if it could not start.
    zactor_t *server = zactor_new (actor, args);
    if (!server) {
        if (s_info && s_info->after)
            s_info->after ();
        return 1;
    }
    int status = 0;
    zpoller_t *poller = zpoller_new (server, NULL);
    while (!zsys_interrupted) {
        void *which = zpoller_wait (poller, 500);
        if (which == server) {
            //  The actor only speaks when it stops on its own: an error.
            char *why = zstr_recv (server);
            if (why)
                plog_error ("stopped: %s", why);
            zstr_free (&why);
            status = 1;
            break;
        }
    }
    zpoller_destroy (&poller);
    zactor_destroy (&server);
    if (s_info && s_info->after)
        s_info->after ();
    return status;
}
