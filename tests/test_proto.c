/*  test_proto - every protocol message round-trips; hostile frames are refused.

    `test_proto --make-corpus DIR` writes the fuzzer's seeds instead of
    testing: one valid frame per message type and a MESSAGE record (see
    tests/fuzz/fuzz_proto.c).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/plog.h"
#include "proto/proto.h"

//  Encodes, decodes, and hands back the decoded message for checks.
static proto_msg_t s_round_trip (proto_type_t type, const void *body)
{
    zmq_msg_t frame;
    assert_int_equal (proto_encode (type, body, &frame), 0);
    proto_msg_t msg;
    char why[256] = "";
    int rc = proto_decode (zmq_msg_data (&frame), zmq_msg_size (&frame), &msg, why, sizeof why);
    if (rc != PROTO_OK)
        fail_msg ("decode failed: %s", why);
    assert_int_equal (msg.type, type);
    zmq_msg_close (&frame);
    return msg;
}

static uint8_t s_payload[] = {0x92, 0xa1, 'x', 0x01};

static void test_submit_ack (void **state)
{
    (void) state;
    proto_job_spec_t items[2] = {
        {"demo/lobby/1", "joker", "demo/lobby", "group", 10, 1763900000123ULL, {s_payload, 4}},
        {"demo/lobby/2", "sage", "demo/lobby", "", 99, 1, {s_payload, 0}},
    };
    proto_submit_t submit = {42, items, 2};
    proto_msg_t msg = s_round_trip (PROTO_SUBMIT, &submit);
    assert_int_equal (msg.body.submit.seq, 42);
    assert_int_equal (msg.body.submit.count, 2);
    assert_string_equal (msg.body.submit.items[0].msg_key, "demo/lobby/1");
    assert_string_equal (msg.body.submit.items[0].entity, "joker");
    assert_string_equal (msg.body.submit.items[0].chat_kind, "group");
    assert_int_equal (msg.body.submit.items[0].priority, 10);
    assert_int_equal (msg.body.submit.items[0].created_ms, 1763900000123ULL);
    assert_int_equal (msg.body.submit.items[0].payload.size, 4);
    assert_memory_equal (msg.body.submit.items[0].payload.data, s_payload, 4);
    assert_int_equal (msg.body.submit.items[1].priority, 99);
    assert_int_equal (msg.body.submit.items[1].payload.size, 0);
    proto_msg_release (&msg);

    proto_reject_t rejected[] = {{1, "unknown entity"}};
    proto_ack_t ack = {42, 1, 3, rejected, 1};
    msg = s_round_trip (PROTO_ACK, &ack);
    assert_int_equal (msg.body.ack.seq, 42);
    assert_int_equal (msg.body.ack.accepted, 1);
    assert_int_equal (msg.body.ack.duplicates, 3);
    assert_int_equal (msg.body.ack.rejected_count, 1);
    assert_int_equal (msg.body.ack.rejected[0].index, 1);
    assert_string_equal (msg.body.ack.rejected[0].reason, "unknown entity");
    proto_msg_release (&msg);
}

static void test_worker_messages (void **state)
{
    (void) state;
    const char *models[] = {"llama-3-8b", "qwen2.5-7b"};
    proto_heartbeat_t hb = {"gpu-1", 64, 60, models, 2, "box", 1234, 1};
    proto_msg_t msg = s_round_trip (PROTO_HEARTBEAT, &hb);
    assert_string_equal (msg.body.heartbeat.worker_id, "gpu-1");
    assert_int_equal (msg.body.heartbeat.capacity, 64);
    assert_int_equal (msg.body.heartbeat.free, 60);
    assert_int_equal (msg.body.heartbeat.model_count, 2);
    assert_string_equal (msg.body.heartbeat.models[1], "qwen2.5-7b");
    assert_int_equal (msg.body.heartbeat.pid, 1234);
    assert_int_equal (msg.body.heartbeat.draining, 1);
    proto_msg_release (&msg);

    proto_welcome_t welcome = {0xdeadbeef, 1000, 60000};
    msg = s_round_trip (PROTO_WELCOME, &welcome);
    assert_int_equal (msg.body.welcome.epoch, 0xdeadbeef);
    assert_int_equal (msg.body.welcome.lease_ms, 60000);
    proto_msg_release (&msg);

    proto_job_t jobs[] = {{7, 0x1234567800000001ULL, 2, "k", "joker", "c", 5, 100, 200, {s_payload, 4}}};
    proto_jobs_t jb = {jobs, 1};
    msg = s_round_trip (PROTO_JOB, &jb);
    assert_int_equal (msg.body.job.count, 1);
    assert_int_equal (msg.body.job.items[0].job_id, 7);
    assert_int_equal (msg.body.job.items[0].token, 0x1234567800000001ULL);
    assert_int_equal (msg.body.job.items[0].attempt, 2);
    assert_int_equal (msg.body.job.items[0].expires_ms, 200);
    proto_msg_release (&msg);

    proto_release_item_t rel[] = {{7, 9, PROTO_REL_RETRY, "503 from server", 1500},
                                  {8, 10, PROTO_REL_DONE, "", 0}};
    proto_release_t release = {rel, 2};
    msg = s_round_trip (PROTO_RELEASE, &release);
    assert_int_equal (msg.body.release.items[0].status, PROTO_REL_RETRY);
    assert_string_equal (msg.body.release.items[0].reason, "503 from server");
    assert_int_equal (msg.body.release.items[0].retry_after_ms, 1500);
    assert_int_equal (msg.body.release.items[1].status, PROTO_REL_DONE);
    proto_msg_release (&msg);

    proto_result_item_t res[] = {{7, 9, 2, "k", "joker", "c", 100, 0, "héllo ✓", {s_payload, 4}, 1200, 42}};
    proto_result_t result = {"gpu-1", res, 1};
    msg = s_round_trip (PROTO_RESULT, &result);
    assert_string_equal (msg.body.result.worker_id, "gpu-1");
    assert_string_equal (msg.body.result.items[0].text, "héllo ✓");
    assert_int_equal (msg.body.result.items[0].llm_ms, 1200);
    assert_int_equal (msg.body.result.items[0].tokens, 42);
    proto_msg_release (&msg);
}

static void test_lease_fields (void **state)
{
    (void) state;
    proto_ref_t held[] = {{7, 0xabc}, {8, 0xdef}};
    const char *models[] = {"m"};
    proto_heartbeat_t hb = {"w1", 4, 2, models, 1, "host", 42, 0, 17, held, 2, 9};
    proto_msg_t msg = s_round_trip (PROTO_HEARTBEAT, &hb);
    assert_int_equal (msg.body.heartbeat.job_seq, 17);
    assert_int_equal (msg.body.heartbeat.held_count, 2);
    assert_int_equal (msg.body.heartbeat.held[1].token, 0xdef);
    assert_int_equal (msg.body.heartbeat.epoch, 9);
    proto_msg_release (&msg);

    proto_welcome_t welcome = {9, 1000, 60000, 18, held, 1, 300000};
    msg = s_round_trip (PROTO_WELCOME, &welcome);
    assert_int_equal (msg.body.welcome.job_seq, 18);
    assert_int_equal (msg.body.welcome.cancel_count, 1);
    assert_int_equal (msg.body.welcome.cancel[0].job_id, 7);
    assert_int_equal (msg.body.welcome.max_hold_ms, 300000);
    proto_msg_release (&msg);

    proto_reject_t rejects[] = {{0, "unknown entity", PROTO_REJECT_INVALID},
                                {1, "queue full", PROTO_REJECT_BUSY}};
    proto_ack_t ack = {3, 1, 0, rejects, 2, 500, 7};
    msg = s_round_trip (PROTO_ACK, &ack);
    assert_int_equal (msg.body.ack.rejected[1].code, PROTO_REJECT_BUSY);
    assert_int_equal (msg.body.ack.retry_after_ms, 500);
    assert_int_equal (msg.body.ack.rejected_more, 7);
    proto_msg_release (&msg);

    //  A HEARTBEAT from a peer that knows none of the optional fields.
    uint8_t old[] = {0xA5, 0x50, 1, PROTO_HEARTBEAT, 0x96, 0xa2, 'w', '1', 0x04, 0x04, 0x90, 0xa1,
                     'h', 0x01};
    char why[256];
    assert_int_equal (proto_decode (old, sizeof old, &msg, why, sizeof why), PROTO_OK);
    assert_int_equal (msg.body.heartbeat.job_seq, 0);
    assert_int_equal (msg.body.heartbeat.held_count, 0);
    assert_int_equal (msg.body.heartbeat.draining, 0);
    proto_msg_release (&msg);
}

static void test_sink_messages (void **state)
{
    (void) state;
    proto_commit_item_t refs[] = {{1, 2, 0}, {3, 4, 1}};
    proto_commit_t commit = {5, refs, 2};
    proto_msg_t msg = s_round_trip (PROTO_COMMIT, &commit);
    assert_int_equal (msg.body.commit.count, 2);
    assert_int_equal (msg.body.commit.items[1].token, 4);
    assert_int_equal (msg.body.commit.items[0].hold, 0);
    assert_int_equal (msg.body.commit.items[1].hold, 1);
    proto_msg_release (&msg);

    uint8_t payload[] = {0x91, 0xa1, 'x'};
    proto_verdict_item_t v[] = {
        {1, 2, PROTO_VERDICT_POST, "in/c/m1", "joker", "in/c", "group", 10, 1000, 2000, {payload, 3}, 1500},
        {3, 4, PROTO_VERDICT_STALE, NULL, NULL, NULL, NULL, 0, 0, 0, {NULL, 0}, 0}};
    proto_verdicts_t verdicts = {5, v, 2, 60000};
    msg = s_round_trip (PROTO_VERDICT, &verdicts);
    assert_int_equal (msg.body.verdict.items[0].slot_ms, 1500);
    assert_int_equal (msg.body.verdict.items[1].slot_ms, 0);
    assert_int_equal (msg.body.verdict.items[1].verdict, PROTO_VERDICT_STALE);
    assert_string_equal (msg.body.verdict.items[0].entity, "joker");
    assert_string_equal (msg.body.verdict.items[0].chat_kind, "group");
    assert_int_equal (msg.body.verdict.items[0].expires_ms, 2000);
    assert_int_equal (msg.body.verdict.items[0].payload.size, 3);
    assert_string_equal (msg.body.verdict.items[1].msg_key, "");
    assert_int_equal (msg.body.verdict.lease_ms, 60000);
    proto_msg_release (&msg);

    proto_outcome_item_t o[] = {{1, 2, PROTO_OUT_FAILED, "403 Forbidden: bot was kicked", 99}};
    proto_outcome_t outcome = {6, o, 1};
    msg = s_round_trip (PROTO_OUTCOME, &outcome);
    assert_string_equal (msg.body.outcome.items[0].reason, "403 Forbidden: bot was kicked");
    proto_msg_release (&msg);

    proto_outcome_ack_t ack = {6};
    msg = s_round_trip (PROTO_OUTCOME_ACK, &ack);
    assert_int_equal (msg.body.outcome_ack.seq, 6);
    proto_msg_release (&msg);
}

static void test_stats_and_ctl (void **state)
{
    (void) state;
    proto_num_t values[] = {{"posted", 12345}, {"latency_p50_ms", 812.5}, {"negative", -3}};
    proto_component_t comps[] = {{"sink", "host/1", values, 3}, {"broker", "9", values, 0}};
    proto_stats_t stats = {1763900000000ULL, comps, 2};
    proto_msg_t msg = s_round_trip (PROTO_STATS, &stats);
    assert_int_equal (msg.body.stats.count, 2);
    assert_string_equal (msg.body.stats.components[0].role, "sink");
    assert_int_equal (msg.body.stats.components[0].count, 3);
    assert_true (msg.body.stats.components[0].values[1].value == 812.5);
    assert_true (msg.body.stats.components[0].values[2].value == -3);
    assert_int_equal (msg.body.stats.components[1].count, 0);
    proto_msg_release (&msg);

    const char *args[] = {"joker"};
    proto_ctl_t ctl = {77, "pause", args, 1};
    msg = s_round_trip (PROTO_CTL, &ctl);
    assert_string_equal (msg.body.ctl.command, "pause");
    assert_string_equal (msg.body.ctl.args[0], "joker");
    proto_msg_release (&msg);

    proto_ctl_reply_t reply = {77, 0, "{\"ok\":true}"};
    msg = s_round_trip (PROTO_CTL_REPLY, &reply);
    assert_string_equal (msg.body.ctl_reply.body, "{\"ok\":true}");
    proto_msg_release (&msg);
}

static void test_message_record (void **state)
{
    (void) state;
    proto_line_t lines[] = {{"ana", "hi all"}, {"Joker", "hey ana"}};
    proto_message_t m = {"tg", "-100123", "456", "bob", "42", "@Joker tell a joke", 1763900000000ULL,
                         PROTO_MSG_MENTION, lines, 2};
    uint8_t *data;
    size_t size;
    assert_int_equal (proto_message_encode (&m, &data, &size), 0);
    proto_message_t out;
    void *zone = NULL;
    char why[256];
    assert_int_equal (proto_message_decode (data, size, &out, &zone, why, sizeof why), PROTO_OK);
    assert_string_equal (out.chat_ref, "-100123");
    assert_string_equal (out.text, "@Joker tell a joke");
    assert_int_equal (out.flags, PROTO_MSG_MENTION);
    assert_int_equal (out.context_count, 2);
    assert_string_equal (out.context[1].author, "Joker");
    proto_zone_free (&zone);
    //  Truncated at every length: always refused, never a crash.
    for (size_t cut = 0; cut < size; cut++) {
        assert_int_equal (proto_message_decode (data, cut, &out, &zone, why, sizeof why), PROTO_MALFORMED);
        assert_null (zone);
    }
    free (data);
}

//  --- hostile input ------------------------------------------------------------------

static int s_decode (const void *data, size_t size, char *why, size_t whylen)
{
    proto_msg_t msg;
    int rc = proto_decode (data, size, &msg, why, whylen);
    if (rc == PROTO_OK)
        proto_msg_release (&msg);
    return rc;
}

static void test_header_checks (void **state)
{
    (void) state;
    char why[256];
    assert_int_equal (s_decode ("", 0, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "shorter than the header"));
    uint8_t bad_sig[] = {0x00, 0x50, 1, PROTO_ACK, 0x90};
    assert_int_equal (s_decode (bad_sig, sizeof bad_sig, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "signature"));
    uint8_t bad_version[] = {PROTO_SIG0, PROTO_SIG1, 9, PROTO_ACK, 0x90};
    assert_int_equal (s_decode (bad_version, sizeof bad_version, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "version 9"));
    uint8_t bad_type[] = {PROTO_SIG0, PROTO_SIG1, 1, 200, 0x90};
    assert_int_equal (s_decode (bad_type, sizeof bad_type, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "unknown message type 200"));
}

static void test_huge_declared_counts (void **state)
{
    (void) state;
    char why[256];
    //  An array32 declaring 268 million items in five bytes: msgpack-c 4.0
    //  would try to allocate gigabytes before reading them.
    uint8_t bomb[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_SUBMIT, 0xdd, 0x0f, 0xff, 0xff, 0xff};
    assert_int_equal (s_decode (bomb, sizeof bomb, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "declares more items than bytes remain"));
    //  The same inside a valid-looking SUBMIT: [seq, array32(huge)].
    uint8_t nested[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_SUBMIT, 0x92, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal (s_decode (nested, sizeof nested, why, sizeof why), PROTO_MALFORMED);
    //  A map32 and a str32 that claim more than the frame holds.
    uint8_t map[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_STATS, 0xdf, 0x7f, 0xff, 0xff, 0xff};
    assert_int_equal (s_decode (map, sizeof map, why, sizeof why), PROTO_MALFORMED);
    uint8_t str[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_CTL_REPLY, 0x93, 0x01, 0x00, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'};
    assert_int_equal (s_decode (str, sizeof str, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "runs past the end"));
    //  Direct check of the walker on the bare 5-byte bomb.
    const char *reason;
    assert_int_equal (proto_mp_check (bomb + 4, 5, &reason), -1);
}

static void test_wrong_shapes (void **state)
{
    (void) state;
    char why[256];
    //  ACK whose seq is a string.
    uint8_t ack_str[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_ACK, 0x94, 0xa1, 'x', 0x00, 0x00, 0x90};
    assert_int_equal (s_decode (ack_str, sizeof ack_str, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "ACK.seq"));
    //  SUBMIT with a job whose priority is 120.
    proto_job_spec_t item = {"k", "e", "c", "", 5, 1, {s_payload, 4}};
    proto_submit_t submit = {1, &item, 1};
    zmq_msg_t frame;
    assert_int_equal (proto_encode (PROTO_SUBMIT, &submit, &frame), 0);
    uint8_t *bytes = zmq_msg_data (&frame);
    size_t size = zmq_msg_size (&frame);
    //  The priority (5) is the first 0x05 after the four strings.
    for (size_t i = 4; i < size; i++)
        if (bytes[i] == 0x05) {
            bytes[i] = 0x78;    //  positive fixint 120
            break;
        }
    assert_int_equal (s_decode (bytes, size, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "SUBMIT.items[0].priority"));
    zmq_msg_close (&frame);
    //  A missing required field: ACK with only [seq].
    uint8_t short_ack[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_ACK, 0x91, 0x01};
    assert_int_equal (s_decode (short_ack, sizeof short_ack, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "accepted: missing"));
    //  Invalid UTF-8 in a string.
    uint8_t bad_utf8[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_CTL_REPLY, 0x93, 0x01, 0x00, 0xa2, 0xc3, 0x28};
    assert_int_equal (s_decode (bad_utf8, sizeof bad_utf8, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "UTF-8"));
    //  Trailing garbage after a valid body.
    uint8_t trailing[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_OUTCOME_ACK, 0x91, 0x01, 0xc0};
    assert_int_equal (s_decode (trailing, sizeof trailing, why, sizeof why), PROTO_MALFORMED);
    assert_non_null (strstr (why, "trailing"));
}

static void test_extra_fields_ignored (void **state)
{
    (void) state;
    //  OUTCOME_ACK [seq, <a field from a newer peer>] still decodes.
    uint8_t newer[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_OUTCOME_ACK, 0x92, 0x07, 0xa3, 'n', 'e', 'w'};
    proto_msg_t msg;
    char why[256];
    assert_int_equal (proto_decode (newer, sizeof newer, &msg, why, sizeof why), PROTO_OK);
    assert_int_equal (msg.body.outcome_ack.seq, 7);
    proto_msg_release (&msg);
    //  HEARTBEAT without its optional trailing fields (draining, job_seq, held) decodes as 0.
    const char *models[] = {"m"};
    proto_heartbeat_t hb = {"w", 1, 1, models, 1, "h", 1, 0};
    zmq_msg_t frame;
    assert_int_equal (proto_encode (PROTO_HEARTBEAT, &hb, &frame), 0);
    uint8_t *bytes = zmq_msg_data (&frame);
    size_t size = zmq_msg_size (&frame);
    assert_int_equal (bytes[4], 0x9a);
    bytes[4] = 0x96;    //  claim 6 fields instead of 10 and drop the last four bytes
    assert_int_equal (proto_decode (bytes, size - 4, &msg, why, sizeof why), PROTO_OK);
    assert_int_equal (msg.body.heartbeat.draining, 0);
    proto_msg_release (&msg);
    zmq_msg_close (&frame);
}

//  Mutates valid frames at random: the decoder must refuse or accept, never crash.
static void test_random_mutations (void **state)
{
    (void) state;
    proto_line_t lines[] = {{"a", "b"}};
    proto_message_t m = {"s", "c", "m", "a", "i", "text", 1, 0, lines, 1};
    uint8_t *payload;
    size_t psize;
    proto_message_encode (&m, &payload, &psize);
    proto_job_spec_t items[3] = {{"k1", "e", "c", "", 1, 2, {payload, (uint32_t) psize}},
                                 {"k2", "e", "c", "", 1, 2, {payload, (uint32_t) psize}},
                                 {"k3", "e", "c", "", 1, 2, {payload, (uint32_t) psize}}};
    proto_submit_t submit = {1, items, 3};
    zmq_msg_t frame;
    proto_encode (PROTO_SUBMIT, &submit, &frame);
    size_t size = zmq_msg_size (&frame);
    uint8_t *copy = malloc (size);
    srandom (1234);
    size_t accepted = 0;
    for (int round = 0; round < 20000; round++) {
        memcpy (copy, zmq_msg_data (&frame), size);
        int flips = 1 + (int) (random () % 4);
        for (int f = 0; f < flips; f++)
            copy[4 + (size_t) random () % (size - 4)] = (uint8_t) random ();
        size_t len = (random () % 4 == 0) ? (size_t) random () % size : size;
        char why[256];
        proto_msg_t msg;
        if (proto_decode (copy, len, &msg, why, sizeof why) == PROTO_OK) {
            accepted++;
            proto_msg_release (&msg);
        }
    }
    //  Some mutations stay valid (a changed letter), most do not.
    assert_true (accepted > 0 && accepted < 20000);
    free (copy);
    free (payload);
    zmq_msg_close (&frame);
}

static void test_encode_refuses_out_of_range (void **state)
{
    (void) state;
    proto_job_spec_t item = {"k", "e", "c", "", 100, 1, {s_payload, 4}};
    proto_submit_t submit = {1, &item, 1};
    zmq_msg_t frame;
    plog_level = -1;    //  the refusal is logged; keep the test output clean
    assert_int_equal (proto_encode (PROTO_SUBMIT, &submit, &frame), -1);
    //  An item of a list of strings over the decoder's bound.
    char long_model[PROTO_MAX_KEY + 2];
    memset (long_model, 'm', sizeof long_model - 1);
    long_model[sizeof long_model - 1] = 0;
    const char *models[] = {"fine", long_model};
    proto_heartbeat_t hb = {"w", 1, 1, models, 2, "h", 1, 0};
    assert_int_equal (proto_encode (PROTO_HEARTBEAT, &hb, &frame), -1);
}

//  Empty strings and bytes: msgpack-c hands out a NULL pointer for them,
//  which must never reach memcpy (UBSan: "null pointer passed as argument").
static void test_empty_strings_and_bytes (void **state)
{
    (void) state;
    char why[256];
    //  HEARTBEAT ["", 0, 0, [], "", 0]: 11 bytes whose first string is "".
    uint8_t hb[] = {PROTO_SIG0, PROTO_SIG1, 1,    PROTO_HEARTBEAT, 0x96, 0xa0,
                    0x00,       0x00,       0x90, 0xa0,            0x00};
    proto_msg_t msg;
    assert_int_equal (proto_decode (hb, sizeof hb, &msg, why, sizeof why), PROTO_OK);
    assert_string_equal (msg.body.heartbeat.worker_id, "");
    assert_string_equal (msg.body.heartbeat.host, "");
    proto_msg_release (&msg);
    //  A SUBMIT whose job has empty strings and an empty payload, both
    //  as str8/bin8 of length 0 and as fixstr.
    uint8_t submit[] = {PROTO_SIG0, PROTO_SIG1, 1, PROTO_SUBMIT, 0x92, 0x01, 0x91, 0x97, 0xd9, 0x00,
                        0xa0, 0xa0, 0xa0, 0x00, 0x00, 0xc4, 0x00};
    assert_int_equal (proto_decode (submit, sizeof submit, &msg, why, sizeof why), PROTO_OK);
    assert_int_equal (msg.body.submit.count, 1);
    assert_string_equal (msg.body.submit.items[0].msg_key, "");
    assert_int_equal (msg.body.submit.items[0].payload.size, 0);
    assert_non_null (msg.body.submit.items[0].payload.data);
    //  And it encodes again, empty payload and all.
    zmq_msg_t frame;
    assert_int_equal (proto_encode (PROTO_SUBMIT, &msg.body.submit, &frame), 0);
    zmq_msg_close (&frame);
    proto_msg_release (&msg);
    //  A MESSAGE record of empty strings; a STATS key "".
    proto_message_t out;
    void *zone = NULL;
    uint8_t record[] = {0x99, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0,
                        0x00, 0x00, 0x91, 0x92, 0xa0, 0xa0};
    assert_int_equal (proto_message_decode (record, sizeof record, &out, &zone, why, sizeof why),
                      PROTO_OK);
    assert_string_equal (out.context[0].text, "");
    proto_zone_free (&zone);
    uint8_t stats[] = {PROTO_SIG0, PROTO_SIG1, 1,    PROTO_STATS, 0x92, 0x00, 0x91,
                       0x93,       0xa0,       0xa0, 0x81,        0xa0, 0x01};
    assert_int_equal (proto_decode (stats, sizeof stats, &msg, why, sizeof why), PROTO_OK);
    assert_string_equal (msg.body.stats.components[0].values[0].key, "");
    proto_msg_release (&msg);
}

//  Counters that are not whole numbers of a sane size (NaN, infinities,
//  1e300) arrive from the wire in STATS, and the sink encodes them again.
static void test_stats_odd_numbers (void **state)
{
    (void) state;
    proto_num_t values[] = {
        {"nan", __builtin_nan ("")}, {"inf", __builtin_inf ()}, {"big", 1e300}, {"neg", -1e19}};
    proto_component_t comp = {"sink", "1", values, 4};
    proto_stats_t stats = {1, &comp, 1};
    proto_msg_t msg = s_round_trip (PROTO_STATS, &stats);
    double nan = msg.body.stats.components[0].values[0].value;
    assert_true (nan != nan);
    assert_true (msg.body.stats.components[0].values[1].value == __builtin_inf ());
    assert_true (msg.body.stats.components[0].values[2].value == 1e300);
    assert_true (msg.body.stats.components[0].values[3].value == -1e19);
    proto_msg_release (&msg);
}

//  --- the fuzzer's seeds ---------------------------------------------------------------

static int s_write (const char *dir, const char *name, const void *data, size_t size)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen (path, "wb");
    if (!f || fwrite (data, 1, size, f) != size || fclose (f)) {
        fprintf (stderr, "cannot write %s\n", path);
        return -1;
    }
    return 0;
}

static int s_write_frame (const char *dir, proto_type_t type, const void *body)
{
    zmq_msg_t frame;
    if (proto_encode (type, body, &frame))
        return -1;
    char name[64];
    snprintf (name, sizeof name, "%02d-%s", (int) type, proto_type_name (type));
    for (char *c = name; *c; c++)
        *c = (char) (*c == '_' ? '-' : *c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    int rc = s_write (dir, name, zmq_msg_data (&frame), zmq_msg_size (&frame));
    zmq_msg_close (&frame);
    return rc;
}

static int s_make_corpus (const char *dir)
{
    proto_line_t lines[] = {{"ana", "hi all"}};
    proto_message_t m = {"tg", "-100123", "456", "bob", "42", "@Joker hi", 1763900000000ULL,
                         PROTO_MSG_MENTION, lines, 1};
    uint8_t *record;
    size_t record_size;
    if (proto_message_encode (&m, &record, &record_size))
        return 1;
    proto_bin_t payload = {record, (uint32_t) record_size};
    proto_job_spec_t specs[] = {{"tg/-100123/456", "joker", "tg/-100123", "group", 10, 1, payload}};
    proto_submit_t submit = {1, specs, 1};
    proto_reject_t rejected[] = {{0, "unknown entity", PROTO_REJECT_INVALID},
                                 {1, "queue full", PROTO_REJECT_BUSY}};
    proto_ack_t ack = {1, 0, 0, rejected, 2, 2000, 0};
    const char *models[] = {"llama-3-8b"};
    proto_ref_t held[] = {{7, 9}};
    proto_heartbeat_t hb = {"gpu-1", 8, 7, models, 1, "box", 1234, 0, 3, held, 1, 5};
    proto_welcome_t welcome = {5, 1000, 60000, 3, held, 1, 300000};
    proto_job_t jobs[] = {{7, 9, 1, "tg/-100123/456", "joker", "tg/-100123", 10, 1, 0, payload}};
    proto_jobs_t job = {jobs, 1, 3};
    proto_release_item_t rel[] = {{7, 9, PROTO_REL_RETRY, "503", 1500}};
    proto_release_t release = {rel, 1};
    proto_result_item_t res[] = {{7, 9, 1, "tg/-100123/456", "joker", "tg/-100123", 1, 0, "hi bob",
                                  payload, 1200, 42}};
    proto_result_t result = {"gpu-1", res, 1};
    proto_commit_item_t refs[] = {{7, 9, 0}, {8, 10, 1}};
    proto_commit_t commit = {3, refs, 2};
    proto_verdict_item_t v[] = {
        {7, 9, PROTO_VERDICT_POST, "tg/-100123/456", "joker", "tg/-100123", "group", 10, 1, 0, payload},
        {8, 10, PROTO_VERDICT_STALE, "", "", "", "", 0, 0, 0, {NULL, 0}}};
    proto_verdicts_t verdict = {3, v, 2, 60000};
    proto_outcome_item_t o[] = {{7, 9, PROTO_OUT_POSTED, "", 99}};
    proto_outcome_t outcome = {4, o, 1};
    proto_outcome_ack_t outcome_ack = {4};
    proto_num_t values[] = {{"posted", 12}, {"p50_ms", 812.5}};
    proto_component_t comps[] = {{"sink", "host/1", values, 2}};
    proto_stats_t stats = {1763900000000ULL, comps, 1};
    const char *args[] = {"joker"};
    proto_ctl_t ctl = {77, "pause", args, 1};
    proto_ctl_reply_t ctl_reply = {77, 0, "{\"ok\":true}"};
    const void *bodies[PROTO_TYPE_MAX] = {
        [PROTO_SUBMIT] = &submit,   [PROTO_ACK] = &ack,         [PROTO_HEARTBEAT] = &hb,
        [PROTO_WELCOME] = &welcome, [PROTO_JOB] = &job,         [PROTO_RELEASE] = &release,
        [PROTO_RESULT] = &result,   [PROTO_COMMIT] = &commit,   [PROTO_VERDICT] = &verdict,
        [PROTO_OUTCOME] = &outcome, [PROTO_OUTCOME_ACK] = &outcome_ack,
        [PROTO_STATS] = &stats,     [PROTO_CTL] = &ctl,         [PROTO_CTL_REPLY] = &ctl_reply};
    int rc = 0;
    for (int t = 1; t < PROTO_TYPE_MAX; t++)
        rc |= s_write_frame (dir, (proto_type_t) t, bodies[t]);
    //  The MESSAGE record goes after a header's worth of bytes (the fuzzer
    //  decodes the input minus a header as a record); type 0 is no message.
    uint8_t *framed = malloc (record_size + PROTO_HEADER_SIZE);
    const uint8_t header[PROTO_HEADER_SIZE] = {PROTO_SIG0, PROTO_SIG1, PROTO_VERSION, 0};
    memcpy (framed, header, sizeof header);
    memcpy (framed + PROTO_HEADER_SIZE, record, record_size);
    rc |= s_write (dir, "00-message", framed, record_size + PROTO_HEADER_SIZE);
    free (framed);
    free (record);
    return rc ? 1 : 0;
}

int main (int argc, char **argv)
{
    plog_init ("test", PLOG_ERROR);
    if (argc == 3 && strcmp (argv[1], "--make-corpus") == 0)
        return s_make_corpus (argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_submit_ack),
        cmocka_unit_test (test_worker_messages),
        cmocka_unit_test (test_lease_fields),
        cmocka_unit_test (test_sink_messages),
        cmocka_unit_test (test_stats_and_ctl),
        cmocka_unit_test (test_message_record),
        cmocka_unit_test (test_header_checks),
        cmocka_unit_test (test_huge_declared_counts),
        cmocka_unit_test (test_wrong_shapes),
        cmocka_unit_test (test_extra_fields_ignored),
        cmocka_unit_test (test_random_mutations),
        cmocka_unit_test (test_encode_refuses_out_of_range),
        cmocka_unit_test (test_empty_strings_and_bytes),
        cmocka_unit_test (test_stats_odd_numbers),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
