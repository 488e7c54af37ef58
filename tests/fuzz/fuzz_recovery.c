/*  fuzz_recovery - what each daemon makes of the journal it finds at start.

    Recovery reads what an older version, a crash or a damaged disk left,
    and must never crash on it: a daemon that crashes while loading its
    state crashes again at every restart. This target writes the input as a
    journal (store/pjournal's files) in a fresh directory and starts the
    daemon's state the way the daemon does - the broker's job table
    (bjobs_recover: jobs, dead letters, rate history, pauses), the poller's
    intake and batches (poller_store_load into submit_restore), the sink's
    ledger (ledger_recover: marks asked about at real destinations, rate
    history into the gate, outcomes reported again), commits, and closes
    everything. Then it starts twice more, as a daemon restarted in a loop
    would: the second start also plays a few turns (time passing, leases,
    expiry, jobs dispatched and given back, a dead letter retried, keys
    aging out, migration), the third reads what those turns wrote.

    Input: byte 0 is flags
        bits 0-1  the loader: 0 broker, 1 poller, 2 sink, 3 all three (each
                  gets the same journal, so each also reads the others' records)
        bit 2     raw: the rest is the bytes of segment 1, header included
        bit 3     fsync "batch" (else "off")
        bit 4     segments of 4096 bytes (else the default), so recovery's own
                  writes rotate and migrate
        bits 5-6  the clock: the records' time (1700000000000), +30 min,
                  +2 h (rate history gone), +25 h (past dedupe retention)
    then, unless raw, chunks: u8 op, u16 length (little endian), bytes
        op < 0xF0  a record of type op, framed with its right crc, so the
                   record decoders get the payload
        0xF0       a new segment; 8 bytes of data (LE) give its id when larger
                   than the next one
        0xF1       the bytes as they are (damage between records)
        0xF2       a record with a wrong crc (data[0] is its type)
        0xF3       the current segment's 16-byte header replaced by the data
        0xF4       bytes for quarantine.pj, as a previous run might have left
    A chunk cut short by the end of the input is written as it is: the torn
    tail of a crash.

    Checks, besides ASan/UBSan/leaks and the code's own asserts: every start
    succeeds unless a segment is of a newer format; the second finds no new
    damage (the first cut it all away) and - broker and poller - the same
    jobs, dead letters, batches, seen keys and cursors as the first; every
    quarantine entry reads back; a restored batch is the SUBMIT the broker
    decodes; every frame the sink's recovery sends decodes.

    PARLEY_FUZZ_LOG=info shows the daemons' log lines while one input loads.
    Seeds: `fuzz_recovery --make-corpus DIR` writes journals made by the
    real stores (and damaged copies) into DIR, in the format above.
*/
#include <czmq.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "broker/dead.h"
#include "broker/jobs.h"
#include "broker/sched.h"
#include "broker/store.h"
#include "common/pconfig.h"
#include "common/plog.h"
#include "common/pseen.h"
#include "net/ptext.h"
#include "poller/intake.h"
#include "poller/poller_store.h"
#include "poller/submit.h"
#include "proto/proto.h"
#include "sink/commit.h"
#include "sink/dests.h"
#include "sink/gate.h"
#include "sink/ledger.h"
#include "sink/sink_store.h"
#include "store/pjournal.h"

#include "fuzz_require.h"

#define NOW        1700000000000ll     //  the time the seeds' records were made
#define HOUR       3600000ll
#define RETENTION  (24 * HOUR)         //  storage.dedupeRetentionSeconds below
#define MAX_SEGMENTS 16                //  segment files one input may make

enum { F_DAEMON = 3, F_RAW = 4, F_BATCH = 8, F_SMALL = 16 };
enum { D_BROKER, D_POLLER, D_SINK, D_ALL };
enum { OP_SEGMENT = 0xF0, OP_BYTES, OP_BAD_CRC, OP_HEADER, OP_QUARANTINE };

static pcfg_t *s_config;
static char s_root[256];            //  this process's scratch directory
static zsock_t *s_outcomes_out;     //  the sink's commit module sends here
static zsock_t *s_outcomes_in;
static const int64_t s_clock[4] = {NOW, NOW + HOUR / 2, NOW + 2 * HOUR, NOW + 25 * HOUR};

//  --- the input as journal files ------------------------------------------------------------

typedef struct {
    unsigned char *data;
    size_t len, cap;
} s_buf_t;

static void s_put (s_buf_t *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->data = realloc (b->data, b->cap);
        FUZZ_REQUIRE (b->data, "memory");
    }
    if (len)
        memcpy (b->data + b->len, data, len);
    b->len += len;
}

static void s_put_le (unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char) (v >> (8 * i));
}

static void s_header (s_buf_t *b, uint64_t id)
{
    unsigned char h[PJOURNAL_HEADER_BYTES] = {'P', 'J', '1', PJOURNAL_FORMAT_VERSION};
    s_put_le (h + 8, id, 8);
    s_put (b, h, sizeof h);
}

//  A record as pjournal frames it: length, crc32 over type + payload, type.
static void s_record (s_buf_t *b, uint8_t type, const void *payload, size_t len, bool crc_ok)
{
    unsigned char h[PJOURNAL_RECORD_OVERHEAD];
    s_put_le (h, len, 4);
    h[8] = type;
    uLong crc = crc32 (0L, &type, 1);
    crc = crc32 (crc, payload, (uInt) len);
    s_put_le (h + 4, (uint32_t) crc ^ (crc_ok ? 0 : 1), 4);
    s_put (b, h, sizeof h);
    s_put (b, payload, len);
}

typedef struct {
    int daemon;
    const char *fsync;
    size_t segment_bytes;
    int64_t now;
    uint64_t ids[MAX_SEGMENTS];
    s_buf_t segments[MAX_SEGMENTS];
    size_t count;
    s_buf_t quarantine;
    bool foreign_quarantine;        //  quarantine.pj did not come from pjournal
    bool newer_format;              //  a header claims a format this build does not read
} s_plan_t;

static void s_plan_free (s_plan_t *plan)
{
    for (size_t i = 0; i < plan->count; i++)
        free (plan->segments[i].data);
    free (plan->quarantine.data);
}

static s_buf_t *s_segment_new (s_plan_t *plan, uint64_t id)
{
    if (plan->count == MAX_SEGMENTS)
        return NULL;
    s_buf_t *b = &plan->segments[plan->count];
    plan->ids[plan->count++] = id;
    s_header (b, id);
    return b;
}

static void s_plan (s_plan_t *plan, const uint8_t *data, size_t size)
{
    memset (plan, 0, sizeof *plan);
    uint8_t flags = data[0];
    plan->daemon = flags & F_DAEMON;
    plan->fsync = flags & F_BATCH ? "batch" : "off";
    plan->segment_bytes = flags & F_SMALL ? 4096 : 0;
    plan->now = s_clock[(flags >> 5) & 3];
    data++, size--;
    if (flags & F_RAW) {
        plan->ids[0] = 1;
        plan->count = 1;
        s_put (&plan->segments[0], data, size);
        plan->newer_format = size > 3 && data[3] > PJOURNAL_FORMAT_VERSION;
        return;
    }
    s_buf_t *seg = s_segment_new (plan, 1);
    while (size && seg) {
        if (size < 3) {
            s_put (seg, data, size);        //  a torn tail
            break;
        }
        uint8_t op = data[0];
        size_t len = (size_t) data[1] | (size_t) data[2] << 8;
        const uint8_t *body = data + 3;
        if (len > size - 3) {
            s_put (seg, data, size);        //  cut short: written as it is
            break;
        }
        data += 3 + len;
        size -= 3 + len;
        if (op < OP_SEGMENT)
            s_record (seg, op, body, len, true);
        else if (op == OP_SEGMENT) {
            uint64_t id = plan->ids[plan->count - 1] + 1, want = 0;
            if (len >= 8) {
                for (int i = 7; i >= 0; i--)
                    want = want << 8 | body[i];
                if (want > id)
                    id = want;
            }
            seg = s_segment_new (plan, id);
        }
        else if (op == OP_BYTES)
            s_put (seg, body, len);
        else if (op == OP_BAD_CRC && len)
            s_record (seg, body[0], body + 1, len - 1, false);
        else if (op == OP_HEADER) {
            size_t n = len < PJOURNAL_HEADER_BYTES ? len : PJOURNAL_HEADER_BYTES;
            memset (seg->data, 0, PJOURNAL_HEADER_BYTES);
            memcpy (seg->data, body, n);
            if (n > 3 && body[3] > PJOURNAL_FORMAT_VERSION)
                plan->newer_format = true;
        }
        else if (op == OP_QUARANTINE) {
            s_put (&plan->quarantine, body, len);
            plan->foreign_quarantine = true;
        }
    }
}

static void s_write_file (const char *path, const s_buf_t *b)
{
    FILE *f = fopen (path, "wb");
    FUZZ_REQUIRE (f, "cannot write a journal file");
    if (b->len)
        FUZZ_REQUIRE (fwrite (b->data, 1, b->len, f) == b->len, "short write");
    fclose (f);
}

//  Writes the plan's files into dir/name/.
static void s_write_journal (const s_plan_t *plan, const char *dir, const char *name)
{
    char path[512];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    FUZZ_REQUIRE (mkdir (path, 0755) == 0, "cannot make the journal directory");
    for (size_t i = 0; i < plan->count; i++) {
        snprintf (path, sizeof path, "%s/%s/%016llx.pj", dir, name,
                  (unsigned long long) plan->ids[i]);
        s_write_file (path, &plan->segments[i]);
    }
    if (plan->foreign_quarantine) {
        snprintf (path, sizeof path, "%s/%s/quarantine.pj", dir, name);
        s_write_file (path, &plan->quarantine);
    }
}

static void s_remove_tree (const char *path)
{
    DIR *dir = opendir (path);
    if (!dir) {
        unlink (path);
        return;
    }
    struct dirent *e;
    while ((e = readdir (dir))) {
        if (!strcmp (e->d_name, ".") || !strcmp (e->d_name, ".."))
            continue;
        char child[512];
        snprintf (child, sizeof child, "%s/%s", path, e->d_name);
        s_remove_tree (child);
    }
    closedir (dir);
    rmdir (path);
}

//  --- the quarantine --------------------------------------------------------------------------

typedef struct {
    size_t records, bytes;
} s_quarantine_t;

static int s_count_entry (void *arg, int kind, uint64_t segment, uint64_t offset, uint8_t type,
                          const char *reason, const void *data, size_t len)
{
    (void) segment, (void) offset, (void) type, (void) data, (void) len;
    s_quarantine_t *q = arg;
    FUZZ_REQUIRE (kind == PJOURNAL_QUARANTINE_RECORD || kind == PJOURNAL_QUARANTINE_BYTES,
                  "quarantine entry kind");
    FUZZ_REQUIRE (*reason, "a quarantine entry without its reason");
    if (kind == PJOURNAL_QUARANTINE_RECORD)
        q->records++;
    else
        q->bytes++;
    return 0;
}

static s_quarantine_t s_quarantine (const char *dir, const char *name)
{
    char path[512];
    snprintf (path, sizeof path, "%s/%s/quarantine.pj", dir, name);
    s_quarantine_t q = {0, 0};
    pjournal_quarantine_read (path, s_count_entry, &q);
    return q;
}

//  --- what a load left ----------------------------------------------------------------------

typedef struct {
    int rc;
    size_t a, b, c, d;          //  per daemon: what must come back the same
    uint64_t quarantined;       //  entries this load wrote
} s_result_t;

//  --- the broker ----------------------------------------------------------------------------

//  Turns after the restart: time passes (leases, expiry, rate windows), jobs
//  are dispatched and given back, a dead letter is retried.
static void s_broker_play (bjobs_t *jobs, bdlq_t *dlq, store_t *store, int64_t now)
{
    static const int64_t later[] = {0, 61000, 11 * 60000, 2 * HOUR};
    for (size_t t = 0; t < sizeof later / sizeof later[0]; t++) {
        int64_t at = now + later[t];
        bjobs_tick (jobs, at);
        bjob_t *popped[4];
        size_t n = 0;
        while (n < 4 && (popped[n] = bjobs_next (jobs, at)))
            n++;
        while (n)
            bjobs_unpop (jobs, popped[--n], at, at + 1000);
        if (t == 1 && bdlq_first (dlq))
            bjobs_requeue_dead (jobs, bdlq_first (dlq), at);
        bjobs_prune (jobs, at);
        if (store_commit (store))
            break;
    }
}

static s_result_t s_broker (const s_plan_t *plan, const char *dir, bool play)
{
    s_result_t out = {0};
    char err[600];
    store_t *store = store_open_sized (dir, plan->fsync, plan->segment_bytes, err, sizeof err);
    FUZZ_REQUIRE (store, err);
    sched_t *sched = sched_new_for (s_config);
    bdlq_t *dlq = bdlq_new (store);
    bjobs_t *jobs = bjobs_new (s_config, sched, store, dlq);
    //  As broker_server's start: recover, a new run, the first commit.
    out.rc = bjobs_recover (jobs, plan->now);
    if (out.rc == 0) {
        store_next_epoch (store);
        for (int turn = 0; turn < 3 && out.rc == 0; turn++) {
            bjobs_prune (jobs, plan->now + turn);
            out.rc = store_commit (store);
        }
        sched_counts_t counts;
        sched_counts (sched, &counts);
        out.a = counts.queued + counts.delayed;
        out.b = bjobs_in_state (jobs, JOB_COMMITTED);
        out.c = bdlq_size (dlq);
        out.quarantined = store_quarantined (store);
        if (play)
            s_broker_play (jobs, dlq, store, plan->now);
    }
    bjobs_destroy (&jobs);
    bdlq_destroy (&dlq);
    store_close (&store);
    sched_destroy (&sched);
    return out;
}

//  --- the poller ----------------------------------------------------------------------------

static void s_poller_batch (void *arg, uint64_t seq, const void *frame, size_t size, size_t count,
                            uint64_t segment)
{
    //  What the store hands over is what the broker will be sent: it must decode.
    proto_msg_t msg;
    char why[256];
    FUZZ_REQUIRE (proto_decode (frame, size, &msg, why, sizeof why) == PROTO_OK,
                  "a restored batch does not decode");
    FUZZ_REQUIRE (msg.type == PROTO_SUBMIT && msg.body.submit.seq == seq
                      && msg.body.submit.count == count,
                  "a restored batch is not its SUBMIT");
    proto_msg_release (&msg);
    submit_restore (arg, seq, frame, size, count, segment);
}

static s_result_t s_poller (const s_plan_t *plan, const char *dir, bool play)
{
    s_result_t out = {0};
    char err[600];
    poller_store_t *store =
        poller_store_open_sized (dir, plan->fsync, plan->segment_bytes, err, sizeof err);
    FUZZ_REQUIRE (store, err);
    submit_t *submit = submit_new (s_config, store);
    intake_t *intake = intake_new (s_config, NULL, submit, store);
    out.rc = poller_store_load (store, plan->now, RETENTION, s_poller_batch, submit);
    if (out.rc == 0) {
        intake_prune (intake, plan->now);
        for (int turn = 0; turn < 3 && out.rc == 0; turn++)
            out.rc = poller_store_commit (store);
        out.a = submit_outstanding (submit);
        out.b = intake_seen (intake);
        //  The cursors each configured source would resume at.
        for (size_t i = 0; i < s_config->sources.count; i++) {
            char *cursor = poller_store_get_cursor (store, ((const pcfg_source_t *) s_config->sources.items)[i].name);
            if (cursor) {
                FUZZ_REQUIRE (ptext_utf8_valid (cursor, strlen (cursor)), "cursor UTF-8");
                out.c += strlen (cursor) + 1;
            }
            free (cursor);
        }
        out.quarantined = poller_store_quarantined (store);
        //  Time passes: seen keys age out and free their segments.
        for (int64_t at = plan->now; play && at < plan->now + 2 * RETENTION; at += RETENTION / 2) {
            intake_prune (intake, at);
            if (poller_store_commit (store))
                break;
        }
    }
    intake_destroy (&intake);
    submit_destroy (&submit);
    poller_store_close (&store);
    return out;
}

//  --- the sink -----------------------------------------------------------------------------

static void s_on_verdict (void *ctx, const proto_verdict_item_t *item, bool renewal)
{
    (void) ctx, (void) item, (void) renewal;
}

static void s_on_acked (void *ctx, uint64_t job_id, uint64_t token)
{
    (void) ctx, (void) job_id, (void) token;
}

static void s_dest_done (void *ctx, void *tag, int status, const char *reason, int64_t retry_after)
{
    (void) ctx, (void) tag, (void) status, (void) reason, (void) retry_after;
    FUZZ_REQUIRE (false, "a destination finished a post nobody made");
}

typedef struct {
    commit_t *commit;
    size_t asked;
} s_sink_ctx_t;

//  As the sink does with a post that certainly did not go out: ask the broker again.
static void s_ask_again (void *arg, const sink_mark_t *m)
{
    s_sink_ctx_t *ctx = arg;
    FUZZ_REQUIRE (m->text && ptext_utf8_valid (m->text, strlen (m->text)), "mark text");
    commit_ask (ctx->commit, m->job_id, m->token);
    ctx->asked++;
}

//  Every frame the sink's recovery sent must be one the broker decodes.
static size_t s_drain_outcomes (void)
{
    size_t frames = 0;
    zmq_msg_t frame;
    zmq_msg_init (&frame);
    while (zmq_msg_recv (&frame, zsock_resolve (s_outcomes_in), ZMQ_DONTWAIT) >= 0) {
        proto_msg_t msg;
        char why[300];
        if (proto_decode (zmq_msg_data (&frame), zmq_msg_size (&frame), &msg, why, sizeof why)
            != PROTO_OK) {
            fprintf (stderr, "fuzz: the sink sent a frame the broker refuses: %s\n", why);
            FUZZ_REQUIRE (false, "the sink's frame does not decode");
        }
        proto_msg_release (&msg);
        frames++;
    }
    zmq_msg_close (&frame);
    return frames;
}

static s_result_t s_sink (const s_plan_t *plan, const char *dir, bool play)
{
    s_result_t out = {0};
    char err[600];
    sink_store_t *store = sink_store_open (dir, plan->fsync, plan->segment_bytes, err, sizeof err);
    FUZZ_REQUIRE (store, err);
    commit_events_t events = {s_on_verdict, s_on_acked, NULL};
    commit_t *commit = commit_new (s_outcomes_out, s_config->resend_ms,
                                   s_config->stale_claim_timeout_ms, &events);
    gate_t *gate = gate_new_for (s_config);
    ledger_t *ledger = ledger_new (s_config, store, commit);
    dest_events_t dest_events = {s_dest_done, NULL, NULL, NULL};
    dests_t *dests = dests_new (s_config, &dest_events);
    FUZZ_REQUIRE (dests, "destinations");
    s_sink_ctx_t ctx = {commit, 0};
    out.rc = ledger_recover (ledger, gate, dests, plan->now, s_ask_again, &ctx);
    if (out.rc == 0) {
        for (int turn = 0; turn < 3 && out.rc == 0; turn++) {
            ledger_prune (ledger, plan->now + turn);
            out.rc = sink_store_commit (store);
        }
        //  Time passes: pairs and rate history age out.
        for (int64_t at = plan->now; play && at < plan->now + 2 * RETENTION; at += RETENTION / 2) {
            ledger_prune (ledger, at);
            if (sink_store_commit (store))
                break;
        }
        commit_send (commit, plan->now);
        s_drain_outcomes ();
        out.quarantined = sink_store_quarantined (store);
    }
    dests_destroy (&dests);
    ledger_destroy (&ledger);
    gate_destroy (&gate);
    commit_destroy (&commit);
    sink_store_close (&store);
    return out;
}

//  --- one input -----------------------------------------------------------------------------

typedef s_result_t (s_loader_fn) (const s_plan_t *plan, const char *dir, bool play);

//  Three starts: the first recovers what the input left; the second must
//  find no new damage and (broker, poller) recover the same, then plays a
//  few turns; the third reads what those turns wrote.
static void s_run (const s_plan_t *plan, const char *dir, const char *name, s_loader_fn *load,
                   bool same_twice)
{
    s_result_t first = load (plan, dir, false);
    FUZZ_REQUIRE (first.rc == 0 || plan->newer_format, "recovery failed on an old-format journal");
    s_quarantine_t q1 = s_quarantine (dir, name);
    //  (A load that stops at a newer format leaves what it quarantined before uncounted.)
    if (!plan->foreign_quarantine && first.rc == 0)
        FUZZ_REQUIRE (q1.records + q1.bytes == first.quarantined,
                      "a quarantined entry does not read back");
    //  The restart after: whatever the first load did, the second one starts too.
    s_result_t second = load (plan, dir, true);
    FUZZ_REQUIRE (second.rc == first.rc, "the second load differs in success");
    if (first.rc)
        return;
    s_quarantine_t q2 = s_quarantine (dir, name);
    if (!plan->foreign_quarantine)
        FUZZ_REQUIRE (q2.bytes == q1.bytes, "the second load found damage the first left");
    if (same_twice) {
        if (first.a != second.a || first.b != second.b || first.c != second.c) {
            fprintf (stderr, "fuzz: %s: first load %zu/%zu/%zu, second %zu/%zu/%zu\n", name,
                     first.a, first.b, first.c, second.a, second.b, second.c);
            FUZZ_REQUIRE (false, "a restart changed what was recovered");
        }
    }
    s_result_t third = load (plan, dir, false);
    FUZZ_REQUIRE (third.rc == 0, "the journal the daemon wrote itself does not load");
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    s_plan_t plan;
    s_plan (&plan, data, size);
    static unsigned long runs;
    char dir[300];
    snprintf (dir, sizeof dir, "%s/run-%lu", s_root, runs++);
    FUZZ_REQUIRE (mkdir (dir, 0755) == 0, "cannot make the run directory");
    if (plan.daemon == D_BROKER || plan.daemon == D_ALL) {
        s_write_journal (&plan, dir, "broker");
        s_run (&plan, dir, "broker", s_broker, true);
    }
    if (plan.daemon == D_POLLER || plan.daemon == D_ALL) {
        s_write_journal (&plan, dir, "poller");
        s_run (&plan, dir, "poller", s_poller, true);
    }
    if (plan.daemon == D_SINK || plan.daemon == D_ALL) {
        s_write_journal (&plan, dir, "sink");
        s_run (&plan, dir, "sink", s_sink, false);
    }
    s_remove_tree (dir);
    s_plan_free (&plan);
    return 0;
}

//  --- the seeds -----------------------------------------------------------------------------

static uint8_t *s_message (const char *source, const char *text, size_t *size)
{
    proto_line_t context[1] = {{"bob", "earlier"}};
    proto_message_t m = {source, "c", "1", "alice", "u1", text, (uint64_t) NOW - 5000,
                         PROTO_MSG_MENTION, context, 1};
    uint8_t *data = NULL;
    FUZZ_REQUIRE (proto_message_encode (&m, &data, size) == 0, "message encode");
    return data;
}

static void s_make_broker (const char *dir)
{
    char err[600];
    store_t *st = store_open_sized (dir, "off", 0, err, sizeof err);
    FUZZ_REQUIRE (st, err);
    pseen_t *done = pseen_new (1000, RETENTION);
    store_set_owner (st, NULL, NULL, done);
    store_callbacks_t none = {0};
    FUZZ_REQUIRE (store_load (st, NOW, RETENTION, &none, NULL) == 0, "empty load");
    store_next_epoch (st);
    size_t size;
    uint8_t *payload = s_message ("demo", "hello @a", &size);
    store_anchor_t anchors[8];
    memset (anchors, 0, sizeof anchors);
    store_job_t job = {.id = 1, .entity = "a", .msg_key = "demo/c/1", .chat = "demo/c",
                       .chat_kind = "group", .priority = 10, .created_ms = NOW - 5000,
                       .enqueued_ms = NOW - 4000, .not_before = NOW - 3000,
                       .expires_ms = NOW + 600000, .payload = payload,
                       .payload_size = (uint32_t) size, .history = ""};
    store_job_put (st, &anchors[0], &job, true);
    //  Committed to the sink under a token, after a lost worker.
    job = (store_job_t) {.id = 2, .entity = "b", .msg_key = "demo/c/2", .chat = "demo/c",
                         .chat_kind = "group", .priority = 50, .created_ms = NOW - 5000,
                         .enqueued_ms = NOW - 4000, .attempt = 2, .crashes = 1,
                         .committed = true, .token = 0x1234abcd, .payload = payload,
                         .payload_size = (uint32_t) size,
                         .history = "attempt 1: worker w1 was lost\n"};
    store_job_put (st, &anchors[1], &job, true);
    //  An entity the configuration no longer has: dead-lettered at recovery.
    job = (store_job_t) {.id = 3, .entity = "ghost", .msg_key = "demo/c/3", .chat = "demo/c",
                         .chat_kind = "private", .priority = 99, .created_ms = NOW - 5000,
                         .payload = payload, .payload_size = (uint32_t) size, .history = ""};
    store_job_put (st, &anchors[2], &job, true);
    //  Finished: a tombstone and its pair.
    job = (store_job_t) {.id = 4, .entity = "a", .msg_key = "demo/c/4", .chat = "demo/c",
                         .chat_kind = "group", .priority = 10, .created_ms = NOW - 5000,
                         .payload = payload, .payload_size = (uint32_t) size, .history = ""};
    store_job_put (st, &anchors[3], &job, true);
    store_job_gone (st, &anchors[3], 4);
    store_done (st, pkey_pair_fp ("a", "demo/c/4"), NOW - 1000);
    //  Queued again after a failure: a second version of the same job.
    job = (store_job_t) {.id = 5, .entity = "b", .msg_key = "web/x/5", .chat = "web/x",
                         .chat_kind = "", .priority = 30, .created_ms = NOW - 5000,
                         .enqueued_ms = NOW - 100, .not_before = NOW + 2000, .attempt = 1,
                         .failures = 1, .payload = payload, .payload_size = (uint32_t) size,
                         .history = "attempt 1: the LLM server answered 500\n"};
    store_job_put (st, &anchors[4], &job, true);
    job.attempt = 2;
    job.failures = 2;
    store_job_put (st, &anchors[4], &job, false);
    //  A job without a payload (a dead letter made of one crashed every restart once).
    job = (store_job_t) {.id = 6, .entity = "a", .msg_key = "demo/c/6", .chat = "demo/c",
                         .chat_kind = "group", .priority = 10, .created_ms = NOW - 5000,
                         .payload = NULL, .payload_size = 0, .history = ""};
    store_job_put (st, &anchors[5], &job, true);
    store_done (st, pkey_pair_fp ("b", "demo/c/0"), NOW - 2 * RETENTION);
    store_forget_done (st, pkey_pair_fp ("a", "demo/c/4"), 0);
    store_reserve (st, 2, NOW - 2000, "b", "demo/c", "group");
    store_reserve (st, 7, NOW - 1000, "a", "demo/c", "group");
    store_unreserve (st, 7);
    store_reserve (st, 8, NOW - 2 * HOUR, "a", "demo/c", "group");
    store_dead_t dead = {.id = 1, .msg_key = "demo/c/9", .entity = "a", .chat = "demo/c",
                         .chat_kind = "group", .priority = 50, .created_ms = NOW - 9000,
                         .dead_at = NOW - 8000, .attempts = 3,
                         .reason = "the LLM failed 3 times: HTTP 500", .history = "",
                         .payload = NULL, .payload_size = 0};
    store_dead_put (st, &anchors[6], &dead);
    dead = (store_dead_t) {.id = 2, .msg_key = "demo/c/10", .entity = "b", .chat = "demo/c",
                           .chat_kind = "group", .priority = 10, .maybe_posted = true,
                           .created_ms = NOW - 9000, .dead_at = NOW - 7000, .attempts = 1,
                           .reason = "Telegram 400: Bad Request: message is too long",
                           .history = "attempt 1: in doubt\n", .payload = payload,
                           .payload_size = (uint32_t) size};
    store_dead_put (st, &anchors[7], &dead);
    store_dead_gone (st, &anchors[7], 2);
    store_set_paused (st, "b", true);
    store_set_paused (st, "*", true);
    store_set_paused (st, "*", false);
    FUZZ_REQUIRE (store_commit (st) == 0, "commit");
    store_close (&st);
    pseen_destroy (&done);
    free (payload);
}

static void s_make_poller (const char *dir)
{
    char err[600];
    poller_store_t *st = poller_store_open_sized (dir, "off", 0, err, sizeof err);
    FUZZ_REQUIRE (st, err);
    pseen_t *seen = pseen_new (1000, RETENTION);
    poller_store_set_seen (st, seen);
    FUZZ_REQUIRE (poller_store_load (st, NOW, RETENTION, NULL, NULL) == 0, "empty load");
    const char *keys[] = {"demo/c/1", "demo/c/2", "web/x/3"};
    for (int i = 0; i < 3; i++) {
        pkey_fp_t fp = pkey_fp (keys[i], strlen (keys[i]));
        uint32_t tag = poller_store_mark_seen (st, fp, NOW - 1000 * (3 - i));
        pseen_add (seen, fp, NOW - 1000 * (3 - i), tag);
    }
    poller_store_cursor (st, "demo", "42");
    poller_store_cursor (st, "web", "1699999999000");
    poller_store_cursor (st, "demo", "43");
    size_t size;
    uint8_t *payload = s_message ("demo", "hello @a", &size);
    proto_job_spec_t items[2] = {
        {"demo/c/1", "a", "demo/c", "group", 10, (uint64_t) NOW - 3000, {payload, (uint32_t) size}},
        {"demo/c/2", "b", "demo/c", "group", 50, (uint64_t) NOW - 2000, {payload, (uint32_t) size}},
    };
    poller_store_anchor_t anchors[2];
    memset (anchors, 0, sizeof anchors);
    for (uint64_t seq = 1; seq <= 2; seq++) {
        proto_submit_t submit = {seq, items, seq};
        zmq_msg_t frame;
        FUZZ_REQUIRE (proto_encode (PROTO_SUBMIT, &submit, &frame) == 0, "submit encode");
        poller_store_batch (st, &anchors[seq - 1], seq, zmq_msg_data (&frame),
                            zmq_msg_size (&frame), (size_t) seq, true);
        zmq_msg_close (&frame);
    }
    poller_store_acked (st, &anchors[0], 1);
    FUZZ_REQUIRE (poller_store_commit (st) == 0, "commit");
    poller_store_anchor_drop (st, &anchors[1]);
    pseen_destroy (&seen);
    poller_store_close (&st);
    free (payload);
}

static void s_make_sink (const char *dir)
{
    char err[600];
    sink_store_t *st = sink_store_open (dir, "off", 0, err, sizeof err);
    FUZZ_REQUIRE (st, err);
    pseen_t *posted = pseen_new (1000, RETENTION), *doubted = pseen_new (1000, RETENTION);
    sink_store_set_pairs (st, posted, doubted);
    FUZZ_REQUIRE (sink_store_load (st, NOW, RETENTION, NULL, NULL, NULL) == 0, "empty load");
    size_t dsize, wsize;
    uint8_t *demo = s_message ("demo", "hello @a", &dsize);
    uint8_t *web = s_message ("web", "hi", &wsize);
    //  1: interrupted, and the JSONL destination has it (it went out);
    //  2: its first part went out (in doubt); 3: at the HTTP destination,
    //  which cannot tell (in doubt); 4: certainly not posted (asked again);
    //  5: an outcome not yet acknowledged; 6: forgotten.
    struct {
        const char *entity, *key, *chat;
        uint8_t *payload;
        size_t size;
        int64_t first_at;
    } m[6] = {
        {"a", "demo/c/1", "demo/c", demo, dsize, 0},
        {"b", "demo/c/2", "demo/c", demo, dsize, NOW - 1500},
        {"a", "web/x/3", "web/x", web, wsize, 0},
        {"a", "demo/c/4", "demo/c", demo, dsize, 0},
        {"b", "demo/c/5", "demo/c", demo, dsize, 0},
        {"b", "demo/c/6", "demo/c", demo, dsize, 0},
    };
    for (int i = 0; i < 6; i++) {
        sink_mark_t mark = {pkey_pair_fp (m[i].entity, m[i].key), (uint64_t) i + 1,
                            0xabc0 + (uint64_t) i, m[i].key, m[i].entity, m[i].chat, "group",
                            "a reply, with ünïcödé", m[i].payload, (uint32_t) m[i].size, 10,
                            NOW - 9000, NOW + 600000, 800, 42, NOW - 2000 + i, 0,
                            SINK_NO_OUTCOME, "", 0};
        sink_store_mark (st, &mark);
        if (m[i].first_at)
            sink_store_first (st, mark.pair, m[i].first_at);
    }
    sink_store_retoken (st, pkey_pair_fp ("a", "demo/c/4"), 4, 0xdef4);
    sink_store_outcome (st, pkey_pair_fp ("b", "demo/c/5"), PROTO_OUT_FAILED,
                        "Telegram 400: Bad Request: chat not found", NOW - 500);
    FUZZ_REQUIRE (sink_store_commit (st) == 0, "commit");
    sink_store_forget (st, pkey_pair_fp ("b", "demo/c/6"));
    sink_posted_t p = {pkey_pair_fp ("a", "demo/c/0"), "a", "demo/c", "group", NOW - 3000, false};
    pseen_add (posted, p.pair, p.at, sink_store_posted (st, &p));
    p = (sink_posted_t) {pkey_pair_fp ("b", "demo/c/00"), "b", "demo/c", "group", NOW - 2500, true};
    pseen_add (doubted, p.pair, p.at, sink_store_posted (st, &p));
    p = (sink_posted_t) {pkey_pair_fp ("a", "web/x/0"), "a", "web/x", "", NOW - 2 * HOUR, false};
    pseen_add (posted, p.pair, p.at, sink_store_posted (st, &p));
    FUZZ_REQUIRE (sink_store_commit (st) == 0, "commit");
    sink_store_set_pairs (st, NULL, NULL);
    sink_store_close (&st);
    pseen_destroy (&posted);
    pseen_destroy (&doubted);
    free (demo);
    free (web);
}

//  A journal's records, read back from its files.
typedef struct {
    uint8_t type;
    const unsigned char *data;
    size_t len;
    size_t segment;             //  index of its file
} s_rec_t;

typedef struct {
    s_buf_t files[MAX_SEGMENTS];
    size_t file_count;
    s_rec_t recs[256];
    size_t count;
} s_journal_t;

static int s_name_compare (const void *a, const void *b)
{
    return strcmp (*(char *const *) a, *(char *const *) b);
}

static void s_read_journal (const char *path, s_journal_t *j)
{
    memset (j, 0, sizeof *j);
    DIR *dir = opendir (path);
    FUZZ_REQUIRE (dir, path);
    char *names[MAX_SEGMENTS];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir (dir)))
        if (strlen (e->d_name) == 19 && strcmp (e->d_name + 16, ".pj") == 0 && n < MAX_SEGMENTS)
            names[n++] = strdup (e->d_name);
    closedir (dir);
    qsort (names, n, sizeof *names, s_name_compare);
    for (size_t i = 0; i < n; i++) {
        char file[512];
        snprintf (file, sizeof file, "%s/%s", path, names[i]);
        free (names[i]);
        FILE *f = fopen (file, "rb");
        FUZZ_REQUIRE (f, file);
        s_buf_t *b = &j->files[j->file_count++];
        unsigned char chunk[4096];
        size_t got;
        while ((got = fread (chunk, 1, sizeof chunk, f)) > 0)
            s_put (b, chunk, got);
        fclose (f);
        size_t off = PJOURNAL_HEADER_BYTES;
        while (off + PJOURNAL_RECORD_OVERHEAD <= b->len && j->count < 256) {
            const unsigned char *p = b->data + off;
            size_t len = (size_t) p[0] | (size_t) p[1] << 8 | (size_t) p[2] << 16
                         | (size_t) p[3] << 24;
            j->recs[j->count++] = (s_rec_t) {p[8], p + PJOURNAL_RECORD_OVERHEAD, len,
                                             j->file_count - 1};
            off += PJOURNAL_RECORD_OVERHEAD + len;
        }
    }
}

static void s_chunk (s_buf_t *b, uint8_t op, const void *data, size_t len)
{
    FUZZ_REQUIRE (len <= 0xFFFF, "chunk too long");
    unsigned char h[3] = {op, (unsigned char) len, (unsigned char) (len >> 8)};
    s_put (b, h, 3);
    s_put (b, data, len);
}

static void s_seed (const char *dir, const char *name, const s_buf_t *b)
{
    char path[512];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    s_write_file (path, b);
}

typedef enum { V_VALID, V_BAD_FIELD, V_SHORT_FIELD, V_BAD_CRC, V_TORN, V_SPLIT } s_variant_t;

//  The journal as an input of this target, with one kind of damage.
static void s_encode (const s_journal_t *j, uint8_t flags, s_variant_t v, s_buf_t *b)
{
    s_put (b, &flags, 1);
    size_t middle = j->count / 2;
    for (size_t i = 0; i < j->count; i++) {
        const s_rec_t *r = &j->recs[i];
        if (i > 0 && r->segment != j->recs[i - 1].segment)
            s_chunk (b, OP_SEGMENT, NULL, 0);
        if (v == V_SPLIT && i == middle)
            s_chunk (b, OP_SEGMENT, NULL, 0);
        if (i == middle && v == V_BAD_FIELD && r->len) {
            //  A field of the record changed, its crc right: the decoder must judge it.
            unsigned char *copy = malloc (r->len);
            memcpy (copy, r->data, r->len);
            copy[r->len / 2] ^= 0xA5;
            s_chunk (b, r->type, copy, r->len);
            free (copy);
        }
        else if (i == middle && v == V_SHORT_FIELD && r->len)
            s_chunk (b, r->type, r->data, r->len - 1);
        else if (i == middle && v == V_BAD_CRC) {
            unsigned char *copy = malloc (r->len + 1);
            copy[0] = r->type;
            memcpy (copy + 1, r->data, r->len);
            s_chunk (b, OP_BAD_CRC, copy, r->len + 1);
            free (copy);
        }
        else if (i + 1 == j->count && v == V_TORN) {
            s_buf_t whole = {0};
            s_chunk (&whole, r->type, r->data, r->len);
            s_put (b, whole.data, whole.len / 2);
            free (whole.data);
        }
        else
            s_chunk (b, r->type, r->data, r->len);
    }
}

static void s_make_corpus (const char *out)
{
    char dir[] = "/tmp/parley-fuzz-recovery-seeds-XXXXXX";
    FUZZ_REQUIRE (mkdtemp (dir), "mkdtemp");
    s_make_broker (dir);
    s_make_poller (dir);
    s_make_sink (dir);
    const char *names[3] = {"broker", "poller", "sink"};
    const char *variants[] = {"valid", "bad-field", "short-field", "bad-crc", "torn", "split"};
    for (int d = 0; d < 3; d++) {
        char path[512];
        snprintf (path, sizeof path, "%s/%s", dir, names[d]);
        s_journal_t j;
        s_read_journal (path, &j);
        for (int v = V_VALID; v <= V_SPLIT; v++) {
            s_buf_t b = {0};
            s_encode (&j, (uint8_t) d, (s_variant_t) v, &b);
            snprintf (path, sizeof path, "%s-%s", names[d], variants[v]);
            s_seed (out, path, &b);
            free (b.data);
        }
        //  Every loader reads this journal, at a later time, in small segments.
        s_buf_t b = {0};
        s_encode (&j, D_ALL | F_SMALL | F_BATCH | 2 << 5, V_VALID, &b);
        snprintf (path, sizeof path, "all-%s", names[d]);
        s_seed (out, path, &b);
        free (b.data);
        //  The file itself, and with one byte flipped (its crc then fails).
        for (int flip = 0; flip < 2; flip++) {
            s_buf_t raw = {0};
            uint8_t flags = (uint8_t) (d | F_RAW);
            s_put (&raw, &flags, 1);
            s_put (&raw, j.files[0].data, j.files[0].len);
            if (flip)
                raw.data[1 + j.files[0].len / 3] ^= 0x10;
            snprintf (path, sizeof path, "%s-raw%s", names[d], flip ? "-flipped" : "");
            s_seed (out, path, &raw);
            free (raw.data);
        }
        for (size_t i = 0; i < j.file_count; i++)
            free (j.files[i].data);
    }
    s_remove_tree (dir);
    printf ("seeds written to %s\n", out);
}

//  --- set-up --------------------------------------------------------------------------------

static void s_cleanup (void)
{
    zsock_destroy (&s_outcomes_out);
    zsock_destroy (&s_outcomes_in);
    pcfg_destroy (&s_config);
    if (*s_root)
        s_remove_tree (s_root);
}

int LLVMFuzzerInitialize (int *argc, char ***argv);

int LLVMFuzzerInitialize (int *argc, char ***argv)
{
    //  Quiet, unless PARLEY_FUZZ_LOG names a level (to watch one input load).
    const char *level = getenv ("PARLEY_FUZZ_LOG");
    plog_init ("fuzz", level && plog_level_parse (level) >= 0 ? plog_level_parse (level) : PLOG_ERROR);
    const char *base = access ("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf (s_root, sizeof s_root, "%s/parley-fuzz-recovery-%d", base, (int) getpid ());
    s_remove_tree (s_root);
    FUZZ_REQUIRE (mkdir (s_root, 0755) == 0, "cannot make the scratch directory");
    //  The JSONL destination's file: what it holds was posted before the restart.
    char posted[400];
    snprintf (posted, sizeof posted, "%s/posted.jsonl", s_root);
    FILE *f = fopen (posted, "w");
    FUZZ_REQUIRE (f, "posted.jsonl");
    fputs ("{\"msg_key\": \"demo/c/1\", \"entity\": \"a\", \"text\": \"hi\"}\n{\"msg_key\": \"demo/c/", f);
    fclose (f);
    char json[2048];
    snprintf (json, sizeof json,
              "{\"storage\": {\"dataDir\": \"%s\", \"fsync\": \"off\", \"dedupeMaxKeys\": 1000},"
              " \"entities\": [{\"id\": \"a\", \"rateLimits\": {\"maxPostsPerMinute\": 3}},"
              "   {\"id\": \"b\", \"rateLimits\": {\"minSecondsBetweenPosts\": 5}}],"
              " \"chatLimits\": [{\"source\": \"demo\", \"chatKind\": \"*\","
              "   \"maxPostsPerHour\": 20}],"
              " \"botSettings\": {\"maxTotalMessagesPerMinute\": 30},"
              " \"poller\": {\"sources\": [{\"name\": \"demo\", \"type\": \"demo\"},"
              "   {\"name\": \"web\", \"type\": \"demo\"}]},"
              " \"sink\": {\"destinations\": ["
              "   {\"name\": \"log\", \"type\": \"jsonl\", \"source\": \"demo\", \"path\": \"%s\"},"
              "   {\"name\": \"api\", \"type\": \"http\", \"source\": \"*\","
              "    \"url\": \"http://127.0.0.1:9/post\"}]}}",
              s_root, posted);
    char err[512];
    s_config = pcfg_load_string (json, "fuzz", false, err, sizeof err);
    if (!s_config) {
        fprintf (stderr, "fuzz_recovery: configuration: %s\n", err);
        abort ();
    }
    s_outcomes_in = zsock_new_pair ("@inproc://fuzz-recovery-outcomes");
    s_outcomes_out = zsock_new_pair (">inproc://fuzz-recovery-outcomes");
    FUZZ_REQUIRE (s_outcomes_in && s_outcomes_out, "sockets");
    atexit (s_cleanup);
    //  libFuzzer leaves arguments that start with "--" alone.
    for (int i = 1; argc && i + 1 < *argc; i++)
        if (strcmp ((*argv)[i], "--make-corpus") == 0) {
            s_make_corpus ((*argv)[i + 1]);
            exit (0);
        }
    return 0;
}
