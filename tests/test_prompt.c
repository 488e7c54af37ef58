/*  test_prompt - what the LLM is asked, and how its reply is made fit to post. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/plog.h"
#include "worker/prompt.h"
#include "worker/reply.h"

static pcfg_t *s_config (const char *text)
{
    char err[512];
    pcfg_t *config = pcfg_load_string (text, "test", false, err, sizeof err);
    if (!config)
        fail_msg ("%s", err);
    return config;
}

static void test_messages (void **state)
{
    (void) state;
    pcfg_t *config = s_config ("{\"entities\": [{\"id\": \"sage\", \"name\": \"Sage\","
                               " \"systemPrompt\": \"You are a sage.\", \"messagesToRead\": 2},"
                               " {\"id\": \"zero\", \"messagesToRead\": 0}]}");
    proto_line_t context[] = {{"ana", "first"}, {"bo", "second"}, {"Sage", "third"}};
    proto_message_t message = {"demo", "room", "m9", "cy", "42", "what now?", 0, 2, context, 3};
    json_t *messages = prompt_messages (pcfg_entity (config, 0), &message);
    assert_int_equal (json_array_size (messages), 2);
    json_t *system = json_array_get (messages, 0), *user = json_array_get (messages, 1);
    assert_string_equal (json_string_value (json_object_get (system, "role")), "system");
    assert_string_equal (json_string_value (json_object_get (system, "content")), "You are a sage.");
    assert_string_equal (json_string_value (json_object_get (user, "role")), "user");
    assert_string_equal (json_string_value (json_object_get (user, "content")),
                         "Recent messages in the chat (oldest first):\n"
                         "bo: second\n"
                         "Sage: third\n"
                         "\n"
                         "Reply to this message from cy:\n"
                         "what now?");
    json_decref (messages);
    //  messagesToRead 0, no persona: only the message, and a persona from the name.
    messages = prompt_messages (pcfg_entity (config, 1), &message);
    assert_string_equal (json_string_value (json_object_get (json_array_get (messages, 0), "content")),
                         "You are zero, taking part in a group chat. Reply briefly.");
    assert_string_equal (json_string_value (json_object_get (json_array_get (messages, 1), "content")),
                         "Reply to this message from cy:\nwhat now?");
    json_decref (messages);
    //  Fewer lines than messagesToRead, and empty authors.
    proto_line_t one[] = {{"", "hello"}};
    proto_message_t short_message = {"demo", "room", "m1", "", "", "hi", 0, 0, one, 1};
    messages = prompt_messages (pcfg_entity (config, 0), &short_message);
    assert_string_equal (json_string_value (json_object_get (json_array_get (messages, 1), "content")),
                         "Recent messages in the chat (oldest first):\nsomeone: hello\n\n"
                         "Reply to this message from someone:\nhi");
    json_decref (messages);
    pcfg_destroy (&config);
}

static void s_expect_clean (const pcfg_entity_t *e, const char *in, size_t limit, const char *out)
{
    char *text = reply_clean (strdup (in), e, limit, 16384);
    if (strcmp (text, out))
        fail_msg ("clean (\"%s\", %zu) = \"%s\", expected \"%s\"", in, limit, text, out);
    free (text);
}

static void test_clean (void **state)
{
    (void) state;
    pcfg_t *config = s_config ("{\"entities\": [{\"id\": \"joker\", \"name\": \"The Joker\"}]}");
    const pcfg_entity_t *e = pcfg_entity (config, 0);
    s_expect_clean (e, "  \n hello there \t\n", 0, "hello there");
    s_expect_clean (e, "<think>plan the joke</think>\n\nWhy did the chicken", 0, "Why did the chicken");
    s_expect_clean (e, "A<THINK>x</THINK>B<think>y</think>C", 0, "ABC");
    s_expect_clean (e, "<think>cut off by max_tokens while thinking", 0, "");
    s_expect_clean (e, "   ", 0, "");
    s_expect_clean (e, "The Joker: ha!", 0, "ha!");
    s_expect_clean (e, "**the joker**: ha!", 0, "ha!");
    s_expect_clean (e, "[The Joker] ha!", 0, "[The Joker] ha!");
    s_expect_clean (e, "[The Joker]: ha!", 0, "ha!");
    s_expect_clean (e, "joker: ha!", 0, "ha!");
    s_expect_clean (e, "The Joker says ha", 0, "The Joker says ha");
    s_expect_clean (e, "The Joker:", 0, "");
    //  Cut to the limit at a word boundary, with an ellipsis (one character).
    s_expect_clean (e, "one two three four five six", 14, "one two three\xe2\x80\xa6");
    s_expect_clean (e, "one two three four five six", 27, "one two three four five six");
    s_expect_clean (e, "abcdefghijklmnopqrstuvwxyz", 10, "abcdefghi\xe2\x80\xa6");
    s_expect_clean (e, "abcdef", 5, "abcd\xe2\x80\xa6");
    //  Characters, not bytes, and never half a character.
    s_expect_clean (e, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 3, "\xc3\xa9\xc3\xa9\xe2\x80\xa6");
    //  The byte cap holds whatever the limit.
    char *big = malloc (40001);
    memset (big, 'x', 40000);
    big[40000] = 0;
    big = reply_clean (big, e, 0, 16384);
    assert_true (strlen (big) <= 16384);
    assert_string_equal (big + strlen (big) - 3, "\xe2\x80\xa6");
    free (big);
    pcfg_destroy (&config);
}

int main (void)
{
    plog_init ("test", PLOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_messages),
        cmocka_unit_test (test_clean),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
