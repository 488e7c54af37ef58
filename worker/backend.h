/*  backend - what writes the replies.

    A backend takes jobs (backend->start) and reports each one exactly once
    through the done callback, from its io.process. It may wait on file
    descriptors (HTTP sockets) and timers: it is a plugin of the daemon loop
    (common/prt.h), and the worker registers &backend->io with prt_add_io.
    Backends: template (built in, no LLM) and openai (any OpenAI-compatible
    server over libcurl).
*/
#ifndef BACKEND_H_INCLUDED
#define BACKEND_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "common/pconfig.h"
#include "common/prt.h"
#include "proto/proto.h"

typedef struct wjob_s {
    uint64_t id;
    uint64_t token;
    uint64_t attempt;
    char *msg_key;
    char *chat;
    int entity;                 //  index into the configuration's entities
    uint8_t priority;
    int64_t created_ms;
    int64_t expires_ms;         //  0 = never
    proto_bin_t payload;        //  owned copy of the MESSAGE record
    proto_message_t message;    //  decoded payload
    void *zone;                 //  owns `message`
    int64_t started_at;
    void *backend_data;         //  the backend's own per-job state
    //  In the worker's list of jobs with the backend. After done, the
    //  worker keeps the job (off the list) until the sink takes its result.
    struct wjob_s *next;
    struct wjob_s *prev;
} wjob_t;

typedef struct backend_s backend_t;

//  How a job ended: status is a proto_release_status_t. For DONE, `text`
//  is the reply; otherwise it is the reason. `retry_after_ms` advises the
//  broker for RETRY.
typedef void (backend_done_fn) (void *ctx, wjob_t *job, int status, const char *text,
                                uint64_t tokens, int64_t retry_after_ms);

struct backend_s {
    //  The loop's view of the backend: its descriptors (pollitems), its
    //  progress (process: calls done for finished jobs) and its deadlines
    //  (wakeup). Each function gets &backend->io; backend_of finds the backend.
    prt_io_t io;
    const pcfg_t *config;
    backend_done_fn *done;
    void *ctx;
    void *state;
    //  Jobs the backend can work on at once (the LLM servers' slots); 0 =
    //  no limit. The worker holds no more than this, whatever its concurrency.
    int64_t max_jobs;
    //  Begin a job. Returns 0, or -1 if it cannot (done is not called).
    int (*start) (backend_t *self, wjob_t *job, int64_t now);
    //  Abandon a job (shutdown, or the broker says it is no longer this
    //  worker's); done is not called.
    void (*cancel) (backend_t *self, wjob_t *job);
    //  Models hot on this backend's servers; returns how many were written.
    size_t (*models) (backend_t *self, const char **out, size_t max);
    void (*destroy) (backend_t *self);
    //  Optional. The worker stops taking work: jobs not started yet are
    //  handed back at once (done with RETURN).
    void (*drain) (backend_t *self);
    //  Optional. The backend's own counters and gauges for STATS; the names
    //  are static strings. Returns how many were written.
    size_t (*stats) (backend_t *self, proto_num_t *out, size_t max);
    //  Optional. Logs what the backend talks to, after the startup banner.
    void (*banner) (backend_t *self);
};

//  The backend whose `io` this is.
static inline backend_t *backend_of (prt_io_t *io)
{
    return (backend_t *) ((char *) io - offsetof (backend_t, io));
}

backend_t *backend_new (const pcfg_t *config, backend_done_fn *done, void *ctx);
void backend_destroy (backend_t **self_p);

int backend_template_init (backend_t *self);
int backend_openai_init (backend_t *self);

//  The template backend's reply for a job (also used by tests): one of the
//  entity's templates, chosen by the message key, with placeholders filled.
//  Caller owns the result.
char *backend_template_reply (const pcfg_entity_t *entity, const proto_message_t *message,
                              const char *msg_key);

#endif
