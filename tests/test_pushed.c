/*  The sink's pushed verdicts (sink/pushed.c): what the broker pushed with a
    dispatch is kept as a copy, for that dispatch only, bounded in number
    and in time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sink/pushed.h"

#include <string.h>

static proto_verdict_item_t s_item (uint64_t job_id, uint64_t token, char *key, uint8_t *payload,
                                    uint32_t size)
{
    return (proto_verdict_item_t) {job_id, token, PROTO_VERDICT_POST, key, "e1", "src/room", "group",
                                   10, 1000, 0, {payload, size}};
}

static void test_a_copy_for_its_dispatch_only (void **state)
{
    (void) state;
    pushed_t *p = pushed_new (10, 1000);
    char key[] = "src/room/1";
    uint8_t payload[] = {0x93, 1, 2, 3};
    proto_verdict_item_t item = s_item (7, 0xA1, key, payload, sizeof payload);
    pushed_put (p, &item, 0);
    //  The sender's buffers are its own again at once.
    memset (key, 'x', sizeof key - 1);
    memset (payload, 0, sizeof payload);
    assert_null (pushed_take (p, 7, 0xA2));
    assert_null (pushed_take (p, 8, 0xA1));
    assert_int_equal (pushed_size (p), 1);
    pushed_verdict_t *v = pushed_take (p, 7, 0xA1);
    assert_non_null (v);
    const proto_verdict_item_t *got = pushed_item (v);
    assert_string_equal (got->msg_key, "src/room/1");
    assert_string_equal (got->entity, "e1");
    assert_string_equal (got->chat, "src/room");
    assert_string_equal (got->chat_kind, "group");
    assert_int_equal (got->priority, 10);
    assert_int_equal (got->created_ms, 1000);
    assert_int_equal (got->payload.size, 4);
    assert_memory_equal (got->payload.data, "\x93\x01\x02\x03", 4);
    pushed_free (&v);
    assert_null (v);
    //  Taken once.
    assert_null (pushed_take (p, 7, 0xA1));
    assert_int_equal (pushed_size (p), 0);
    pushed_destroy (&p);
}

static void test_a_newer_dispatch_replaces_the_older (void **state)
{
    (void) state;
    pushed_t *p = pushed_new (10, 1000);
    proto_verdict_item_t item = s_item (7, 0xA1, "src/room/1", NULL, 0);
    pushed_put (p, &item, 0);
    item.token = 0xA2;
    pushed_put (p, &item, 5);
    assert_int_equal (pushed_size (p), 1);
    assert_null (pushed_take (p, 7, 0xA1));
    pushed_verdict_t *v = pushed_take (p, 7, 0xA2);
    assert_non_null (v);
    assert_int_equal (pushed_item (v)->payload.size, 0);
    pushed_free (&v);
    pushed_destroy (&p);
}

static void test_bounded_in_number_and_time (void **state)
{
    (void) state;
    pushed_t *p = pushed_new (3, 100);
    for (uint64_t job = 1; job <= 4; job++) {
        proto_verdict_item_t item = s_item (job, job * 16, "src/room/1", NULL, 0);
        pushed_put (p, &item, (int64_t) job * 10);
    }
    //  The oldest went to make room.
    assert_int_equal (pushed_size (p), 3);
    assert_null (pushed_take (p, 1, 16));
    //  Each is kept for 100 ms after it arrived.
    pushed_expire (p, 119);
    assert_int_equal (pushed_size (p), 3);
    pushed_expire (p, 125);
    assert_int_equal (pushed_size (p), 2);
    assert_null (pushed_take (p, 2, 32));
    pushed_expire (p, 140);
    assert_int_equal (pushed_size (p), 0);
    pushed_destroy (&p);
    //  With no room at all, nothing is kept.
    p = pushed_new (0, 100);
    proto_verdict_item_t item = s_item (1, 1, "src/room/1", NULL, 0);
    pushed_put (p, &item, 0);
    assert_int_equal (pushed_size (p), 0);
    pushed_destroy (&p);
    pushed_destroy (&p);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_a_copy_for_its_dispatch_only),
        cmocka_unit_test (test_a_newer_dispatch_replaces_the_older),
        cmocka_unit_test (test_bounded_in_number_and_time),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
