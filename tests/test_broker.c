/*  test_broker - the broker actor in-process: leases, reconciliation, isolation,
    busy refusals, verdicts and holds, roles. Each test starts the real actor on
    inproc endpoints and speaks the protocol to it over real ZeroMQ sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "broker/broker.h"
#include "broker/store.h"
#include "common/pseen.h"
#include "common/palloc.h"
#include "proto/proto_sock.h"

#include <string.h>

#define WAIT_MS 3000

typedef struct {
    pcfg_t *config;
    zactor_t *actor;
    zsock_t *poller;            //  DEALER on the frontend
    zsock_t *sink;              //  DEALER on the frontend
    int n;                      //  endpoint suffix
    uint64_t seq;
} s_broker_t;

static int s_instance;
static const char *s_data_dir = "";     //  storage.dataDir of the next broker started
static uint64_t s_epoch;     //  the epoch of the broker under test, from its WELCOMEs

static void s_start_lease (s_broker_t *b, int lease_ms, const char *extra_queue, const char *extra_top)
{
    memset (b, 0, sizeof *b);
    b->n = ++s_instance;
    char json[4096];
    snprintf (json, sizeof json,
              "{\"storage\": {\"dataDir\": \"%s\"},"
              " \"network\": {\"brokerFrontend\": \"inproc://front-%d\", \"brokerBackend\": \"inproc://back-%d\","
              "   \"heartbeatMs\": 100},"
              " \"queueSettings\": {\"globalMaxInFlight\": 0, \"perEntityMaxInFlight\": 0,"
              "   \"staleClaimTimeout\": %d, \"retryBaseMs\": 10, \"retryMaxMs\": 20, \"maxAgeSeconds\": 0,"
              "   \"maxAgeByClass\": {\"normal\": 0, \"low\": 0},"
              "   \"responseDelays\": {\"urgent\": {\"minMs\": 0, \"maxMs\": 0}, \"normal\": {\"minMs\": 0, \"maxMs\": 0},"
              "     \"low\": {\"minMs\": 0, \"maxMs\": 0}}%s},"
              " \"entities\": [{\"id\": \"a\"}, {\"id\": \"b\"}]%s}",
              s_data_dir, b->n, b->n, lease_ms, extra_queue ? extra_queue : "", extra_top ? extra_top : "");
    char err[512];
    b->config = pcfg_load_string (json, "test", false, err, sizeof err);
    assert_non_null (b->config);
    static broker_args_t args;
    args = (broker_args_t) {b->config, NULL};
    b->actor = zactor_new (broker_server, &args);
    assert_non_null (b->actor);
    char ep[64];
    snprintf (ep, sizeof ep, ">inproc://front-%d", b->n);
    b->poller = zsock_new_dealer (ep);
    b->sink = zsock_new_dealer (ep);
}

static void s_start (s_broker_t *b, const char *extra_queue, const char *extra_top)
{
    s_start_lease (b, 600, extra_queue, extra_top);
}

static void s_stop (s_broker_t *b)
{
    zsock_destroy (&b->poller);
    zsock_destroy (&b->sink);
    zactor_destroy (&b->actor);
    pcfg_destroy (&b->config);
}

static zsock_t *s_worker (s_broker_t *b, const char *id)
{
    char ep[64];
    snprintf (ep, sizeof ep, "inproc://back-%d", b->n);
    zsock_t *w = zsock_new (ZMQ_DEALER);
    zsock_set_identity (w, id);
    assert_int_equal (zsock_connect (w, "%s", ep), 0);
    return w;
}

//  Receives the next message of `type` within `wait_ms` (others are skipped);
//  false on timeout. A VERDICT is taken only if it was `pushed` at dispatch
//  or only if it answers a COMMIT, as asked.
static bool s_recv_within (zsock_t *sock, proto_type_t type, bool pushed, proto_msg_t *msg,
                           int wait_ms)
{
    int64_t until = zclock_mono () + wait_ms;
    zpoller_t *poller = zpoller_new (sock, NULL);
    bool got = false;
    while (!got && zclock_mono () < until) {
        if (!zpoller_wait (poller, (int) (until - zclock_mono ())))
            continue;
        char why[256];
        if (proto_recv (sock, msg, NULL, why, sizeof why) != PROTO_OK)
            continue;
        if (msg->type == PROTO_WELCOME)
            s_epoch = msg->body.welcome.epoch;
        if (msg->type == type
            && (type != PROTO_VERDICT || (msg->body.verdict.seq == PROTO_VERDICT_PUSHED) == pushed))
            got = true;
        else
            proto_msg_release (msg);
    }
    zpoller_destroy (&poller);
    return got;
}

static bool s_expect_within (zsock_t *sock, proto_type_t type, proto_msg_t *msg, int wait_ms)
{
    return s_recv_within (sock, type, false, msg, wait_ms);
}

static bool s_expect (zsock_t *sock, proto_type_t type, proto_msg_t *msg)
{
    return s_expect_within (sock, type, msg, WAIT_MS);
}

static void s_heartbeat (zsock_t *w, uint64_t capacity, uint64_t job_seq, proto_ref_t *held, size_t n)
{
    proto_heartbeat_t hb = {"w", capacity, capacity, NULL, 0, "host", 1, 0, job_seq, held, n, s_epoch};
    assert_int_equal (proto_send (w, PROTO_HEARTBEAT, &hb), 0);
}

static void s_submit (s_broker_t *b, int first, int count, const char *entity)
{
    proto_job_spec_t *items = pcalloc ((size_t) count, sizeof *items);
    char (*keys)[64] = pcalloc ((size_t) count, 64);
    for (int i = 0; i < count; i++) {
        snprintf (keys[i], 64, "src/chat/m%d", first + i);
        items[i] = (proto_job_spec_t) {keys[i], entity, "src/chat", "group", 10, (uint64_t) zclock_time (),
                                       {(const uint8_t *) "\x90", 1}};
    }
    proto_submit_t submit = {++b->seq, items, (size_t) count};
    assert_int_equal (proto_send (b->poller, PROTO_SUBMIT, &submit), 0);
    free (items);
    free (keys);
}

static json_t *s_ctl (s_broker_t *b, const char *command, const char *arg)
{
    const char *args[] = {arg};
    proto_ctl_t ctl = {++b->seq, command, args, arg ? 1 : 0};
    assert_int_equal (proto_send (b->poller, PROTO_CTL, &ctl), 0);
    proto_msg_t msg;
    assert_true (s_expect (b->poller, PROTO_CTL_REPLY, &msg));
    json_t *body = json_loads (msg.body.ctl_reply.body, 0, NULL);
    proto_msg_release (&msg);
    return body;
}

static int64_t s_stat (s_broker_t *b, const char *name)
{
    json_t *stats = s_ctl (b, "stats", NULL);
    int64_t v = json_integer_value (json_object_get (stats, name));
    json_decref (stats);
    return v;
}

//  Waits until stats[name] >= value.
static bool s_stat_reaches (s_broker_t *b, const char *name, int64_t value)
{
    int64_t until = zclock_mono () + WAIT_MS;
    while (zclock_mono () < until) {
        if (s_stat (b, name) >= value)
            return true;
        zclock_sleep (20);
    }
    return false;
}

//  --- tests ------------------------------------------------------------------------------

//  A JOB frame the worker never saw is taken back at its next heartbeat, not after a lease.
static void test_lost_frame_is_reclaimed_at_once (void **state)
{
    (void) state;
    s_broker_t b;
    s_start_lease (&b, 60000, NULL, NULL);
    zsock_t *w = s_worker (&b, "W:t1");
    s_heartbeat (w, 8, 0, NULL, 0);
    proto_msg_t msg;
    assert_true (s_expect (w, PROTO_WELCOME, &msg));
    proto_msg_release (&msg);
    s_submit (&b, 0, 3, "a");
    assert_true (s_expect (w, PROTO_JOB, &msg));
    assert_int_equal (msg.body.job.count, 3);
    uint64_t seq = msg.body.job.seq;
    assert_true (seq > 0);
    proto_ref_t held[2] = {{msg.body.job.items[0].job_id, msg.body.job.items[0].token},
                           {msg.body.job.items[1].job_id, msg.body.job.items[1].token}};
    uint64_t lost_id = msg.body.job.items[2].job_id, lost_token = msg.body.job.items[2].token;
    //  Tokens are random: not consecutive, not small.
    assert_true (held[0].token != held[1].token);
    assert_true (held[1].token - held[0].token != 1 && held[0].token > 0xffffffffULL);
    proto_msg_release (&msg);
    //  The worker says it has seen frame `seq` but holds only two of its jobs.
    s_heartbeat (w, 8, seq, held, 2);
    assert_true (s_expect (w, PROTO_JOB, &msg));
    //  The third comes again at once, with a new token, in a later frame.
    assert_int_equal (msg.body.job.count, 1);
    assert_int_equal (msg.body.job.items[0].job_id, lost_id);
    assert_true (msg.body.job.items[0].token != lost_token);
    assert_true (msg.body.job.seq > seq);
    proto_msg_release (&msg);
    assert_int_equal (s_stat (&b, "reclaimed"), 1);
    assert_int_equal (s_stat (&b, "retried"), 0);
    zsock_destroy (&w);
    s_stop (&b);
}

//  Refs a worker holds that are not its come back in WELCOME.cancel; credit counts them.
static void test_zombies_are_cancelled (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, NULL, NULL);
    zsock_t *w = s_worker (&b, "W:t2");
    proto_ref_t zombie[] = {{777, 0x1234567890ULL}};
    s_heartbeat (w, 2, 0, zombie, 1);
    proto_msg_t msg;
    assert_true (s_expect (w, PROTO_WELCOME, &msg));
    assert_int_equal (msg.body.welcome.cancel_count, 1);
    assert_int_equal (msg.body.welcome.cancel[0].job_id, 777);
    assert_int_equal (msg.body.welcome.cancel[0].token, 0x1234567890ULL);
    assert_true (msg.body.welcome.max_hold_ms > 0);
    proto_msg_release (&msg);
    //  Capacity 2, one slot taken by the zombie: only one job comes.
    s_submit (&b, 0, 2, "a");
    assert_true (s_expect (w, PROTO_JOB, &msg));
    assert_int_equal (msg.body.job.count, 1);
    proto_msg_release (&msg);
    assert_int_equal (s_stat (&b, "cancelled"), 1);
    zsock_destroy (&w);
    s_stop (&b);
}

//  A worker announcing a huge capacity gets at most worker.maxCapacity jobs.
static void test_capacity_is_capped (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, NULL, ", \"worker\": {\"maxCapacity\": 3}");
    zsock_t *w = s_worker (&b, "W:t3");
    s_heartbeat (w, 0xffffffffULL, 0, NULL, 0);
    s_submit (&b, 0, 10, "a");
    proto_msg_t msg;
    assert_true (s_expect (w, PROTO_JOB, &msg));
    size_t got = msg.body.job.count;
    proto_msg_release (&msg);
    assert_int_equal (got, 3);
    assert_int_equal (s_stat (&b, "in_flight"), 3);
    zsock_destroy (&w);
    s_stop (&b);
}

//  Past maxQueueSize jobs are refused as busy, never acknowledged and dropped.
static void test_full_queue_says_busy (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, ", \"maxQueueSize\": 2", NULL);
    s_submit (&b, 0, 5, "a");
    proto_msg_t msg;
    assert_true (s_expect (b.poller, PROTO_ACK, &msg));
    assert_int_equal (msg.body.ack.accepted, 2);
    assert_int_equal (msg.body.ack.rejected_count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal (msg.body.ack.rejected[i].code, PROTO_REJECT_BUSY);
        assert_int_equal (msg.body.ack.rejected[i].index, 2 + i);
    }
    assert_true (msg.body.ack.retry_after_ms > 0);
    proto_msg_release (&msg);
    //  Refused is not done: the same jobs are accepted once there is room.
    zsock_t *w = s_worker (&b, "W:t4");
    s_heartbeat (w, 8, 0, NULL, 0);
    assert_true (s_expect (w, PROTO_JOB, &msg));
    proto_msg_release (&msg);
    s_submit (&b, 2, 3, "a");
    assert_true (s_expect (b.poller, PROTO_ACK, &msg));
    assert_int_equal (msg.body.ack.accepted + msg.body.ack.rejected_count, 3);
    assert_true (msg.body.ack.accepted >= 2);
    assert_int_equal (msg.body.ack.duplicates, 0);
    proto_msg_release (&msg);
    zsock_destroy (&w);
    s_stop (&b);
}

//  Every invalid job of a large SUBMIT is listed in the ACK (up to the bound).
static void test_ack_lists_every_reject (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, NULL, NULL);
    s_submit (&b, 0, 5000, "nobody");
    proto_msg_t msg;
    assert_true (s_expect (b.poller, PROTO_ACK, &msg));
    assert_int_equal (msg.body.ack.rejected_count, 5000);
    assert_int_equal (msg.body.ack.rejected_more, 0);
    assert_int_equal (msg.body.ack.rejected[4999].index, 4999);
    assert_int_equal (msg.body.ack.rejected[4999].code, PROTO_REJECT_INVALID);
    assert_string_equal (msg.body.ack.rejected[0].reason, "unknown entity");
    proto_msg_release (&msg);
    s_stop (&b);
}

//  The verdict carries the job as the broker has it; a sink that stops holding
//  it loses it to a new dispatch, and the old attempt is stale.
static void test_verdict_fields_and_sink_hold (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, NULL, NULL);
    zsock_t *w = s_worker (&b, "W:t5");
    s_heartbeat (w, 8, 0, NULL, 0);
    s_submit (&b, 0, 1, "b");
    proto_msg_t msg;
    assert_true (s_expect (w, PROTO_JOB, &msg));
    proto_ref_t ref = {msg.body.job.items[0].job_id, msg.body.job.items[0].token};
    uint64_t seq = msg.body.job.seq;
    proto_msg_release (&msg);
    proto_release_item_t done = {ref.job_id, ref.token, PROTO_REL_DONE, "", 0};
    proto_release_t release = {&done, 1};
    assert_int_equal (proto_send (w, PROTO_RELEASE, &release), 0);
    proto_commit_item_t item = {ref.job_id, ref.token, 0};
    proto_commit_t commit = {1, &item, 1};
    assert_int_equal (proto_send (b.sink, PROTO_COMMIT, &commit), 0);
    assert_true (s_expect (b.sink, PROTO_VERDICT, &msg));
    assert_int_equal (msg.body.verdict.items[0].verdict, PROTO_VERDICT_POST);
    assert_string_equal (msg.body.verdict.items[0].entity, "b");
    assert_string_equal (msg.body.verdict.items[0].msg_key, "src/chat/m0");
    assert_string_equal (msg.body.verdict.items[0].chat, "src/chat");
    assert_string_equal (msg.body.verdict.items[0].chat_kind, "group");
    assert_int_equal (msg.body.verdict.items[0].payload.size, 1);
    assert_int_equal (msg.body.verdict.lease_ms, 600);
    proto_msg_release (&msg);
    //  A renewal is answered without the fields.
    item.hold = 1;
    assert_int_equal (proto_send (b.sink, PROTO_COMMIT, &commit), 0);
    assert_true (s_expect (b.sink, PROTO_VERDICT, &msg));
    assert_int_equal (msg.body.verdict.items[0].verdict, PROTO_VERDICT_POST);
    assert_string_equal (msg.body.verdict.items[0].entity, "");
    proto_msg_release (&msg);
    //  No more renewals: after the lease (600 ms) the job goes out again.
    int64_t until = zclock_mono () + WAIT_MS;
    bool again = false;
    while (!again && zclock_mono () < until) {
        s_heartbeat (w, 8, seq, NULL, 0);
        if (s_expect_within (w, PROTO_JOB, &msg, 100)) {
            again = msg.body.job.items[0].job_id == ref.job_id && msg.body.job.items[0].token != ref.token;
            proto_msg_release (&msg);
        }
    }
    assert_true (again);
    assert_int_equal (s_stat (&b, "sink_expired"), 1);
    //  The old attempt is now stale.
    item.hold = 0;
    assert_int_equal (proto_send (b.sink, PROTO_COMMIT, &commit), 0);
    assert_true (s_expect (b.sink, PROTO_VERDICT, &msg));
    assert_int_equal (msg.body.verdict.items[0].verdict, PROTO_VERDICT_STALE);
    proto_msg_release (&msg);
    zsock_destroy (&w);
    s_stop (&b);
}

//  The sink's COMMIT may overtake the worker's RELEASE: the job leaves the
//  worker's concurrency then, and a lapsed hold still brings it back.
static void test_commit_before_release (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, NULL, NULL);
    zsock_t *w = s_worker (&b, "W:cbr");
    s_heartbeat (w, 8, 0, NULL, 0);
    s_submit (&b, 0, 1, "a");
    proto_msg_t msg;
    assert_true (s_expect (w, PROTO_JOB, &msg));
    proto_ref_t ref = {msg.body.job.items[0].job_id, msg.body.job.items[0].token};
    uint64_t seq = msg.body.job.seq;
    proto_msg_release (&msg);
    proto_commit_item_t item = {ref.job_id, ref.token, 0};
    proto_commit_t commit = {1, &item, 1};
    assert_int_equal (proto_send (b.sink, PROTO_COMMIT, &commit), 0);
    assert_true (s_expect (b.sink, PROTO_VERDICT, &msg));
    assert_int_equal (msg.body.verdict.items[0].verdict, PROTO_VERDICT_POST);
    proto_msg_release (&msg);
    assert_int_equal (s_stat (&b, "in_flight"), 0);
    assert_int_equal (s_stat (&b, "awaiting_post"), 1);
    //  No RELEASE and no renewal: the hold lapses and the job goes out again.
    bool again = false;
    int64_t until = zclock_mono () + WAIT_MS;
    while (!again && zclock_mono () < until) {
        s_heartbeat (w, 8, seq, &ref, 1);
        if (s_expect_within (w, PROTO_JOB, &msg, 100)) {
            again = msg.body.job.items[0].job_id == ref.job_id;
            proto_msg_release (&msg);
        }
    }
    assert_true (again);
    zsock_destroy (&w);
    s_stop (&b);
}

//  A sink speaks to the broker (STATS) and has its answer.
static void s_sink_hello (s_broker_t *b)
{
    proto_component_t me = {"sink", "s1", NULL, 0};
    proto_stats_t hello = {1, &me, 1};
    assert_int_equal (proto_send (b->sink, PROTO_STATS, &hello), 0);
    proto_msg_t msg;
    assert_true (s_expect (b->sink, PROTO_STATS, &msg));
    proto_msg_release (&msg);
}

//  Once a sink has spoken, each dispatch pushes it the job's post verdict
//  with the JOB; the sink may then claim the job (hold = 1, answered
//  without fields) or report its outcome without asking. Outcomes for
//  another token are ignored; a sink that is gone gets nothing pushed, and
//  one that comes back gets the verdicts again once it speaks.
static void test_pushed_verdicts (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, NULL, NULL);
    zsock_t *w = s_worker (&b, "W:push");
    s_heartbeat (w, 8, 0, NULL, 0);
    s_sink_hello (&b);
    proto_msg_t msg;
    s_submit (&b, 0, 2, "a");
    proto_ref_t refs[2];
    size_t got = 0;
    while (got < 2) {
        assert_true (s_expect (w, PROTO_JOB, &msg));
        for (size_t i = 0; i < msg.body.job.count && got < 2; i++)
            refs[got++] = (proto_ref_t) {msg.body.job.items[i].job_id, msg.body.job.items[i].token};
        proto_msg_release (&msg);
    }
    got = 0;
    while (got < 2) {
        assert_true (s_recv_within (b.sink, PROTO_VERDICT, true, &msg, WAIT_MS));
        assert_int_equal (msg.body.verdict.lease_ms, 600);
        for (size_t i = 0; i < msg.body.verdict.count; i++, got++) {
            const proto_verdict_item_t *v = &msg.body.verdict.items[i];
            assert_true (got < 2);
            assert_int_equal (v->job_id, refs[got].job_id);
            assert_int_equal (v->token, refs[got].token);
            assert_int_equal (v->verdict, PROTO_VERDICT_POST);
            assert_string_equal (v->entity, "a");
            assert_string_equal (v->chat, "src/chat");
            assert_string_equal (v->chat_kind, "group");
            assert_int_equal (v->payload.size, 1);
        }
        proto_msg_release (&msg);
    }
    assert_int_equal (s_stat (&b, "verdicts_pushed"), 2);
    //  The first is posted at once: its outcome is its claim.
    proto_outcome_item_t posted = {refs[0].job_id, refs[0].token, PROTO_OUT_POSTED, "", 0};
    proto_outcome_t outcome = {1, &posted, 1};
    assert_int_equal (proto_send (b.sink, PROTO_OUTCOME, &outcome), 0);
    assert_true (s_expect (b.sink, PROTO_OUTCOME_ACK, &msg));
    proto_msg_release (&msg);
    assert_int_equal (s_stat (&b, "posted"), 1);
    //  The second waits at the sink: claimed, answered without the fields.
    proto_commit_item_t claim = {refs[1].job_id, refs[1].token, 1};
    proto_commit_t commit = {1, &claim, 1};
    assert_int_equal (proto_send (b.sink, PROTO_COMMIT, &commit), 0);
    assert_true (s_expect (b.sink, PROTO_VERDICT, &msg));
    assert_int_equal (msg.body.verdict.items[0].verdict, PROTO_VERDICT_POST);
    assert_string_equal (msg.body.verdict.items[0].entity, "");
    proto_msg_release (&msg);
    assert_int_equal (s_stat (&b, "awaiting_post"), 1);
    //  An outcome naming another token changes nothing.
    posted = (proto_outcome_item_t) {refs[1].job_id, refs[1].token ^ 1, PROTO_OUT_POSTED, "", 0};
    outcome.seq = 2;
    assert_int_equal (proto_send (b.sink, PROTO_OUTCOME, &outcome), 0);
    assert_true (s_expect (b.sink, PROTO_OUTCOME_ACK, &msg));
    proto_msg_release (&msg);
    assert_int_equal (s_stat (&b, "posted"), 1);
    assert_int_equal (s_stat (&b, "awaiting_post"), 1);
    posted.token = refs[1].token;
    outcome.seq = 3;
    assert_int_equal (proto_send (b.sink, PROTO_OUTCOME, &outcome), 0);
    assert_true (s_expect (b.sink, PROTO_OUTCOME_ACK, &msg));
    proto_msg_release (&msg);
    assert_int_equal (s_stat (&b, "posted"), 2);
    //  The sink goes: the next job still reaches its worker, and nothing is
    //  pushed after the frame that could not be delivered.
    zsock_destroy (&b.sink);
    zclock_sleep (50);
    s_submit (&b, 2, 1, "a");
    assert_true (s_expect (w, PROTO_JOB, &msg));
    proto_msg_release (&msg);
    s_submit (&b, 3, 1, "a");
    assert_true (s_expect (w, PROTO_JOB, &msg));
    proto_msg_release (&msg);
    int64_t pushed = s_stat (&b, "verdicts_pushed");
    assert_true (pushed <= 3);
    //  A sink comes back: from its first word on, it gets them again.
    char ep[64];
    snprintf (ep, sizeof ep, ">inproc://front-%d", b.n);
    b.sink = zsock_new_dealer (ep);
    s_sink_hello (&b);
    s_submit (&b, 4, 1, "a");
    assert_true (s_expect (w, PROTO_JOB, &msg));
    uint64_t job_id = msg.body.job.items[0].job_id;
    proto_msg_release (&msg);
    assert_true (s_recv_within (b.sink, PROTO_VERDICT, true, &msg, WAIT_MS));
    assert_int_equal (msg.body.verdict.items[0].job_id, job_id);
    assert_string_equal (msg.body.verdict.items[0].msg_key, "src/chat/m4");
    proto_msg_release (&msg);
    assert_int_equal (s_stat (&b, "verdicts_pushed"), pushed + 1);
    zsock_destroy (&w);
    s_stop (&b);
}

//  A job whose workers die holding it runs alone, and is dead-lettered only
//  when it kills a worker while alone.
static void test_suspect_runs_alone (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, ", \"maxRetries\": 0", NULL);
    proto_msg_t msg;
    //  Two deaths with company: w1 and w2 take two jobs each and go silent.
    s_submit (&b, 0, 2, "a");
    for (int round = 0; round < 2; round++) {
        char id[16];
        snprintf (id, sizeof id, "W:die%d", round);
        zsock_t *w = s_worker (&b, id);
        s_heartbeat (w, 8, 0, NULL, 0);
        //  Both jobs (retried with a little backoff, maybe in separate frames).
        size_t got = 0;
        while (got < 2 && s_expect (w, PROTO_JOB, &msg)) {
            got += msg.body.job.count;
            proto_msg_release (&msg);
        }
        assert_int_equal (got, 2);
        zsock_destroy (&w);     //  silent from now on
        assert_true (s_stat_reaches (&b, "lost_workers", round + 1));
    }
    assert_int_equal (s_stat (&b, "dead"), 0);
    //  Now both are suspects: each goes out alone, to a worker holding nothing.
    zsock_t *w = s_worker (&b, "W:alone");
    s_heartbeat (w, 8, 0, NULL, 0);
    assert_true (s_expect (w, PROTO_JOB, &msg));
    assert_int_equal (msg.body.job.count, 1);
    proto_msg_release (&msg);
    //  While it holds one, it gets no other job.
    s_heartbeat (w, 8, 0, NULL, 0);
    assert_false (s_expect_within (w, PROTO_JOB, &msg, 300));
    zsock_destroy (&w);         //  it dies alone: that one is dead-lettered (maxRetries 0)
    assert_true (s_stat_reaches (&b, "dead", 1));
    json_t *dlq = s_ctl (&b, "dlq-list", NULL);
    const char *reason = json_string_value (json_object_get (json_array_get (json_object_get (dlq, "items"), 0), "reason"));
    assert_non_null (strstr (reason, "killed its worker while running alone"));
    json_decref (dlq);
    s_stop (&b);
}

//  A job held past maxHoldMs is taken back even if every heartbeat lists it.
static void test_max_hold (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, ", \"maxHoldMs\": 1000, \"maxRetries\": 5", NULL);
    zsock_t *w = s_worker (&b, "W:hog");
    s_heartbeat (w, 1, 0, NULL, 0);
    s_submit (&b, 0, 1, "a");
    proto_msg_t msg;
    assert_true (s_expect (w, PROTO_JOB, &msg));
    proto_ref_t ref = {msg.body.job.items[0].job_id, msg.body.job.items[0].token};
    uint64_t seq = msg.body.job.seq;
    proto_msg_release (&msg);
    int64_t until = zclock_mono () + 2500;
    while (zclock_mono () < until) {
        s_heartbeat (w, 1, seq, &ref, 1);
        zclock_sleep (100);
    }
    assert_true (s_stat (&b, "retried") >= 1);
    json_t *entities = s_ctl (&b, "workers", NULL);
    json_decref (entities);
    zsock_destroy (&w);
    s_stop (&b);
}

//  A message on the wrong socket is dropped and counted, and the broker serves on.
static void test_wrong_socket (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, NULL, NULL);
    s_heartbeat (b.poller, 4, 0, NULL, 0);     //  a HEARTBEAT on the frontend
    zsock_t *w = s_worker (&b, "W:t9");
    s_submit (&b, 0, 0, "a");
    proto_submit_t submit = {1, NULL, 0};
    assert_int_equal (proto_send (w, PROTO_SUBMIT, &submit), 0);   //  a SUBMIT on the backend
    assert_true (s_stat_reaches (&b, "malformed", 2));
    zsock_destroy (&w);
    s_stop (&b);
}

//  A heartbeat on a routing id ZeroMQ made (the sender set none, or it is a
//  leftover of a replaced connection) registers no worker: nothing could be
//  sent there, and jobs would bounce off it.
static void test_generated_routing_id_is_not_a_worker (void **state)
{
    (void) state;
    s_broker_t b;
    s_start (&b, NULL, NULL);
    char ep[64];
    snprintf (ep, sizeof ep, "inproc://back-%d", b.n);
    zsock_t *anon = zsock_new (ZMQ_DEALER);
    assert_int_equal (zsock_connect (anon, "%s", ep), 0);
    s_heartbeat (anon, 4, 0, NULL, 0);
    assert_true (s_stat_reaches (&b, "refused", 1));
    proto_msg_t msg;
    assert_false (s_expect_within (anon, PROTO_WELCOME, &msg, 300));
    //  The control: the same with a routing id of its own is welcomed.
    zsock_t *w = s_worker (&b, "W:named");
    s_heartbeat (w, 4, 0, NULL, 0);
    assert_true (s_expect (w, PROTO_WELCOME, &msg));
    proto_msg_release (&msg);
    assert_true (s_stat_reaches (&b, "workers", 1));
    zsock_destroy (&anon);
    zsock_destroy (&w);
    s_stop (&b);
}


//  --- the store ----------------------------------------------------------------------------

static int s_reservations;
static void s_cb_job (void *arg, const store_job_t *job, uint64_t segment)
{
    (void) arg, (void) job, (void) segment;
}
static void s_cb_gone (void *arg, uint64_t id)
{
    (void) arg, (void) id;
}
static void s_cb_dead (void *arg, const store_dead_t *dead, uint64_t segment)
{
    (void) arg, (void) dead, (void) segment;
}
static void s_cb_reservation (void *arg, int64_t at, const char *entity, const char *chat,
                              const char *chat_kind)
{
    (void) arg, (void) at, (void) chat_kind;
    assert_string_equal (entity, "a");
    assert_string_equal (chat, "src/c");
    s_reservations++;
}
static void s_cb_paused (void *arg, const char *entity, bool paused)
{
    (void) arg, (void) entity, (void) paused;
}

//  A segment whose only live records are rate reservations is kept at load
//  (they are referenced while loading), and the reservations come back.
static void test_reservation_alone_in_a_segment (void **state)
{
    (void) state;
    char dir[] = "/tmp/parley-store-XXXXXX";
    assert_non_null (mkdtemp (dir));
    char err[256];
    int64_t now = zclock_time ();
    for (int round = 0; round < 2; round++) {
        store_t *store = store_open_sized (dir, "off", 1024, err, sizeof err);
        assert_non_null (store);
        pseen_t *done = pseen_new (100, 3600000);
        store_set_owner (store, NULL, NULL, done);
        store_callbacks_t fns = {s_cb_job, s_cb_gone, s_cb_dead, s_cb_gone, s_cb_reservation,
                                 s_cb_paused};
        s_reservations = 0;
        assert_int_equal (store_load (store, now, 3600000, &fns, NULL), 0);
        if (round == 0) {
            assert_int_equal (s_reservations, 0);
            store_reserve (store, 1, now, "a", "src/c", "group");
            //  Jobs that come and go fill the following segments; the
            //  reservation's segment holds nothing else alive.
            char payload[200];
            memset (payload, 'x', sizeof payload);
            for (uint64_t id = 2; id < 40; id++) {
                store_anchor_t anchor = {0};
                store_job_t job = {.id = id, .entity = "a", .msg_key = "src/c/1", .chat = "src/c",
                                   .chat_kind = "group", .priority = 50, .payload = payload,
                                   .payload_size = sizeof payload, .history = ""};
                store_job_put (store, &anchor, &job, false);
                store_job_gone (store, &anchor, id);
                assert_int_equal (store_commit (store), 0);
            }
        }
        else
            assert_int_equal (s_reservations, 1);
        assert_int_equal (store_commit (store), 0);
        store_close (&store);
        pseen_destroy (&done);
    }
    char cmd[300];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

//  A restart brings jobs back in the order they were first queued, whatever
//  order the journal holds them in: a job written again (a later attempt)
//  sits after jobs queued after it, and a job queued earlier can come later.
//  A job that finished is not brought back.
static void test_recovery_order (void **state)
{
    (void) state;
    char dir[] = "/tmp/parley-order-XXXXXX";
    assert_non_null (mkdtemp (dir));
    char err[256];
    store_t *store = store_open_sized (dir, "off", 0, err, sizeof err);
    assert_non_null (store);
    pseen_t *done = pseen_new (100, 3600000);
    store_set_owner (store, NULL, NULL, done);
    int64_t now = zclock_time ();
    store_callbacks_t fns = {s_cb_job, s_cb_gone, s_cb_dead, s_cb_gone, s_cb_reservation, s_cb_paused};
    assert_int_equal (store_load (store, now, 3600000, &fns, NULL), 0);
    store_anchor_t anchors[5];
    memset (anchors, 0, sizeof anchors);
    //  (job id, queued at): written in this order; job 1 twice, job 3 finishes.
    const struct {
        uint64_t id;
        int64_t queued_ago;
        uint32_t attempt;
    } writes[] = {{1, 4000, 0}, {2, 3000, 0}, {3, 2000, 0}, {1, 4000, 1}, {4, 5000, 0}};
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        char key[32];
        snprintf (key, sizeof key, "src/chat/m%" PRIu64, writes[i].id);
        store_job_t job = {.id = writes[i].id, .entity = "a", .msg_key = key, .chat = "src/chat",
                           .chat_kind = "group", .priority = 10, .created_ms = now - writes[i].queued_ago,
                           .enqueued_ms = now - writes[i].queued_ago, .attempt = writes[i].attempt,
                           .payload = "\x90", .payload_size = 1, .history = ""};
        store_job_put (store, &anchors[writes[i].id], &job, false);
    }
    store_job_gone (store, &anchors[3], 3);
    assert_int_equal (store_commit (store), 0);
    store_close (&store);
    pseen_destroy (&done);

    s_data_dir = dir;
    s_broker_t b;
    s_start (&b, NULL, NULL);
    s_data_dir = "";
    assert_int_equal (s_stat (&b, "queued"), 3);
    zsock_t *w = s_worker (&b, "W:order");
    s_heartbeat (w, 1, 0, NULL, 0);
    //  One at a time: each JOB is finished before the next is asked for.
    const char *expect[] = {"src/chat/m4", "src/chat/m1", "src/chat/m2"};
    proto_msg_t msg;
    for (size_t i = 0; i < 3; i++) {
        assert_true (s_expect (w, PROTO_JOB, &msg));
        assert_int_equal (msg.body.job.count, 1);
        assert_string_equal (msg.body.job.items[0].msg_key, expect[i]);
        if (i == 1)
            assert_int_equal (msg.body.job.items[0].attempt, 2);    //  the newer record
        proto_ref_t ref = {msg.body.job.items[0].job_id, msg.body.job.items[0].token};
        proto_msg_release (&msg);
        proto_release_item_t skip = {ref.job_id, ref.token, PROTO_REL_SKIP, "nothing to say", 0};
        proto_release_t release = {&skip, 1};
        assert_int_equal (proto_send (w, PROTO_RELEASE, &release), 0);
    }
    assert_false (s_expect_within (w, PROTO_JOB, &msg, 300));
    //  One (chat, entity) pair had work; its state stays until the sweep.
    assert_int_equal (s_stat (&b, "pairs"), 1);
    zsock_destroy (&w);
    s_stop (&b);
    char cmd[300];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_lost_frame_is_reclaimed_at_once),
        cmocka_unit_test (test_zombies_are_cancelled),
        cmocka_unit_test (test_capacity_is_capped),
        cmocka_unit_test (test_full_queue_says_busy),
        cmocka_unit_test (test_ack_lists_every_reject),
        cmocka_unit_test (test_verdict_fields_and_sink_hold),
        cmocka_unit_test (test_commit_before_release),
        cmocka_unit_test (test_pushed_verdicts),
        cmocka_unit_test (test_suspect_runs_alone),
        cmocka_unit_test (test_max_hold),
        cmocka_unit_test (test_wrong_socket),
        cmocka_unit_test (test_reservation_alone_in_a_segment),
        cmocka_unit_test (test_recovery_order),
        cmocka_unit_test (test_generated_routing_id_is_not_a_worker),
    };
    if (getenv ("TEST_FILTER"))
        cmocka_set_test_filter (getenv ("TEST_FILTER"));
    return cmocka_run_group_tests (tests, NULL, NULL);
}
