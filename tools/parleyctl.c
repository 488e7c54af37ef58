/*  parleyctl - the operator's tool.

    parleyctl [options] COMMAND [ARGS]

    Live:       stats | top [--once]
    Broker:     workers | entities | broker-stats
                pause ENTITY|all | resume ENTITY|all
                dlq list [LIMIT] | dlq retry ID|all [force] | dlq purge ID|all
    Reference:  config sample | config reference | config check FILE | config show
                proto reference
    Keys:       keygen NAME [--dir DIR] [--force]

    It reads the same configuration as the daemons (to find the broker and
    the stats feed); endpoints can be overridden like theirs, with --set or
    the PARLEY_* environment variables.
*/
#include "common/pdaemon.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "proto/proto.h"
#include "proto/proto_keys.h"
#include "proto/proto_sock.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    pcfg_t *config;
    int timeout_ms;
    bool json;
    bool once;
    proto_net_t net;
} ctl_t;

static void s_usage (FILE *out)
{
    fprintf (out,
             "Usage: parleyctl [options] COMMAND [ARGS]\n"
             "\n"
             "Live:\n"
             "  stats                      one snapshot of the whole pipeline's counters (JSON)\n"
             "  top [--once]               live view of queue depth, throughput and latency\n"
             "Broker:\n"
             "  workers                    connected workers, their credits and hot models\n"
             "  entities                   per entity: queued, in flight, paused\n"
             "  broker-stats               the broker's counters (JSON)\n"
             "  pause ENTITY|all           stop dispatching an entity's jobs (or all)\n"
             "  resume ENTITY|all\n"
             "  dlq list [LIMIT]           dead letters with reason and attempt history\n"
             "  dlq retry ID|all [force]   queue dead letters again (force: also \"maybe posted\")\n"
             "  dlq purge ID|all           delete dead letters\n"
             "Reference:\n"
             "  config sample              every setting at its default, with what it does\n"
             "  config reference           the settings as Markdown tables\n"
             "  config check FILE          validate a configuration file\n"
             "  config show                the configuration in effect, as JSON\n"
             "  proto reference            the protocol's message tables as Markdown\n"
             "Keys:\n"
             "  keygen NAME [--dir DIR] [--force]\n"
             "                             a CurveZMQ key pair: DIR/NAME.key (public, for the\n"
             "                             allow-lists and peers) and DIR/NAME.key_secret\n"
             "                             (this machine only); DIR defaults to \".\"\n"
             "\n"
             "Options:\n"
             "  -c, --config FILE          configuration (default: the embedded demo)\n"
             "  -s, --set PATH=VALUE       override a setting, e.g. --set network.brokerFrontend=tcp://h:7531\n"
             "  -t, --timeout MS           how long to wait for an answer (default 5000)\n"
             "  -j, --json                 print raw JSON\n"
             "  -h, --help, -V, --version\n");
}

//  --- talking to the broker ----------------------------------------------------------

static json_t *s_ctl (ctl_t *self, const char *command, char **args, size_t nargs, int *status)
{
    zsock_t *sock = proto_sock_new (&self->net, ZMQ_DEALER, self->config->broker_frontend, false,
                                    NULL, PROTO_PORT_FRONTEND);
    if (!sock)
        return NULL;
    proto_ctl_t ctl = {(uint64_t) getpid (), command, (const char **) args, nargs};
    zmq_msg_t frame;
    proto_encode (PROTO_CTL, &ctl, &frame);
    zmq_msg_send (&frame, zsock_resolve (sock), 0);
    json_t *answer = NULL;
    int64_t deadline = zclock_mono () + self->timeout_ms;
    zpoller_t *poller = zpoller_new (sock, NULL);
    while (!answer && zclock_mono () < deadline) {
        if (!zpoller_wait (poller, (int) (deadline - zclock_mono ())))
            break;
        zmq_msg_t reply;
        zmq_msg_init (&reply);
        if (zmq_msg_recv (&reply, zsock_resolve (sock), 0) == -1)
            break;
        proto_msg_t msg;
        char why[256];
        if (proto_decode (zmq_msg_data (&reply), zmq_msg_size (&reply), &msg, why, sizeof why) == 0) {
            if (msg.type == PROTO_CTL_REPLY && msg.body.ctl_reply.req_id == ctl.req_id) {
                *status = (int) msg.body.ctl_reply.status;
                answer = json_loads (msg.body.ctl_reply.body, 0, NULL);
            }
            proto_msg_release (&msg);
        }
        zmq_msg_close (&reply);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&sock);
    if (!answer)
        fprintf (stderr, "parleyctl: the broker at %s did not answer within %d ms%s\n",
                 self->config->broker_frontend, self->timeout_ms,
                 self->net.secure ? " (security is on: is this key in the broker's"
                                    " allowDir/operators/, and brokerKey the broker's key?)" : "");
    return answer;
}

static void s_print_json (json_t *json)
{
    char *text = json_dumps (json, JSON_INDENT (2) | JSON_ENCODE_ANY);
    puts (text);
    free (text);
}

static int s_print_table (json_t *rows, const char **columns)
{
    for (const char **c = columns; *c; c++)
        printf ("%-14s", *c);
    printf ("\n");
    size_t i;
    json_t *row;
    json_array_foreach (rows, i, row) {
        for (const char **c = columns; *c; c++) {
            json_t *v = json_object_get (row, *c);
            char *text = json_is_string (v) ? pstrdup (json_string_value (v))
                                            : json_dumps (v, JSON_COMPACT | JSON_ENCODE_ANY);
            printf ("%-14s", text ? text : "-");
            free (text);
        }
        printf ("\n");
    }
    return 0;
}

static int s_broker_command (ctl_t *self, const char *command, char **args, size_t nargs)
{
    int status = 0;
    json_t *answer = s_ctl (self, command, args, nargs, &status);
    if (!answer)
        return 1;
    if (status) {
        fprintf (stderr, "parleyctl: %s\n", json_string_value (json_object_get (answer, "error")));
        json_decref (answer);
        return 1;
    }
    if (self->json)
        s_print_json (answer);
    else if (streq (command, "workers")) {
        static const char *cols[] = {"id", "host", "pid", "capacity", "credit", "jobs", "dispatched", "draining", NULL};
        s_print_table (answer, cols);
    }
    else if (streq (command, "entities")) {
        static const char *cols[] = {"id", "queued", "in_flight", "paused", NULL};
        s_print_table (answer, cols);
    }
    else if (streq (command, "dlq-list")) {
        printf ("%" JSON_INTEGER_FORMAT " dead letter(s)\n", json_integer_value (json_object_get (answer, "total")));
        size_t i;
        json_t *d;
        json_array_foreach (json_object_get (answer, "items"), i, d)
            printf ("#%" JSON_INTEGER_FORMAT "  %s  %s  attempts %" JSON_INTEGER_FORMAT "\n    reason: %s\n",
                    json_integer_value (json_object_get (d, "id")),
                    json_string_value (json_object_get (d, "entity")),
                    json_string_value (json_object_get (d, "msg_key")),
                    json_integer_value (json_object_get (d, "attempts")),
                    json_string_value (json_object_get (d, "reason")));
    }
    else
        s_print_json (answer);
    json_decref (answer);
    return 0;
}

//  --- the stats feed ---------------------------------------------------------------------

//  Waits for one STATS message; returns it as JSON {ts_ms, components: [...]}.
static json_t *s_stats_json (const proto_stats_t *stats)
{
    json_t *list = json_array ();
    for (size_t i = 0; i < stats->count; i++) {
        const proto_component_t *c = &stats->components[i];
        json_t *values = json_object ();
        for (size_t j = 0; j < c->count; j++) {
            double v = c->values[j].value;
            json_object_set_new (values, c->values[j].key,
                                 v == (double) (json_int_t) v ? json_integer ((json_int_t) v) : json_real (v));
        }
        json_array_append_new (list, json_pack ("{s:s, s:s, s:o}", "role", c->role, "id", c->id,
                                                "values", values));
    }
    return json_pack ("{s:I, s:o}", "ts_ms", (json_int_t) stats->ts_ms, "components", list);
}

static double s_value (json_t *component, const char *name)
{
    return json_number_value (json_object_get (json_object_get (component, "values"), name));
}

static void s_render_top (json_t *snap, bool tty)
{
    if (tty)
        printf ("\033[H\033[2J");
    time_t t = (time_t) (json_integer_value (json_object_get (snap, "ts_ms")) / 1000);
    char when[32];
    strftime (when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime (&t));
    json_t *comps = json_object_get (snap, "components");
    json_t *sink = NULL, *broker = NULL;
    size_t i;
    json_t *c;
    json_array_foreach (comps, i, c) {
        const char *role = json_string_value (json_object_get (c, "role"));
        if (streq (role, "sink"))
            sink = c;
        else if (streq (role, "broker"))
            broker = c;
    }
    printf ("Parley  %s\n\n", when);
    if (sink)
        printf ("  posted %-8.0f %6.1f/s    latency p50 %.0f ms  p95 %.0f ms  p99 %.0f ms\n",
                s_value (sink, "posted"), s_value (sink, "posted_per_s"),
                s_value (sink, "latency_p50_ms"), s_value (sink, "latency_p95_ms"),
                s_value (sink, "latency_p99_ms"));
    if (broker)
        printf ("  queue  %-8.0f delayed %-6.0f in flight %-5.0f workers %-3.0f credit %-5.0f\n"
                "  expired %-7.0f busy %-9.0f retried %-6.0f dead letters %.0f%s\n",
                s_value (broker, "queued"), s_value (broker, "delayed"), s_value (broker, "in_flight"),
                s_value (broker, "workers"), s_value (broker, "credit"), s_value (broker, "expired"),
                s_value (broker, "busy"), s_value (broker, "retried"), s_value (broker, "dlq"),
                s_value (broker, "paused") ? "   (PAUSED)" : "");
    else
        printf ("  broker: no answer yet\n");
    printf ("\n  %-8s %-28s %s\n", "role", "id", "state");
    json_array_foreach (comps, i, c) {
        const char *role = json_string_value (json_object_get (c, "role"));
        const char *id = json_string_value (json_object_get (c, "id"));
        if (streq (role, "worker"))
            printf ("  %-8s %-28s in flight %.0f/%.0f  done %.0f  failed %.0f  avg %.0f ms\n", role, id,
                    s_value (c, "in_flight"), s_value (c, "capacity"), s_value (c, "completed"),
                    s_value (c, "failed"), s_value (c, "avg_ms"));
        else if (streq (role, "poller"))
            printf ("  %-8s %-28s messages %.0f  jobs %.0f  unacked %.0f  errors %.0f\n", role, id,
                    s_value (c, "messages"), s_value (c, "jobs"), s_value (c, "unacked"),
                    s_value (c, "source_errors"));
        else if (streq (role, "sink"))
            printf ("  %-8s %-28s waiting %.0f  held %.0f  outbox %.0f  stale %.0f  failed %.0f"
                    "  in doubt %.0f  retries %.0f\n",
                    role, id, s_value (c, "waiting"), s_value (c, "held"), s_value (c, "outbox"),
                    s_value (c, "stale"), s_value (c, "failed"), s_value (c, "in_doubt"),
                    s_value (c, "post_retries"));
        else if (streq (role, "broker"))
            printf ("  %-8s %-28s accepted %.0f  duplicates %.0f  rejected %.0f\n", role, id,
                    s_value (c, "accepted"), s_value (c, "duplicates"), s_value (c, "rejected"));
    }
    printf ("\n");
    fflush (stdout);
}

static int s_watch (ctl_t *self, bool top)
{
    zsock_t *sub = proto_sock_new (&self->net, ZMQ_SUB, self->config->stats_publish, false, NULL,
                                   PROTO_PORT_STATS);
    if (!sub)
        return 1;
    zsock_set_subscribe (sub, "");
    zpoller_t *poller = zpoller_new (sub, NULL);
    bool tty = isatty (STDOUT_FILENO);
    int rc = 1;
    while (!zsys_interrupted) {
        if (!zpoller_wait (poller, self->timeout_ms)) {
            if (zpoller_terminated (poller))
                rc = 0;
            else
                fprintf (stderr, "parleyctl: no stats from %s within %d ms (is the sink running?%s)"
                         "\n", self->config->stats_publish, self->timeout_ms,
                         self->net.secure ? " Security is on: is this key in the sink's allowDir/"
                                            "operators/, and sinkKey the sink's key?" : "");
            break;
        }
        zmq_msg_t frame;
        zmq_msg_init (&frame);
        if (zmq_msg_recv (&frame, zsock_resolve (sub), 0) == -1)
            break;
        proto_msg_t msg;
        char why[256];
        int decoded = proto_decode (zmq_msg_data (&frame), zmq_msg_size (&frame), &msg, why, sizeof why);
        zmq_msg_close (&frame);
        if (decoded != PROTO_OK || msg.type != PROTO_STATS) {
            if (decoded == PROTO_OK)
                proto_msg_release (&msg);
            continue;
        }
        json_t *snap = s_stats_json (&msg.body.stats);
        proto_msg_release (&msg);
        if (top && !self->json)
            s_render_top (snap, tty);
        else
            s_print_json (snap);
        json_decref (snap);
        rc = 0;
        if (!top || self->once)
            break;
    }
    zpoller_destroy (&poller);
    zsock_destroy (&sub);
    return rc;
}

//  --- reference ------------------------------------------------------------------------------

static void s_print_note (void *arg, const char *note)
{
    printf ("%s: warning: %s\n", (const char *) arg, note);
}

static int s_config_command (ctl_t *self, int argc, char **argv, const char *path, char **sets,
                             size_t nsets)
{
    const char *what = argc > 0 ? argv[0] : "";
    if (streq (what, "sample"))
        pcfg_write_sample (stdout);
    else if (streq (what, "reference"))
        pcfg_write_reference (stdout);
    else if (streq (what, "show"))
        s_print_json (self->config->root);
    else if (streq (what, "check")) {
        const char *file = argc > 1 ? argv[1] : path;
        char err[1024];
        pcfg_t *config = pdaemon_load_config (file, sets, nsets, false, err, sizeof err);
        if (!config) {
            fprintf (stderr, "%s\n", err);
            return 1;
        }
        printf ("%s: ok (%zu entities, %zu sources, %zu destinations, %zu LLM servers)\n",
                file ? file : "embedded default", config->entities.count, config->sources.count,
                config->destinations.count, config->llm_servers.count);
        //  Valid, but maybe not what was meant: say so.
        pcfg_notes (config, NULL, s_print_note, (void *) (file ? file : "embedded default"));
        pcfg_destroy (&config);
    }
    else {
        fprintf (stderr, "parleyctl: config needs sample, reference, check or show\n");
        return 2;
    }
    return 0;
}

//  --- keys --------------------------------------------------------------------------------

//  keygen NAME [--dir DIR] [--force]: needs no configuration.
static int s_keygen (int argc, char **argv)
{
    const char *name = NULL, *dir = ".";
    bool force = false;
    for (int i = 0; i < argc; i++) {
        if (streq (argv[i], "--force"))
            force = true;
        else if (streq (argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (strncmp (argv[i], "--dir=", 6) == 0)
            dir = argv[i] + 6;
        else if (argv[i][0] != '-' && !name)
            name = argv[i];
        else {
            fprintf (stderr, "parleyctl: keygen: unexpected \"%s\" (keygen NAME [--dir DIR]"
                     " [--force])\n", argv[i]);
            return 2;
        }
    }
    if (!name) {
        fprintf (stderr, "parleyctl: keygen needs a NAME (keygen NAME [--dir DIR] [--force])\n");
        return 2;
    }
    char public_txt[PROTO_KEY_TXT], public_path[4200], secret_path[4200], why[8600];
    if (proto_keys_generate (dir, name, force, public_txt, public_path, secret_path,
                             sizeof public_path, why, sizeof why)) {
        fprintf (stderr, "parleyctl: keygen: %s\n", why);
        return 1;
    }
    printf ("public key file: %s\n"
            "secret key file: %s (mode 0600: keep it on the machine that runs %s)\n"
            "public key:      %s\n",
            public_path, secret_path, name, public_txt);
    return 0;
}

int main (int argc, char **argv)
{
    palloc_install ();
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'}, {"set", required_argument, NULL, 's'},
        {"timeout", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
        {"once", no_argument, NULL, 'o'},          {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0},
    };
    ctl_t self = {NULL, 5000, false, false, {0}};
    const char *path = NULL;
    char **sets = pcalloc ((size_t) argc + 1, sizeof (char *));
    size_t nsets = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, "+c:s:t:jhV", options, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 's': sets[nsets++] = optarg; break;
        case 't': self.timeout_ms = atoi (optarg); break;
        case 'j': self.json = true; break;
        case 'o': self.once = true; break;
        case 'h':
            s_usage (stdout);
            free (sets);
            return 0;
        case 'V':
            printf ("parleyctl %s\n", PARLEY_VERSION);
            free (sets);
            return 0;
        default:
            s_usage (stderr);
            free (sets);
            return 2;
        }
    }
    if (optind >= argc) {
        s_usage (stderr);
        free (sets);
        return 2;
    }
    plog_init ("parleyctl", PLOG_WARN);
    if (streq (argv[optind], "keygen")) {
        int rc = s_keygen (argc - optind - 1, argv + optind + 1);
        free (sets);
        return rc;
    }
    char err[1024];
    self.config = pdaemon_load_config (path, sets, nsets, false, err, sizeof err);
    if (!self.config) {
        fprintf (stderr, "parleyctl: configuration error: %s\n", err);
        free (sets);
        return 2;
    }
    char *command = argv[optind];
    //  Only commands that talk to the daemons need the keys: `config show`
    //  must work even while the security settings are wrong.
    if (!streq (command, "config") && !streq (command, "proto")
        && proto_net_from_config (&self.net, self.config, "parleyctl")) {
        pcfg_destroy (&self.config);
        free (sets);
        return 1;
    }
    self.net.linger_ms = 0;
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    //  Options after the command (top --once) are allowed too.
    for (int i = 0; i < nargs; i++)
        if (streq (args[i], "--once"))
            self.once = true;
    int rc;
    if (streq (command, "stats"))
        rc = s_watch (&self, false);
    else if (streq (command, "top"))
        rc = s_watch (&self, true);
    else if (streq (command, "workers") || streq (command, "entities"))
        rc = s_broker_command (&self, command, NULL, 0);
    else if (streq (command, "broker-stats"))
        rc = s_broker_command (&self, "stats", NULL, 0);
    else if (streq (command, "pause") || streq (command, "resume")) {
        if (nargs < 1) {
            fprintf (stderr, "parleyctl: %s needs an entity id or \"all\"\n", command);
            rc = 2;
        }
        else
            rc = s_broker_command (&self, command, args, 1);
    }
    else if (streq (command, "dlq")) {
        const char *sub = nargs > 0 ? args[0] : "list";
        char name[32];
        snprintf (name, sizeof name, "dlq-%s", sub);
        if (!streq (sub, "list") && !streq (sub, "retry") && !streq (sub, "purge")) {
            fprintf (stderr, "parleyctl: dlq needs list, retry or purge\n");
            rc = 2;
        }
        else if (!streq (sub, "list") && nargs < 2) {
            fprintf (stderr, "parleyctl: dlq %s needs an id or \"all\"\n", sub);
            rc = 2;
        }
        else
            rc = s_broker_command (&self, name, args + 1, nargs > 2 ? 2 : nargs > 1 ? nargs - 1 : 0);
    }
    else if (streq (command, "config"))
        rc = s_config_command (&self, nargs, args, path, sets, nsets);
    else if (streq (command, "proto") && nargs > 0 && streq (args[0], "reference")) {
        proto_write_reference (stdout);
        rc = 0;
    }
    else {
        fprintf (stderr, "parleyctl: unknown command \"%s\" (see --help)\n", command);
        rc = 2;
    }
    pcfg_destroy (&self.config);
    free (sets);
    return rc;
}
