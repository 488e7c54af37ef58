/*  spec - the poller's job checks. See spec.h. */
#include "poller/spec.h"
#include "net/ptext.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  NULL if `s` is a string of at most `max` bytes of valid UTF-8.
static const char *s_string (const char *name, const char *s, size_t max, char *why, size_t whylen)
{
    size_t n = s ? strlen (s) : 0;
    if (n > max)
        snprintf (why, whylen, "%s is %zu bytes, more than %zu", name, n, max);
    else if (!ptext_utf8_valid (s ? s : "", n))
        snprintf (why, whylen, "%s is not valid UTF-8", name);
    else
        return NULL;
    return why;
}

const char *spec_check (const proto_job_spec_t *spec, char *why, size_t whylen)
{
    const char *problem;
    if (!spec->msg_key || !*spec->msg_key)
        snprintf (why, whylen, "msg_key is empty");
    else if (!spec->entity || !*spec->entity)
        snprintf (why, whylen, "entity is empty");
    else if ((problem = s_string ("msg_key", spec->msg_key, PROTO_MAX_KEY, why, whylen))
             || (problem = s_string ("entity", spec->entity, PROTO_MAX_KEY, why, whylen))
             || (problem = s_string ("chat", spec->chat, PROTO_MAX_KEY, why, whylen))
             || (problem = s_string ("chat_kind", spec->chat_kind, SPEC_MAX_KIND, why, whylen)))
        return problem;
    else if (spec->priority > SPEC_MAX_PRIORITY)
        snprintf (why, whylen, "priority %llu is above %d", (unsigned long long) spec->priority,
                  SPEC_MAX_PRIORITY);
    else if (spec->payload.size > PROTO_MAX_STR)
        snprintf (why, whylen, "payload is %u bytes, more than %u", spec->payload.size,
                  (unsigned) PROTO_MAX_STR);
    else
        return NULL;
    return why;
}

const char *spec_message_check (const proto_message_t *m, char *why, size_t whylen)
{
    const char *problem;
    if ((problem = s_string ("source", m->source, PROTO_MAX_KEY, why, whylen))
        || (problem = s_string ("chat id", m->chat_ref, PROTO_MAX_KEY, why, whylen))
        || (problem = s_string ("message id", m->msg_ref, PROTO_MAX_KEY, why, whylen))
        || (problem = s_string ("author", m->author, PROTO_MAX_KEY, why, whylen))
        || (problem = s_string ("author id", m->author_id, PROTO_MAX_KEY, why, whylen))
        || (problem = s_string ("text", m->text, PROTO_MAX_STR, why, whylen)))
        return problem;
    return NULL;
}

static size_t s_len (const char *s)
{
    return s ? strlen (s) : 0;
}

size_t spec_wire_size (const proto_job_spec_t *spec)
{
    //  Each string and the payload carry at most 5 bytes of msgpack header;
    //  the array and the two integers at most 19.
    return s_len (spec->msg_key) + s_len (spec->entity) + s_len (spec->chat)
           + s_len (spec->chat_kind) + spec->payload.size + 5 * 5 + 19;
}

void spec_free (proto_job_spec_t *spec)
{
    free ((char *) spec->msg_key);
    free ((char *) spec->entity);
    free ((char *) spec->chat);
    free ((char *) spec->chat_kind);
    free ((void *) spec->payload.data);
    memset (spec, 0, sizeof *spec);
}
