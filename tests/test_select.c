/*  Who answers what: mentions, platform-marked mentions with UTF-16
    offsets, replies, responseChance statistics, allow/deny lists, and the
    bot loop guard. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "common/pconfig.h"
#include "net/ptext.h"
#include "poller/select.h"

#include <stdio.h>
#include <string.h>

static pcfg_t *s_config (const char *entities)
{
    char text[4096], err[512] = "";
    snprintf (text, sizeof text, "{\"entities\": %s}", entities);
    pcfg_t *config = pcfg_load_string (text, "test", true, err, sizeof err);
    if (!config)
        fail_msg ("config: %s", err);
    return config;
}

static const char *s_ids (const pcfg_t *config, const selection_t *sel, int n, char *buf)
{
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        if (i)
            strcat (buf, ",");
        strcat (buf, pcfg_entity (config, (size_t) sel[i].entity)->id);
    }
    return buf;
}

static chat_msg_t s_msg (const char *author, const char *text)
{
    chat_msg_t m = {"1", "room", "group", author, author, text, NULL, 0, false, NULL, 0};
    return m;
}

static void test_mentions_in_text (void **state)
{
    (void) state;
    assert_true (select_mentions ("@Joker hi", "joker"));
    assert_true (select_mentions ("hi @JOKER!", "joker"));
    assert_true (select_mentions ("(@joker) what", "joker"));
    assert_true (select_mentions ("@joker\xE2\x80\x99s joke", "joker"));  //  "’s"
    assert_false (select_mentions ("@jokers unite", "joker"));
    assert_false (select_mentions ("mail ana@joker.com", "joker"));
    assert_false (select_mentions ("joker without at", "joker"));
    assert_false (select_mentions ("@", "joker"));
    assert_false (select_mentions ("@joker", ""));
}

static void test_mention_reply_alias_and_several (void **state)
{
    (void) state;
    pcfg_t *c = s_config ("[{\"id\":\"joker\",\"name\":\"Joker\",\"aliases\":[\"JokerBot\"],"
                          "\"responseChance\":0},"
                          "{\"id\":\"sage\",\"responseChance\":0},"
                          "{\"id\":\"tech\",\"responseChance\":0}]");
    selection_t sel[3];
    char ids[200];
    chat_msg_t m = s_msg ("ana", "@jokerbot and @SAGE, thoughts?");
    int n = select_entities (c, "tg", &m, "tg/room/1", 7, sel);
    assert_string_equal (s_ids (c, sel, n, ids), "joker,sage");
    assert_true (sel[0].mention);
    assert_int_equal (sel[0].priority, c->mention_priority);

    m = s_msg ("ana", "no names here");
    m.reply_to_author = "JokerBot";     //  a reply to the joker's message
    n = select_entities (c, "tg", &m, "tg/room/2", 7, sel);
    assert_string_equal (s_ids (c, sel, n, ids), "joker");
    pcfg_destroy (&c);
}

static void test_platform_mentions (void **state)
{
    (void) state;
    pcfg_t *c =
        s_config ("[{\"id\":\"joker\",\"aliases\":[\"jokerbot\",\"4242\"],\"responseChance\":0},"
                  "{\"id\":\"sage\",\"responseChance\":0}]");
    selection_t sel[2];
    char ids[200];
    //  A text_mention has no '@' in the text: only the platform's list names it.
    const char *names[] = {"4242"};
    chat_msg_t m = s_msg ("ana", "Joker, are you there?");
    m.mentions = names;
    m.mention_count = 1;
    int n = select_entities (c, "tg", &m, "tg/room/3", 7, sel);
    assert_string_equal (s_ids (c, sel, n, ids), "joker");
    assert_true (sel[0].mention);
    pcfg_destroy (&c);
}

static void test_utf16_offsets (void **state)
{
    (void) state;
    char out[64];
    //  Telegram counts UTF-16 units: the emoji before the mention is two.
    const char *text = "\xF0\x9F\x98\x80 hi @jokerbot!";   //  "😀 hi @jokerbot!"
    assert_int_equal (ptext_utf16_slice (text, 6, 9, out, sizeof out), 0);
    assert_string_equal (out, "@jokerbot");
    //  Cyrillic is one unit per letter but two bytes.
    assert_int_equal (ptext_utf16_slice ("\xD0\x9F\xD1\x80\xD0\xB8 @a", 4, 2, out, sizeof out), 0);
    assert_string_equal (out, "@a");
    //  Splitting the surrogate pair, or running past the end, is refused.
    assert_int_equal (ptext_utf16_slice (text, 1, 3, out, sizeof out), -1);
    assert_int_equal (ptext_utf16_slice (text, 6, 40, out, sizeof out), -1);
    assert_int_equal (ptext_utf16_slice (text, 0, 0, out, sizeof out), 0);
    assert_string_equal (out, "");
    assert_int_equal (ptext_length (text, strlen (text), PTEXT_UTF16), 16);
    assert_int_equal (ptext_length (text, strlen (text), PTEXT_CODEPOINTS), 15);
}

static void test_loop_guard_and_self (void **state)
{
    (void) state;
    pcfg_t *c = s_config ("[{\"id\":\"joker\",\"responseChance\":1},"
                          "{\"id\":\"sage\",\"responseChance\":1},"
                          "{\"id\":\"chatty\",\"responseChance\":1,\"answerBots\":true}]");
    selection_t sel[3];
    char ids[200];
    //  The joker's own message: never the joker; only the bot-answering one.
    chat_msg_t m = s_msg ("Joker", "@joker @sage @chatty hello");
    int n = select_entities (c, "tg", &m, "tg/room/4", 7, sel);
    assert_string_equal (s_ids (c, sel, n, ids), "chatty");
    //  Another platform bot, even when it mentions them.
    m = s_msg ("nightbot", "@joker @sage follow the rules");
    m.from_bot = true;
    n = select_entities (c, "tg", &m, "tg/room/5", 7, sel);
    assert_string_equal (s_ids (c, sel, n, ids), "chatty");
    //  chatty's own message: nobody that could answer back in a loop but the guard.
    m = s_msg ("chatty", "@chatty talking to myself");
    n = select_entities (c, "tg", &m, "tg/room/6", 7, sel);
    assert_int_equal (n, 0);
    //  Who wrote it, for counting: an entity (any case), or nobody of ours.
    assert_int_equal (select_author_entity (c, &m), 2);
    m = s_msg ("SAGE", "hi");
    assert_int_equal (select_author_entity (c, &m), 1);
    m = s_msg ("nightbot", "hi");
    assert_int_equal (select_author_entity (c, &m), -1);
    pcfg_destroy (&c);
}

static void test_allow_deny (void **state)
{
    (void) state;
    pcfg_t *c = s_config ("[{\"id\":\"a\",\"responseChance\":1,\"allowChats\":[\"tg/room\"]},"
                          "{\"id\":\"b\",\"responseChance\":1,\"denyChats\":[\"tg/room\"]}]");
    selection_t sel[2];
    char ids[200];
    chat_msg_t m = s_msg ("ana", "@a @b");
    int n = select_entities (c, "tg", &m, "tg/room/7", 7, sel);
    assert_string_equal (s_ids (c, sel, n, ids), "a");
    m.chat_ref = "other";
    n = select_entities (c, "tg", &m, "tg/other/7", 7, sel);
    assert_string_equal (s_ids (c, sel, n, ids), "b");
    pcfg_destroy (&c);
}

static void test_response_chance_statistics (void **state)
{
    (void) state;
    pcfg_t *c = s_config ("[{\"id\":\"p\",\"responseChance\":0.15},"
                          "{\"id\":\"q\",\"responseChance\":0.5}]");
    selection_t sel[2];
    int hits[2] = {0, 0}, both = 0;
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        char key[64];
        snprintf (key, sizeof key, "kv/main/m%d", i);
        chat_msg_t m = s_msg ("ana", "plain words");
        int n = select_entities (c, "kv", &m, key, 42, sel);
        for (int k = 0; k < n; k++) {
            hits[sel[k].entity]++;
            assert_false (sel[k].mention);
            assert_int_equal (sel[k].priority, c->default_priority);
        }
        both += n == 2;
    }
    //  Binomial: 15% of 20000 is 3000 with sd ~50; 50% is 10000 with sd ~71 (5 sd bounds).
    assert_in_range (hits[0], 3000 - 250, 3000 + 250);
    assert_in_range (hits[1], 10000 - 355, 10000 + 355);
    //  Independent draws per entity: both about 7.5%.
    assert_in_range (both, 1500 - 200, 1500 + 200);
    //  The same (seed, message, entity) always draws the same.
    assert_true (select_draw (42, "kv/main/m1", "p") == select_draw (42, "kv/main/m1", "p"));
    assert_true (select_draw (42, "kv/main/m1", "p") != select_draw (43, "kv/main/m1", "p"));
    pcfg_destroy (&c);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_mentions_in_text),
        cmocka_unit_test (test_mention_reply_alias_and_several),
        cmocka_unit_test (test_platform_mentions),
        cmocka_unit_test (test_utf16_offsets),
        cmocka_unit_test (test_loop_guard_and_self),
        cmocka_unit_test (test_allow_deny),
        cmocka_unit_test (test_response_chance_statistics),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
