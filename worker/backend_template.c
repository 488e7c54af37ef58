/*  backend_template - persona-flavoured replies without an LLM.

    The embedded default and the benchmark backend. Each reply is one of
    the entity's templates, chosen by the message key (so a retried job
    writes the same words), with {author}, {text}, {name} and {topic}
    filled in, after templateLatencyMs plus up to templateJitterMs.
*/
#include "worker/backend.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <czmq.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int64_t due;
    wjob_t *job;
} pending_t;

typedef struct {
    zlistx_t *pending;      //  pending_t by due time
    unsigned short rand[3];
} template_t;

//  What a reply can quote: the text without mentions or trailing
//  punctuation; a long text is cut to its first eight words.
static void s_topic (const char *text, char *out, size_t len)
{
    size_t n = 0, words = 0;
    const char *p = text;
    while (*p && n + 4 < len) {
        while (*p && isspace ((unsigned char) *p))
            p++;
        if (*p == '@') {
            while (*p && !isspace ((unsigned char) *p))
                p++;
            continue;
        }
        if (!*p)
            break;
        if (words == 8) {
            memcpy (out + n, "...", 3);
            n += 3;
            break;
        }
        if (n)
            out[n++] = ' ';
        while (*p && !isspace ((unsigned char) *p) && n + 4 < len)
            out[n++] = *p++;
        words++;
    }
    while (n > 0 && strchr ("?!.,;:", out[n - 1]) && !(n >= 3 && !strncmp (out + n - 3, "...", 3)))
        n--;
    out[n] = 0;
    if (n == 0)
        snprintf (out, len, "that");
}

static void s_append (char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = prealloc (*buf, *cap);
    }
    memcpy (*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
}

char *backend_template_reply (const pcfg_entity_t *entity, const proto_message_t *message,
                              const char *msg_key)
{
    const char *fallback = "{name} here, {author}: \"{topic}\" is worth thinking about.";
    const char *tmpl = fallback;
    if (entity->templates.count) {
        //  A stable choice per message: the same message always gets the same template.
        size_t sum = 0;
        for (const char *p = msg_key; *p; p++)
            sum = sum * 31 + (unsigned char) *p;
        tmpl = entity->templates.items[sum % entity->templates.count];
    }
    char topic[128];
    s_topic (message->text, topic, sizeof topic);
    char *out = NULL;
    size_t len = 0, cap = 0;
    s_append (&out, &len, &cap, "", 0);
    for (const char *p = tmpl; *p;) {
        //  The text up to the next brace as it is, then a placeholder or the brace.
        size_t run = strcspn (p, "{");
        if (run) {
            s_append (&out, &len, &cap, p, run);
            p += run;
            continue;
        }
        const char *value = NULL;
        size_t skip = 0;
        if (!strncmp (p, "{author}", 8))
            value = message->author, skip = 8;
        else if (!strncmp (p, "{text}", 6))
            value = message->text, skip = 6;
        else if (!strncmp (p, "{name}", 6))
            value = entity->name, skip = 6;
        else if (!strncmp (p, "{topic}", 7))
            value = topic, skip = 7;
        if (value) {
            s_append (&out, &len, &cap, value, strlen (value));
            p += skip;
        }
        else
            s_append (&out, &len, &cap, p++, 1);
    }
    return out;
}

static int s_due_compare (const void *a, const void *b)
{
    int64_t x = ((const pending_t *) a)->due, y = ((const pending_t *) b)->due;
    return x < y ? -1 : x > y;
}

static int s_start (backend_t *self, wjob_t *job, int64_t now)
{
    template_t *t = self->state;
    int64_t jitter = self->config->template_jitter_ms;
    pending_t *p = pmalloc (sizeof *p);
    p->due = now + self->config->template_latency_ms
             + (jitter ? (int64_t) (erand48 (t->rand) * (double) (jitter + 1)) : 0);
    p->job = job;
    //  Searching from the tail: with little jitter the new entry belongs there.
    job->backend_data = zlistx_insert (t->pending, p, false);
    return 0;
}

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    (void) io, (void) items, (void) max;
    return 0;
}

static void s_process (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count)
{
    (void) items, (void) count;
    backend_t *self = backend_of (io);
    template_t *t = self->state;
    pending_t *p;
    while ((p = zlistx_first (t->pending)) && p->due <= now) {
        zlistx_detach_cur (t->pending);
        wjob_t *job = p->job;
        free (p);
        job->backend_data = NULL;
        const char *crash_on = self->config->template_crash_on;
        if (*crash_on && strstr (job->message.text, crash_on)) {
            //  Fault injection (worker.templateCrashOn): a job that kills its worker.
            plog_error ("message %s contains \"%s\": crashing as configured", job->msg_key, crash_on);
            abort ();
        }
        const pcfg_entity_t *e = pcfg_entity (self->config, (size_t) job->entity);
        char *reply = backend_template_reply (e, &job->message, job->msg_key);
        self->done (self->ctx, job, PROTO_REL_DONE, reply, 0, 0);
        free (reply);
    }
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    (void) now;
    pending_t *p = zlistx_first (((template_t *) backend_of (io)->state)->pending);
    return p ? p->due : PRT_NEVER;
}

static void s_cancel (backend_t *self, wjob_t *job)
{
    template_t *t = self->state;
    if (job->backend_data) {
        pending_t *p = zlistx_detach (t->pending, job->backend_data);
        free (p);
        job->backend_data = NULL;
    }
}

static size_t s_models (backend_t *self, const char **out, size_t max)
{
    (void) self, (void) out, (void) max;
    return 0;
}

static void s_destroy (backend_t *self)
{
    template_t *t = self->state;
    pending_t *p;
    while ((p = zlistx_detach (t->pending, NULL)))
        free (p);
    zlistx_destroy (&t->pending);
    free (t);
}

int backend_template_init (backend_t *self)
{
    template_t *t = pcalloc (1, sizeof *t);
    t->pending = zlistx_new ();
    zlistx_set_comparator (t->pending, s_due_compare);
    int64_t seed = zclock_time ();
    t->rand[0] = (unsigned short) seed;
    t->rand[1] = (unsigned short) (seed >> 16);
    t->rand[2] = (unsigned short) getpid ();
    self->state = t;
    self->start = s_start;
    self->io.pollitems = s_pollitems;
    self->io.process = s_process;
    self->io.wakeup = s_wakeup;
    self->cancel = s_cancel;
    self->models = s_models;
    self->destroy = s_destroy;
    return 0;
}
