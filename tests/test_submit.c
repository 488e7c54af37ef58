/*  The poller's submit module with the clock passed in: jobs checked one by
    one, batches cut by count and frame size, invalid and busy rejects,
    busy waits (retry_after_ms, growing), the window, resends, and a reject
    list cut short. The "broker" is the other end of an inproc PAIR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "common/palloc.h"
#include "common/pconfig.h"
#include "common/prt.h"
#include "poller/submit.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    pcfg_t *config;
    zsock_t *poller;            //  submit's end
    zsock_t *broker;            //  the test's end
    submit_t *submit;
} s_fixture_t;

static int s_setup (void **state, const char *poller_json, const char *network_json)
{
    char text[1024], err[512] = "";
    snprintf (text, sizeof text, "{\"poller\": %s, \"network\": %s}", poller_json, network_json);
    s_fixture_t *f = pcalloc (1, sizeof *f);
    f->config = pcfg_load_string (text, "test", true, err, sizeof err);
    if (!f->config)
        fail_msg ("config: %s", err);
    char endpoint[64];
    static int count = 0;
    snprintf (endpoint, sizeof endpoint, "inproc://submit-%d", ++count);
    f->broker = zsock_new (ZMQ_PAIR);
    assert_int_equal (zsock_bind (f->broker, "%s", endpoint), 0);
    f->poller = zsock_new (ZMQ_PAIR);
    assert_int_equal (zsock_connect (f->poller, "%s", endpoint), 0);
    f->submit = submit_new (f->config, NULL);
    *state = f;
    return 0;
}

static int s_setup_default (void **state)
{
    return s_setup (state, "{\"submitWindow\": 10, \"submitBatch\": 4}", "{\"resendMs\": 2000}");
}

static int s_setup_small_frames (void **state)
{
    return s_setup (state, "{\"submitWindow\": 100, \"submitBatch\": 100}",
                    "{\"resendMs\": 2000, \"maxFrameBytes\": 1024}");
}

static int s_teardown (void **state)
{
    s_fixture_t *f = *state;
    submit_destroy (&f->submit);
    zsock_destroy (&f->poller);
    zsock_destroy (&f->broker);
    pcfg_destroy (&f->config);
    free (f);
    return 0;
}

//  A job the submit module takes over (everything allocated).
static proto_job_spec_t s_job (const char *msg_key, const char *entity, const char *chat,
                               uint64_t priority, size_t payload)
{
    uint8_t *data = pcalloc (payload ? payload : 1, 1);
    memset (data, 'x', payload);
    return (proto_job_spec_t) {pstrdup (msg_key), pstrdup (entity), pstrdup (chat), pstrdup ("group"),
                               priority, 1000, {data, (uint32_t) payload}};
}

static int s_add (s_fixture_t *f, const char *msg_key, size_t payload)
{
    proto_job_spec_t spec = s_job (msg_key, "alpha", "in/room", 10, payload);
    return submit_add (f->submit, &spec);
}

//  The next SUBMIT the broker end received, or fails; `msg` must be released.
static void s_recv_submit (s_fixture_t *f, proto_msg_t *msg)
{
    zmq_pollitem_t item = {zsock_resolve (f->broker), 0, ZMQ_POLLIN, 0};
    assert_int_equal (zmq_poll (&item, 1, 1000), 1);
    zmq_msg_t frame;
    zmq_msg_init (&frame);
    assert_true (zmq_msg_recv (&frame, zsock_resolve (f->broker), 0) >= 0);
    char why[256];
    assert_int_equal (proto_decode (zmq_msg_data (&frame), zmq_msg_size (&frame), msg, why, sizeof why),
                      PROTO_OK);
    zmq_msg_close (&frame);
    assert_int_equal (msg->type, PROTO_SUBMIT);
}

static bool s_nothing_sent (s_fixture_t *f)
{
    zmq_pollitem_t item = {zsock_resolve (f->broker), 0, ZMQ_POLLIN, 0};
    return zmq_poll (&item, 1, 20) == 0;
}

static void test_bad_jobs_are_refused_alone (void **state)
{
    s_fixture_t *f = *state;
    char long_chat[600];
    memset (long_chat, 'c', sizeof long_chat - 1);
    long_chat[sizeof long_chat - 1] = 0;
    proto_job_spec_t bad[] = {
        s_job ("in/room/1", "alpha", long_chat, 10, 10),        //  chat over 512 bytes
        s_job ("in/room/2", "al\xC3pha", "in/room", 10, 10),    //  invalid UTF-8
        s_job ("in/room/3", "alpha", "in/room", 120, 10),       //  priority over 99
        s_job ("", "alpha", "in/room", 10, 10),                 //  empty key
    };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal (submit_add (f->submit, &bad[i]), -1);
    assert_int_equal (s_add (f, "in/room/4", 10), 0);
    assert_int_equal (s_add (f, "in/room/5", 10), 0);
    assert_int_equal (submit_counters (f->submit)->invalid, 4);
    assert_int_equal (submit_outstanding (f->submit), 2);
    submit_flush (f->submit, 1000);
    submit_send (f->submit, f->poller, 1000);
    proto_msg_t msg;
    s_recv_submit (f, &msg);
    assert_int_equal (msg.body.submit.count, 2);
    assert_string_equal (msg.body.submit.items[0].msg_key, "in/room/4");
    assert_string_equal (msg.body.submit.items[1].msg_key, "in/room/5");
    proto_msg_release (&msg);
    assert_int_equal (submit_counters (f->submit)->submitted, 2);
}

static void test_busy_jobs_wait_and_hold_the_window (void **state)
{
    s_fixture_t *f = *state;
    for (int i = 0; i < 4; i++) {
        char key[32];
        snprintf (key, sizeof key, "in/room/%d", i);
        assert_int_equal (s_add (f, key, 10), 0);
    }
    submit_flush (f->submit, 1000);
    assert_int_equal (submit_room (f->submit), 6);
    submit_send (f->submit, f->poller, 1000);
    proto_msg_t msg;
    s_recv_submit (f, &msg);
    uint64_t seq = msg.body.submit.seq;
    proto_msg_release (&msg);

    //  0 invalid, 1 and 3 busy, 2 stored.
    proto_reject_t rejects[] = {{0, "unknown entity", PROTO_REJECT_INVALID},
                                {1, "queue full", PROTO_REJECT_BUSY},
                                {3, "queue full", PROTO_REJECT_BUSY}};
    proto_ack_t ack = {seq, 1, 0, rejects, 3, 300, 0};
    submit_on_ack (f->submit, &ack, 1010);
    const submit_counters_t *c = submit_counters (f->submit);
    assert_int_equal (c->accepted, 1);
    assert_int_equal (c->rejected, 1);
    assert_int_equal (c->busy, 2);
    assert_int_equal (c->acked, 2);
    //  The busy jobs keep their place in the window.
    assert_int_equal (submit_outstanding (f->submit), 2);
    assert_int_equal (submit_waiting (f->submit), 2);
    assert_int_equal (submit_room (f->submit), 8);
    //  No sooner than retry_after_ms (the first refusal waits exactly that).
    int64_t due = submit_wakeup (f->submit, 1010);
    assert_int_equal (due, 1310);
    submit_send (f->submit, f->poller, 1309);
    assert_true (s_nothing_sent (f));
    submit_send (f->submit, f->poller, 1310);
    s_recv_submit (f, &msg);
    assert_true (msg.body.submit.seq != seq);
    assert_int_equal (msg.body.submit.count, 2);
    assert_string_equal (msg.body.submit.items[0].msg_key, "in/room/1");
    assert_string_equal (msg.body.submit.items[1].msg_key, "in/room/3");
    seq = msg.body.submit.seq;
    proto_msg_release (&msg);
    assert_int_equal (c->resubmitted, 2);
    assert_int_equal (submit_waiting (f->submit), 0);
    assert_int_equal (submit_outstanding (f->submit), 2);

    //  Refused again: the wait grows (a second refusal waits 300..600 ms).
    proto_reject_t again[] = {{0, "queue full", PROTO_REJECT_BUSY}, {1, "queue full", PROTO_REJECT_BUSY}};
    ack = (proto_ack_t) {seq, 0, 0, again, 2, 300, 0};
    submit_on_ack (f->submit, &ack, 1320);
    due = submit_wakeup (f->submit, 1320);
    assert_in_range (due, 1620, 1920);
    submit_send (f->submit, f->poller, due);
    s_recv_submit (f, &msg);
    seq = msg.body.submit.seq;
    proto_msg_release (&msg);
    //  Taken at last: nothing outstanding, and an old ACK is ignored.
    ack = (proto_ack_t) {seq, 2, 0, NULL, 0, 0, 0};
    submit_on_ack (f->submit, &ack, due + 5);
    submit_on_ack (f->submit, &ack, due + 6);
    assert_int_equal (submit_outstanding (f->submit), 0);
    assert_int_equal (c->accepted, 3);
    assert_int_equal (c->acked, 4);
    assert_int_equal (c->busy, 4);
    assert_int_equal (submit_wakeup (f->submit, due + 6), PRT_NEVER);
}

static void test_unanswered_batches_are_resent (void **state)
{
    s_fixture_t *f = *state;
    assert_int_equal (s_add (f, "in/room/1", 10), 0);
    submit_flush (f->submit, 1000);
    submit_send (f->submit, f->poller, 1000);
    proto_msg_t first, again;
    s_recv_submit (f, &first);
    assert_int_equal (submit_wakeup (f->submit, 1000), 3000);
    submit_send (f->submit, f->poller, 2999);
    assert_true (s_nothing_sent (f));
    submit_send (f->submit, f->poller, 3000);
    s_recv_submit (f, &again);
    assert_int_equal (again.body.submit.seq, first.body.submit.seq);
    assert_int_equal (submit_counters (f->submit)->resent, 1);
    proto_msg_release (&first);
    proto_msg_release (&again);
}

static void test_reject_list_cut_short_resubmits_the_rest (void **state)
{
    s_fixture_t *f = *state;
    for (int i = 0; i < 3; i++) {
        char key[32];
        snprintf (key, sizeof key, "in/room/%d", i);
        s_add (f, key, 10);
    }
    submit_flush (f->submit, 1000);
    submit_send (f->submit, f->poller, 1000);
    proto_msg_t msg;
    s_recv_submit (f, &msg);
    uint64_t seq = msg.body.submit.seq;
    proto_msg_release (&msg);
    //  One listed as invalid, one more reject unlisted: which is unknown.
    proto_reject_t rejects[] = {{0, "unknown entity", PROTO_REJECT_INVALID}};
    proto_ack_t ack = {seq, 1, 0, rejects, 1, 0, 1};
    submit_on_ack (f->submit, &ack, 1000);
    assert_int_equal (submit_waiting (f->submit), 2);
    int64_t due = submit_wakeup (f->submit, 1000);
    assert_in_range (due, 1000, 1000 + SUBMIT_BUSY_BASE_MS);
    submit_send (f->submit, f->poller, due);
    s_recv_submit (f, &msg);
    assert_int_equal (msg.body.submit.count, 2);
    assert_string_equal (msg.body.submit.items[0].msg_key, "in/room/1");
    proto_msg_release (&msg);
}

static void test_batches_fit_the_frame (void **state)
{
    s_fixture_t *f = *state;
    //  About 340 bytes a job: three to a 1 KiB frame at most.
    for (int i = 0; i < 7; i++) {
        char key[32];
        snprintf (key, sizeof key, "in/room/%d", i);
        assert_int_equal (s_add (f, key, 300), 0);
    }
    assert_int_equal (s_add (f, "in/room/big", 2000), -1);    //  larger than any frame
    submit_flush (f->submit, 1000);
    submit_send (f->submit, f->poller, 1000);
    size_t jobs = 0, frames = 0;
    while (jobs < 7) {
        proto_msg_t msg;
        s_recv_submit (f, &msg);
        assert_true (msg.body.submit.count <= 3);
        jobs += msg.body.submit.count;
        frames++;
        proto_msg_release (&msg);
    }
    assert_int_equal (jobs, 7);
    assert_true (frames >= 3);
    assert_true (s_nothing_sent (f));
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_bad_jobs_are_refused_alone, s_setup_default, s_teardown),
        cmocka_unit_test_setup_teardown (test_busy_jobs_wait_and_hold_the_window, s_setup_default,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_unanswered_batches_are_resent, s_setup_default, s_teardown),
        cmocka_unit_test_setup_teardown (test_reject_list_cut_short_resubmits_the_rest, s_setup_default,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_batches_fit_the_frame, s_setup_small_frames, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
