/*  proto_defs - every message and record of the Parley protocol, version 1.

    Field order is wire order. To add a field to a message within version 1,
    append it as optional; older peers ignore it and newer peers read zero
    from older ones. PROTOCOL.md describes the same tables in prose.
*/
#include "proto/proto_defs.h"

#include "proto/proto_defs_macros.h"

//  --- records -----------------------------------------------------------------

static const proto_field_t s_line_fields[] = {
    S (proto_line_t, author, KEY, "who wrote it"),
    S (proto_line_t, text, TEXT, "what they wrote"),
};
static const proto_record_t s_line = RECORD ("LINE", proto_line_t, s_line_fields,
                                             "One earlier chat message given as context.");

static const proto_field_t s_message_fields[] = {
    S (proto_message_t, source, KEY, "source name from the configuration"),
    S (proto_message_t, chat_ref, KEY, "chat id on the platform"),
    S (proto_message_t, msg_ref, KEY, "message id on the platform; replies point at it"),
    S (proto_message_t, author, KEY, "display name of the author"),
    S (proto_message_t, author_id, KEY, "author id on the platform"),
    S (proto_message_t, text, TEXT, "the message text"),
    U (proto_message_t, ts_ms, U64, "when it was written, Unix milliseconds"),
    U (proto_message_t, flags, U32, "1 = written by a bot, 2 = addresses the entity"),
    L (proto_message_t, context, context_count, s_line, 1000, "earlier messages, oldest first"),
};
const proto_record_t proto_message_record =
    RECORD ("MESSAGE", proto_message_t, s_message_fields,
            "The chat message a job answers, carried as msgpack inside JOB_SPEC.payload.");

static const proto_field_t s_job_spec_fields[] = {
    S (proto_job_spec_t, msg_key, KEY, "unique id of the chat message, \"source/chat/message\""),
    S (proto_job_spec_t, entity, KEY, "id of the entity that should answer"),
    S (proto_job_spec_t, chat, KEY, "chat key, \"source/chat\"; per-chat limits apply to it"),
    S (proto_job_spec_t, chat_kind, 16, "\"group\", \"private\" or \"\""),
    U (proto_job_spec_t, priority, 99, "0 most urgent .. 99 least urgent"),
    U (proto_job_spec_t, created_ms, U64, "when the chat message was written, Unix ms"),
    B (proto_job_spec_t, payload, TEXT, "a MESSAGE record, passed to the worker untouched"),
};
static const proto_record_t s_job_spec = RECORD ("JOB_SPEC", proto_job_spec_t, s_job_spec_fields,
                                                 "One job to submit: a (message, entity) pair.");

static const proto_field_t s_reject_fields[] = {
    U (proto_reject_t, index, LIST, "position of the job in the SUBMIT"),
    S (proto_reject_t, reason, TEXT, "why it was refused"),
    OU (proto_reject_t, code, 1,
        "0 invalid: never acceptable, do not resend; 1 busy: the queue is full, keep the job and "
        "submit it again later"),
};
static const proto_record_t s_reject = RECORD ("REJECT", proto_reject_t, s_reject_fields,
                                               "A submitted job the broker refused.");

static const proto_field_t s_job_fields[] = {
    U (proto_job_t, job_id, U64, "the broker's id of the job"),
    U (proto_job_t, token, U64, "fencing token of this dispatch; echo it in RELEASE and RESULT"),
    U (proto_job_t, attempt, U32, "1 for the first attempt, 2 for the first retry, ..."),
    S (proto_job_t, msg_key, KEY, "as submitted"),
    S (proto_job_t, entity, KEY, "as submitted"),
    S (proto_job_t, chat, KEY, "as submitted"),
    U (proto_job_t, priority, 99, "as submitted"),
    U (proto_job_t, created_ms, U64, "as submitted"),
    U (proto_job_t, expires_ms, U64, "Unix ms after which the reply must not be posted; 0 = never"),
    B (proto_job_t, payload, TEXT, "the MESSAGE record"),
};
static const proto_record_t s_job = RECORD ("JOB_ITEM", proto_job_t, s_job_fields,
                                            "One job handed to a worker.");

static const proto_field_t s_ref_fields[] = {
    U (proto_ref_t, job_id, U64, "the broker's id of the job"),
    U (proto_ref_t, token, U64, "the fencing token of the dispatch"),
};
static const proto_record_t s_ref = RECORD ("JOB_REF", proto_ref_t, s_ref_fields,
                                            "One attempt of one job.");

static const proto_field_t s_release_fields[] = {
    U (proto_release_item_t, job_id, U64, "from JOB"),
    U (proto_release_item_t, token, U64, "from JOB"),
    U (proto_release_item_t, status, 5,
       "0 done (result sent to the sink), 1 retry, 2 fail (dead-letter), 3 expired, 4 skip, 5 "
       "return (not attempted)"),
    S (proto_release_item_t, reason, TEXT, "why, for statuses other than 0"),
    U (proto_release_item_t, retry_after_ms, U32, "for retry: earliest retry the worker advises; 0 = broker decides"),
};
static const proto_record_t s_release = RECORD ("RELEASE_ITEM", proto_release_item_t,
                                                s_release_fields, "A job the worker is done with.");

static const proto_field_t s_result_fields[] = {
    U (proto_result_item_t, job_id, U64, "from JOB"),
    U (proto_result_item_t, token, U64, "from JOB"),
    U (proto_result_item_t, attempt, U32, "from JOB"),
    S (proto_result_item_t, msg_key, KEY, "from JOB"),
    S (proto_result_item_t, entity, KEY, "from JOB"),
    S (proto_result_item_t, chat, KEY, "from JOB"),
    U (proto_result_item_t, created_ms, U64, "from JOB"),
    U (proto_result_item_t, expires_ms, U64, "from JOB"),
    S (proto_result_item_t, text, TEXT, "the reply to post"),
    B (proto_result_item_t, payload, TEXT, "the MESSAGE record from JOB (where to post)"),
    U (proto_result_item_t, llm_ms, U32, "milliseconds spent writing the reply"),
    U (proto_result_item_t, tokens, U32, "completion tokens used; 0 if unknown"),
};
static const proto_record_t s_result = RECORD ("RESULT_ITEM", proto_result_item_t, s_result_fields,
                                               "A written reply.");

static const proto_field_t s_commit_item_fields[] = {
    U (proto_commit_item_t, job_id, U64, "from RESULT"),
    U (proto_commit_item_t, token, U64, "from RESULT"),
    OU (proto_commit_item_t, hold, 1,
        "0 = asking (a result just stored); 1 = the sink has the verdict (answered, or pushed) "
        "and holds the job (claims it, or renews the broker's hold on it; answered without the "
        "job's fields)"),
};
static const proto_record_t s_commit_item = RECORD ("COMMIT_ITEM", proto_commit_item_t,
                                                    s_commit_item_fields,
                                                    "One attempt the sink asks about, or still holds.");

static const proto_field_t s_verdict_fields[] = {
    U (proto_verdict_item_t, job_id, U64, "from COMMIT"),
    U (proto_verdict_item_t, token, U64, "from COMMIT"),
    U (proto_verdict_item_t, verdict, 3, "0 post, 1 stale (newer attempt), 2 unknown job, 3 already finished"),
    OS (proto_verdict_item_t, msg_key, KEY, "for post (hold 0, and pushed): the job's message key, as the broker has it"),
    OS (proto_verdict_item_t, entity, KEY, "for post (hold 0, and pushed): the entity that answers"),
    OS (proto_verdict_item_t, chat, KEY, "for post (hold 0, and pushed): the chat key"),
    OS (proto_verdict_item_t, chat_kind, 16, "for post (hold 0, and pushed): \"group\", \"private\" or \"\""),
    OU (proto_verdict_item_t, priority, 99, "for post (hold 0, and pushed): the job's priority"),
    OU (proto_verdict_item_t, created_ms, U64, "for post (hold 0, and pushed): when the chat message was written"),
    OU (proto_verdict_item_t, expires_ms, U64,
        "for post (hold 0, and pushed): Unix ms after which the reply must not be posted; 0 = never"),
    OB (proto_verdict_item_t, payload, TEXT, "for post (hold 0, and pushed): the MESSAGE record (where to post)"),
    OU (proto_verdict_item_t, slot_ms, U64,
        "for post (hold 0, and pushed): Unix ms before which the reply should not be posted (its rate "
        "slot, when a limit it counts against is full); 0 = as soon as the limits allow"),
};
static const proto_record_t s_verdict = RECORD ("VERDICT_ITEM", proto_verdict_item_t,
                                                s_verdict_fields, "The broker's answer for one attempt.");

static const proto_field_t s_outcome_fields[] = {
    U (proto_outcome_item_t, job_id, U64, "from VERDICT"),
    U (proto_outcome_item_t, token, U64, "from VERDICT"),
    U (proto_outcome_item_t, status, 4,
       "0 posted, 1 failed (dead-letter), 2 expired, 3 duplicate (posted before), 4 in doubt (dead-letter)"),
    S (proto_outcome_item_t, reason, TEXT, "why, for statuses other than 0"),
    U (proto_outcome_item_t, at_ms, U64, "when, Unix ms"),
};
static const proto_record_t s_outcome = RECORD ("OUTCOME_ITEM", proto_outcome_item_t,
                                                s_outcome_fields, "What happened to one reply.");

static const proto_field_t s_component_fields[] = {
    S (proto_component_t, role, 16, "broker, poller, worker or sink"),
    S (proto_component_t, id, KEY, "the process's id"),
    N (proto_component_t, values, count, 4096, "counters and gauges by name"),
};
static const proto_record_t s_component = RECORD ("COMPONENT", proto_component_t,
                                                  s_component_fields, "One process's counters.");

//  --- message bodies -------------------------------------------------------------

static const proto_field_t s_submit_fields[] = {
    U (proto_submit_t, seq, U64, "sender's sequence number, echoed in ACK"),
    L (proto_submit_t, items, count, s_job_spec, LIST, "the jobs"),
};
static const proto_field_t s_ack_fields[] = {
    U (proto_ack_t, seq, U64, "from SUBMIT"),
    U (proto_ack_t, accepted, LIST, "jobs stored"),
    U (proto_ack_t, duplicates, LIST, "jobs already known (stored earlier); nothing to resend"),
    L (proto_ack_t, rejected, rejected_count, s_reject, LIST, "jobs refused, with reasons"),
    OU (proto_ack_t, retry_after_ms, U32, "for busy rejects: submit them again no sooner than this"),
    OU (proto_ack_t, rejected_more, LIST, "rejects not listed (the list holds at most 10000)"),
};
static const proto_field_t s_heartbeat_fields[] = {
    S (proto_heartbeat_t, worker_id, KEY, "the worker's name"),
    U (proto_heartbeat_t, capacity, U32, "jobs it can hold at once"),
    U (proto_heartbeat_t, free, U32, "of which free now (used when the broker does not know the worker)"),
    SL (proto_heartbeat_t, models, model_count, 4096, "models hot on its LLM servers"),
    S (proto_heartbeat_t, host, KEY, "host name"),
    U (proto_heartbeat_t, pid, U32, "process id"),
    OU (proto_heartbeat_t, draining, 1, "1 = shutting down, send no more jobs"),
    OU (proto_heartbeat_t, job_seq, U64,
        "every JOB frame up to this seq has arrived or never will: the highest JOB seq received "
        "or WELCOME job_seq seen, whichever is higher (0 before any)"),
    OL (proto_heartbeat_t, held, held_count, s_ref, LIST,
        "every job the worker holds now (received, not yet RELEASEd); renews their leases"),
    OU (proto_heartbeat_t, epoch, U64,
        "the epoch of the last WELCOME the worker read, which job_seq counts in; 0 before any"),
};
static const proto_field_t s_welcome_fields[] = {
    U (proto_welcome_t, epoch, U64, "changes every time the broker starts"),
    U (proto_welcome_t, heartbeat_ms, U32, "how often the worker must send HEARTBEAT"),
    U (proto_welcome_t, lease_ms, U32,
       "a job is taken back after this long without a HEARTBEAT that lists it"),
    OU (proto_welcome_t, job_seq, U64, "seq of the last JOB frame the broker sent to this worker"),
    OL (proto_welcome_t, cancel, cancel_count, s_ref, LIST,
        "jobs the worker listed as held that are no longer its: drop them, send no RELEASE"),
    OU (proto_welcome_t, max_hold_ms, U32,
        "a job is taken back after this long however often it is renewed; 0 = no bound"),
};
static const proto_field_t s_job_msg_fields[] = {
    L (proto_jobs_t, items, count, s_job, LIST, "the jobs; never more than the worker's free credits"),
    OU (proto_jobs_t, seq, U64, "this frame's number: increases with every JOB the broker sends"),
};
static const proto_field_t s_release_msg_fields[] = {
    L (proto_release_t, items, count, s_release, LIST, "the jobs; each returns one credit"),
};
static const proto_field_t s_result_msg_fields[] = {
    S (proto_result_t, worker_id, KEY, "the worker's name"),
    L (proto_result_t, items, count, s_result, LIST, "the replies"),
};
static const proto_field_t s_commit_fields[] = {
    U (proto_commit_t, seq, U64,
       "sender's sequence number, echoed in VERDICT; never 0 (a VERDICT with seq 0 is pushed)"),
    L (proto_commit_t, items, count, s_commit_item, LIST, "attempts whose results the sink has, or still holds"),
};
static const proto_field_t s_verdicts_fields[] = {
    U (proto_verdicts_t, seq, U64, "from COMMIT; 0 = pushed at dispatch, answering no COMMIT"),
    L (proto_verdicts_t, items, count, s_verdict, LIST,
       "one per COMMIT item (pushed: one per job dispatched)"),
    OU (proto_verdicts_t, lease_ms, U32,
        "a committed job is taken back if the sink has not asked about or held it for this long"),
};
static const proto_field_t s_outcome_msg_fields[] = {
    U (proto_outcome_t, seq, U64, "sender's sequence number, echoed in OUTCOME_ACK"),
    L (proto_outcome_t, items, count, s_outcome, LIST, "what happened"),
};
static const proto_field_t s_outcome_ack_fields[] = {
    U (proto_outcome_ack_t, seq, U64, "from OUTCOME: all its items are stored"),
};
static const proto_field_t s_stats_fields[] = {
    U (proto_stats_t, ts_ms, U64, "when, Unix ms"),
    L (proto_stats_t, components, count, s_component, 100000, "one entry per process"),
};
static const proto_field_t s_ctl_fields[] = {
    U (proto_ctl_t, req_id, U64, "echoed in CTL_REPLY"),
    S (proto_ctl_t, command, 64, "command name"),
    SL (proto_ctl_t, args, arg_count, 64, "arguments"),
};
static const proto_field_t s_ctl_reply_fields[] = {
    U (proto_ctl_reply_t, req_id, U64, "from CTL"),
    U (proto_ctl_reply_t, status, 255, "0 ok, otherwise failed"),
    S (proto_ctl_reply_t, body, TEXT, "JSON text: the answer, or {\"error\": ...}"),
};

#define BODY(name, T, fields) RECORD (name, T, fields, NULL)
static const proto_record_t s_submit = BODY ("SUBMIT", proto_submit_t, s_submit_fields);
static const proto_record_t s_ack = BODY ("ACK", proto_ack_t, s_ack_fields);
static const proto_record_t s_heartbeat = BODY ("HEARTBEAT", proto_heartbeat_t, s_heartbeat_fields);
static const proto_record_t s_welcome = BODY ("WELCOME", proto_welcome_t, s_welcome_fields);
static const proto_record_t s_job_msg = BODY ("JOB", proto_jobs_t, s_job_msg_fields);
static const proto_record_t s_release_msg = BODY ("RELEASE", proto_release_t, s_release_msg_fields);
static const proto_record_t s_result_msg = BODY ("RESULT", proto_result_t, s_result_msg_fields);
static const proto_record_t s_commit = BODY ("COMMIT", proto_commit_t, s_commit_fields);
static const proto_record_t s_verdicts = BODY ("VERDICT", proto_verdicts_t, s_verdicts_fields);
static const proto_record_t s_outcome_msg = BODY ("OUTCOME", proto_outcome_t, s_outcome_msg_fields);
static const proto_record_t s_outcome_ack = BODY ("OUTCOME_ACK", proto_outcome_ack_t, s_outcome_ack_fields);
static const proto_record_t s_stats = BODY ("STATS", proto_stats_t, s_stats_fields);
static const proto_record_t s_ctl = BODY ("CTL", proto_ctl_t, s_ctl_fields);
static const proto_record_t s_ctl_reply = BODY ("CTL_REPLY", proto_ctl_reply_t, s_ctl_reply_fields);

const proto_message_def_t proto_messages[PROTO_TYPE_MAX] = {
    [PROTO_SUBMIT] = {PROTO_SUBMIT, "SUBMIT", "poller -> broker", &s_submit,
                      "New jobs. The broker answers with one ACK after storing them."},
    [PROTO_ACK] = {PROTO_ACK, "ACK", "broker -> poller", &s_ack,
                   "The jobs of a SUBMIT are stored (or refused); the sender may forget them."},
    [PROTO_HEARTBEAT] = {PROTO_HEARTBEAT, "HEARTBEAT", "worker -> broker", &s_heartbeat,
                         "Sent on connect and every heartbeat_ms; registers the worker and renews its leases."},
    [PROTO_WELCOME] = {PROTO_WELCOME, "WELCOME", "broker -> worker", &s_welcome,
                       "Answers a worker's first HEARTBEAT and repeats every heartbeat_ms."},
    [PROTO_JOB] = {PROTO_JOB, "JOB", "broker -> worker", &s_job_msg, "Jobs to write."},
    [PROTO_RELEASE] = {PROTO_RELEASE, "RELEASE", "worker -> broker", &s_release_msg,
                       "The worker is done with these jobs; one credit back per item."},
    [PROTO_RESULT] = {PROTO_RESULT, "RESULT", "worker -> sink", &s_result_msg, "Written replies."},
    [PROTO_COMMIT] = {PROTO_COMMIT, "COMMIT", "sink -> broker", &s_commit,
                      "The sink has stored these results and asks whether to post them."},
    [PROTO_VERDICT] = {PROTO_VERDICT, "VERDICT", "broker -> sink", &s_verdicts,
                       "Post, or drop, each committed result; exactly one attempt per job gets post. "
                       "With seq 0, pushed with a JOB frame: post for each job it dispatches (§5, "
                       "pushed verdicts)."},
    [PROTO_OUTCOME] = {PROTO_OUTCOME, "OUTCOME", "sink -> broker", &s_outcome_msg,
                       "What happened to committed replies; the broker finishes the jobs."},
    [PROTO_OUTCOME_ACK] = {PROTO_OUTCOME_ACK, "OUTCOME_ACK", "broker -> sink", &s_outcome_ack,
                           "The outcomes of an OUTCOME are stored."},
    [PROTO_STATS] = {PROTO_STATS, "STATS", "any -> sink; sink -> subscribers", &s_stats,
                     "Counters. Processes report theirs; the sink publishes all of them."},
    [PROTO_CTL] = {PROTO_CTL, "CTL", "parleyctl -> broker", &s_ctl, "An administrative command."},
    [PROTO_CTL_REPLY] = {PROTO_CTL_REPLY, "CTL_REPLY", "broker -> parleyctl", &s_ctl_reply,
                         "The command's answer."},
};
