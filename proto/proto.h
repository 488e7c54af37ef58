/*  proto - Parley's wire protocol, in one place.

    Every message is one ZeroMQ frame (after any ROUTER envelope):

        byte 0..1   signature 0xA5 0x50
        byte 2      protocol version (PROTO_VERSION)
        byte 3      message type (proto_type_t)
        byte 4..    msgpack array: the message's fields in table order

    The table in proto_defs.c lists every message and record with its fields,
    types and bounds; encode, decode, validation and PROTOCOL.md follow it.
    Decoding never trusts the bytes: sizes are checked against the bytes
    left before anything is allocated, and a malformed frame yields
    PROTO_MALFORMED with a reason, never an assertion.

    Compatibility: a decoder ignores fields beyond those it knows and fills
    optional trailing fields it does not receive with zero, so fields can be
    added at the end of a message within a version.
*/
#ifndef PROTO_H_INCLUDED
#define PROTO_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <zmq.h>

#define PROTO_SIG0        0xA5
#define PROTO_SIG1        0x50
#define PROTO_VERSION     1
#define PROTO_HEADER_SIZE 4

//  Bounds that hold for every frame, whatever the message.
#define PROTO_MAX_LIST    1000000     //  items in one list
#define PROTO_MAX_STR     (1u << 20)  //  bytes in one string
#define PROTO_MAX_KEY     512         //  bytes in a key, id or name
//  The latest time a job may carry (SUBMIT created_ms): 9999-12-31T23:59:59.999Z.
//  Times are uint64 on the wire and int64 in the daemons, which add delays
//  and ages to them: the broker refuses a job written later than this.
#define PROTO_MAX_TIME_MS 253402300799999ull

//  Senders split their batches (SUBMIT, JOB, RELEASE, RESULT, COMMIT,
//  VERDICT, OUTCOME) into frames of at most this many items, so a frame
//  stays far below network.maxFrameBytes however large a backlog grows.
//  RESULT items carry text and context, so they go at most a quarter of it.
#define PROTO_BATCH       1024

typedef enum {
    PROTO_SUBMIT = 1,       //  poller -> broker: new jobs
    PROTO_ACK = 2,          //  broker -> poller: jobs stored
    PROTO_HEARTBEAT = 3,    //  worker -> broker: alive, capacity, hot models
    PROTO_WELCOME = 4,      //  broker -> worker: registered / broker alive
    PROTO_JOB = 5,          //  broker -> worker: jobs to write
    PROTO_RELEASE = 6,      //  worker -> broker: jobs finished with (credits back)
    PROTO_RESULT = 7,       //  worker -> sink: written replies
    PROTO_COMMIT = 8,       //  sink -> broker: may I post these?
    PROTO_VERDICT = 9,      //  broker -> sink: post / do not post
    PROTO_OUTCOME = 10,     //  sink -> broker: what happened to each post
    PROTO_OUTCOME_ACK = 11, //  broker -> sink: outcomes stored
    PROTO_STATS = 12,       //  any -> sink, and sink -> subscribers: counters
    PROTO_CTL = 13,         //  parleyctl -> broker: an admin command
    PROTO_CTL_REPLY = 14,   //  broker -> parleyctl: its answer
    PROTO_TYPE_MAX = 15
} proto_type_t;

//  Status of a job a worker hands back (RELEASE).
typedef enum {
    PROTO_REL_DONE = 0,     //  result sent to the sink
    PROTO_REL_RETRY = 1,    //  transient failure; retry later
    PROTO_REL_FAIL = 2,     //  permanent failure; dead-letter it
    PROTO_REL_EXPIRED = 3,  //  too late to answer; counted, not sent
    PROTO_REL_SKIP = 4,     //  nothing to post (e.g. empty reply); counted
    PROTO_REL_RETURN = 5    //  not attempted (worker draining); requeue at once
} proto_release_status_t;

//  The broker's answer to a COMMIT.
typedef enum {
    PROTO_VERDICT_POST = 0,     //  this attempt owns the job: post it
    PROTO_VERDICT_STALE = 1,    //  a newer attempt owns the job: drop this result
    PROTO_VERDICT_UNKNOWN = 2,  //  no such active job: drop this result
    PROTO_VERDICT_DONE = 3      //  the job is already finished: drop this result
} proto_verdict_t;

//  What happened to a committed reply (OUTCOME).
typedef enum {
    PROTO_OUT_POSTED = 0,       //  posted to the destination
    PROTO_OUT_FAILED = 1,       //  could not be posted; dead-letter it with the reason
    PROTO_OUT_EXPIRED = 2,      //  too late; not posted
    PROTO_OUT_DUPLICATE = 3,    //  this (message, entity) was posted before; not posted again
    PROTO_OUT_IN_DOUBT = 4      //  may or may not have been posted; dead-lettered for a human
} proto_outcome_status_t;

//  Result codes of proto_decode.
#define PROTO_OK         0
#define PROTO_NONE       1      //  proto_recv: nothing was waiting
#define PROTO_MALFORMED -2

//  --- decoded forms ----------------------------------------------------------
//  Strings are NUL-terminated and owned by the decoded message; byte strings
//  (bin) are pointer + length, also owned by it.

typedef struct {
    const uint8_t *data;
    uint32_t size;
} proto_bin_t;

typedef struct {
    const char *key;
    double value;
} proto_num_t;

typedef struct {
    const char *msg_key;    //  unique message id, "source/chat/message"
    const char *entity;     //  entity id that should answer
    const char *chat;       //  chat key, "source/chat"
    const char *chat_kind;  //  "group", "private" or ""
    uint64_t priority;      //  0 most urgent .. 99
    uint64_t created_ms;    //  when the chat message was written (Unix ms)
    proto_bin_t payload;    //  a MESSAGE record, opaque to the broker
} proto_job_spec_t;

typedef struct {
    uint64_t seq;
    proto_job_spec_t *items;
    size_t count;
} proto_submit_t;

//  Why a submitted job was refused (REJECT.code).
typedef enum {
    PROTO_REJECT_INVALID = 0,   //  never acceptable (unknown entity, empty key): not retried
    PROTO_REJECT_BUSY = 1       //  the queue is full now: keep it and submit it again later
} proto_reject_code_t;

typedef struct {
    uint64_t index;
    const char *reason;
    uint64_t code;          //  proto_reject_code_t
} proto_reject_t;

typedef struct {
    uint64_t seq;
    uint64_t accepted;
    uint64_t duplicates;
    proto_reject_t *rejected;
    size_t rejected_count;
    uint64_t retry_after_ms;    //  for BUSY rejects: submit them again no sooner than this
    uint64_t rejected_more;     //  rejects left out of the list (it is bounded)
} proto_ack_t;

//  One attempt of one job: (job id, fencing token).
typedef struct {
    uint64_t job_id;
    uint64_t token;
} proto_ref_t;

typedef struct {
    const char *worker_id;
    uint64_t capacity;      //  jobs it can hold at once
    uint64_t free;          //  of which free now
    const char **models;    //  models hot on its LLM servers
    size_t model_count;
    const char *host;
    uint64_t pid;
    uint64_t draining;      //  1 = take no new work
    uint64_t job_seq;       //  every JOB frame up to this seq has arrived or never will
    proto_ref_t *held;      //  every job the worker holds (received, not released)
    size_t held_count;
    uint64_t epoch;         //  the broker run job_seq counts in (its last WELCOME's); 0 = none
} proto_heartbeat_t;

typedef struct {
    uint64_t epoch;         //  changes each time the broker starts
    uint64_t heartbeat_ms;
    uint64_t lease_ms;
    uint64_t job_seq;       //  seq of the last JOB frame sent to this worker
    proto_ref_t *cancel;    //  jobs the worker holds that are no longer its: drop them
    size_t cancel_count;
    uint64_t max_hold_ms;   //  a job is taken back after this long, heartbeats or not
} proto_welcome_t;

typedef struct {
    uint64_t job_id;
    uint64_t token;         //  fencing token of this dispatch
    uint64_t attempt;       //  1 for the first attempt
    const char *msg_key;
    const char *entity;
    const char *chat;
    uint64_t priority;
    uint64_t created_ms;
    uint64_t expires_ms;    //  0 = never
    proto_bin_t payload;
} proto_job_t;

typedef struct {
    proto_job_t *items;
    size_t count;
    uint64_t seq;           //  the broker's sequence number of this frame (see HEARTBEAT.job_seq)
} proto_jobs_t;

typedef struct {
    uint64_t job_id;
    uint64_t token;
    uint64_t status;        //  proto_release_status_t
    const char *reason;
    uint64_t retry_after_ms;
} proto_release_item_t;

typedef struct {
    proto_release_item_t *items;
    size_t count;
} proto_release_t;

typedef struct {
    uint64_t job_id;
    uint64_t token;
    uint64_t attempt;
    const char *msg_key;
    const char *entity;
    const char *chat;
    uint64_t created_ms;
    uint64_t expires_ms;
    const char *text;       //  the reply
    proto_bin_t payload;    //  the MESSAGE record it answers
    uint64_t llm_ms;        //  time spent writing it
    uint64_t tokens;        //  completion tokens, when known
} proto_result_item_t;

typedef struct {
    const char *worker_id;
    proto_result_item_t *items;
    size_t count;
} proto_result_t;

typedef struct {
    uint64_t job_id;
    uint64_t token;
    uint64_t hold;          //  1 = the sink already has the verdict and still holds the job
} proto_commit_item_t;

typedef struct {
    uint64_t seq;
    proto_commit_item_t *items;
    size_t count;
} proto_commit_t;

typedef struct {
    uint64_t job_id;
    uint64_t token;
    uint64_t verdict;       //  proto_verdict_t
    //  For POST to a first COMMIT: the job as the broker has it; the sink
    //  posts this, never what a worker claims. Empty otherwise.
    const char *msg_key;
    const char *entity;
    const char *chat;
    const char *chat_kind;
    uint64_t priority;
    uint64_t created_ms;
    uint64_t expires_ms;
    proto_bin_t payload;
    uint64_t slot_ms;       //  not to be posted before (a full limit's planned slot); 0 = none
} proto_verdict_item_t;

typedef struct {
    uint64_t seq;           //  the COMMIT's it answers; PROTO_VERDICT_PUSHED: none
    proto_verdict_item_t *items;
    size_t count;
    uint64_t lease_ms;      //  a committed job the sink stops holding is taken back after this
} proto_verdicts_t;

//  The seq of a VERDICT the broker pushes at dispatch, answering no COMMIT
//  (a sink numbers its COMMITs from 1): one post verdict, with the job's
//  fields, for each job of the JOB frame that follows it.
#define PROTO_VERDICT_PUSHED 0

typedef struct {
    uint64_t job_id;
    uint64_t token;
    uint64_t status;        //  proto_outcome_status_t
    const char *reason;
    uint64_t at_ms;
} proto_outcome_item_t;

typedef struct {
    uint64_t seq;
    proto_outcome_item_t *items;
    size_t count;
} proto_outcome_t;

typedef struct {
    uint64_t seq;
} proto_outcome_ack_t;

typedef struct {
    const char *role;       //  broker | poller | worker | sink
    const char *id;
    proto_num_t *values;
    size_t count;
} proto_component_t;

typedef struct {
    uint64_t ts_ms;
    proto_component_t *components;
    size_t count;
} proto_stats_t;

typedef struct {
    uint64_t req_id;
    const char *command;
    const char **args;
    size_t arg_count;
} proto_ctl_t;

typedef struct {
    uint64_t req_id;
    uint64_t status;        //  0 ok, otherwise an error (body says what)
    const char *body;       //  JSON text
} proto_ctl_reply_t;

//  The chat message a job answers: carried inside JOB_SPEC.payload as its
//  own msgpack array (no header), so the broker never decodes it.
typedef struct {
    const char *author;
    const char *text;
} proto_line_t;

#define PROTO_MSG_FROM_BOT  1u   //  written by a bot
#define PROTO_MSG_MENTION   2u   //  addresses the entity (mention or reply)

typedef struct {
    const char *source;     //  source name
    const char *chat_ref;   //  chat id on the platform
    const char *msg_ref;    //  message id on the platform (reply target)
    const char *author;
    const char *author_id;
    const char *text;
    uint64_t ts_ms;
    uint64_t flags;         //  PROTO_MSG_*
    proto_line_t *context;  //  earlier messages, oldest first
    size_t context_count;
} proto_message_t;

typedef struct {
    proto_type_t type;
    void *zone;             //  owns everything the body points to
    union {
        proto_submit_t submit;
        proto_ack_t ack;
        proto_heartbeat_t heartbeat;
        proto_welcome_t welcome;
        proto_jobs_t job;
        proto_release_t release;
        proto_result_t result;
        proto_commit_t commit;
        proto_verdicts_t verdict;
        proto_outcome_t outcome;
        proto_outcome_ack_t outcome_ack;
        proto_stats_t stats;
        proto_ctl_t ctl;
        proto_ctl_reply_t ctl_reply;
    } body;
} proto_msg_t;

//  --- the API ------------------------------------------------------------------

//  Encodes `body` (the struct of that type) into a frame. Returns 0, or -1
//  when the body breaks the table's bounds (a programming error; logged).
int proto_encode (proto_type_t type, const void *body, zmq_msg_t *frame);

//  Decodes a frame. Returns PROTO_OK and fills `msg` (free it with
//  proto_msg_release), or PROTO_MALFORMED and writes why into `why`.
int proto_decode (const void *data, size_t size, proto_msg_t *msg, char *why, size_t whylen);

void proto_msg_release (proto_msg_t *msg);

//  The MESSAGE record inside a job payload.
int proto_message_encode (const proto_message_t *message, uint8_t **data, size_t *size);
//  Decodes into `out`; strings live in `*zone_p` (free with proto_zone_free).
int proto_message_decode (const void *data, size_t size, proto_message_t *out, void **zone_p,
                          char *why, size_t whylen);
void proto_zone_free (void **zone_p);

//  Name of a message type ("SUBMIT"), or "?".
const char *proto_type_name (int type);

//  Walks msgpack bytes and checks every declared length and count against
//  the bytes left, so nothing is ever allocated from an untrusted count.
//  Returns 0 when `data` holds exactly one well-formed object.
int proto_mp_check (const uint8_t *data, size_t size, const char **why);

//  Writes the message and record tables as Markdown (PROTOCOL.md's
//  reference section is checked against this).
void proto_write_reference (FILE *out);

#endif
