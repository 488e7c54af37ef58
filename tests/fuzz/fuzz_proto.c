/*  fuzz_proto - every protocol decoder on untrusted bytes.

    The whole input goes to proto_decode (which dispatches on the type byte
    to every message's decoder); the input minus a header's worth of bytes
    goes to proto_message_decode (the MESSAGE record inside job payloads).
    Whatever decodes is walked in full, so every pointer the decoder hands
    out is read; then it is encoded again, which must succeed, decode, and
    give the same bytes when encoded once more (the codec agrees with
    itself on everything it accepts). Seeds: tests/fuzz/proto/, written by
    `test_proto --make-corpus DIR`.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/plog.h"
#include "proto/proto.h"

//  Reads every byte of a string the decoder produced (ASan checks each).
static size_t s_touch (const char *s)
{
    return s ? strlen (s) : 0;
}

static size_t s_touch_bin (proto_bin_t b)
{
    size_t sum = 0;
    for (uint32_t i = 0; i < b.size; i++)
        sum += b.data[i];
    return sum;
}

static size_t s_walk (const proto_msg_t *m)
{
    size_t n = 0;
    switch (m->type) {
    case PROTO_SUBMIT:
        for (size_t i = 0; i < m->body.submit.count; i++) {
            const proto_job_spec_t *j = &m->body.submit.items[i];
            n += s_touch (j->msg_key) + s_touch (j->entity) + s_touch (j->chat)
                 + s_touch (j->chat_kind) + s_touch_bin (j->payload);
        }
        break;
    case PROTO_ACK:
        for (size_t i = 0; i < m->body.ack.rejected_count; i++)
            n += s_touch (m->body.ack.rejected[i].reason);
        break;
    case PROTO_HEARTBEAT:
        n += s_touch (m->body.heartbeat.worker_id) + s_touch (m->body.heartbeat.host);
        for (size_t i = 0; i < m->body.heartbeat.model_count; i++)
            n += s_touch (m->body.heartbeat.models[i]);
        break;
    case PROTO_JOB:
        for (size_t i = 0; i < m->body.job.count; i++) {
            const proto_job_t *j = &m->body.job.items[i];
            n += s_touch (j->msg_key) + s_touch (j->entity) + s_touch (j->chat)
                 + s_touch_bin (j->payload);
        }
        break;
    case PROTO_RELEASE:
        for (size_t i = 0; i < m->body.release.count; i++)
            n += s_touch (m->body.release.items[i].reason);
        break;
    case PROTO_RESULT:
        n += s_touch (m->body.result.worker_id);
        for (size_t i = 0; i < m->body.result.count; i++) {
            const proto_result_item_t *r = &m->body.result.items[i];
            n += s_touch (r->msg_key) + s_touch (r->entity) + s_touch (r->chat) + s_touch (r->text)
                 + s_touch_bin (r->payload);
        }
        break;
    case PROTO_COMMIT:
        for (size_t i = 0; i < m->body.commit.count; i++)
            n += (size_t) m->body.commit.items[i].token;
        break;
    case PROTO_VERDICT:
        for (size_t i = 0; i < m->body.verdict.count; i++)
            n += (size_t) m->body.verdict.items[i].verdict;
        break;
    case PROTO_OUTCOME:
        for (size_t i = 0; i < m->body.outcome.count; i++)
            n += s_touch (m->body.outcome.items[i].reason);
        break;
    case PROTO_STATS:
        for (size_t i = 0; i < m->body.stats.count; i++) {
            const proto_component_t *c = &m->body.stats.components[i];
            n += s_touch (c->role) + s_touch (c->id);
            for (size_t k = 0; k < c->count; k++)
                n += s_touch (c->values[k].key) + (c->values[k].value > 0);
        }
        break;
    case PROTO_CTL:
        n += s_touch (m->body.ctl.command);
        for (size_t i = 0; i < m->body.ctl.arg_count; i++)
            n += s_touch (m->body.ctl.args[i]);
        break;
    case PROTO_CTL_REPLY: n += s_touch (m->body.ctl_reply.body); break;
    default: break;
    }
    return n;
}

static size_t s_walk_message (const proto_message_t *m)
{
    size_t n = s_touch (m->source) + s_touch (m->chat_ref) + s_touch (m->msg_ref)
               + s_touch (m->author) + s_touch (m->author_id) + s_touch (m->text);
    for (size_t i = 0; i < m->context_count; i++)
        n += s_touch (m->context[i].author) + s_touch (m->context[i].text);
    return n;
}

//  encode (decode (frame)) must work, and be a fixed point from then on.
static void s_round_trip (const proto_msg_t *m)
{
    zmq_msg_t once, twice;
    if (proto_encode (m->type, &m->body, &once))
        abort ();   //  the decoder accepted what the encoder refuses
    proto_msg_t again;
    char why[256];
    if (proto_decode (zmq_msg_data (&once), zmq_msg_size (&once), &again, why, sizeof why))
        abort ();   //  our own encoding does not decode
    if (proto_encode (again.type, &again.body, &twice))
        abort ();
    if (zmq_msg_size (&once) != zmq_msg_size (&twice)
        || memcmp (zmq_msg_data (&once), zmq_msg_data (&twice), zmq_msg_size (&once)))
        abort ();   //  a value changed on the way through
    proto_msg_release (&again);
    zmq_msg_close (&once);
    zmq_msg_close (&twice);
}

static void s_message_round_trip (const proto_message_t *m)
{
    uint8_t *once = NULL, *twice = NULL;
    size_t once_size = 0, twice_size = 0;
    if (proto_message_encode (m, &once, &once_size))
        abort ();
    proto_message_t again;
    void *zone = NULL;
    char why[256];
    if (proto_message_decode (once, once_size, &again, &zone, why, sizeof why))
        abort ();
    if (proto_message_encode (&again, &twice, &twice_size))
        abort ();
    if (once_size != twice_size || memcmp (once, twice, once_size))
        abort ();
    proto_zone_free (&zone);
    free (once);
    free (twice);
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    plog_init ("fuzz", PLOG_TRACE);
    return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    //  A copy of exactly `size` bytes, so a read past the end is caught.
    uint8_t *copy = malloc (size ? size : 1);
    if (size)
        memcpy (copy, data, size);
    char why[256];
    proto_msg_t msg;
    if (proto_decode (copy, size, &msg, why, sizeof why) == PROTO_OK) {
        volatile size_t sink = s_walk (&msg);
        (void) sink;
        s_round_trip (&msg);
        proto_msg_release (&msg);
    }
    else if (strnlen (why, sizeof why) == sizeof why)
        abort ();   //  the reason must be a terminated string
    if (size >= PROTO_HEADER_SIZE) {
        proto_message_t message;
        void *zone = NULL;
        if (proto_message_decode (copy + PROTO_HEADER_SIZE, size - PROTO_HEADER_SIZE, &message,
                                  &zone, why, sizeof why)
            == PROTO_OK) {
            volatile size_t sink = s_walk_message (&message);
            (void) sink;
            s_message_round_trip (&message);
        }
        proto_zone_free (&zone);
    }
    free (copy);
    return 0;
}
