/*  The text and protocol helpers the platforms share: UTF-8 scrubbing,
    cutting in platform units, templates, IRC lines and tags, redaction,
    backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "net/phttp.h"
#include "net/pirc.h"
#include "net/ptext.h"

#include <stdlib.h>
#include <string.h>

static void test_utf8_validity_and_scrub (void **state)
{
    (void) state;
    assert_true (ptext_utf8_valid ("h\xC3\xA9llo \xF0\x9F\x98\x80", 11));
    assert_false (ptext_utf8_valid ("\xC0\xAF", 2));            //  overlong '/'
    assert_false (ptext_utf8_valid ("\xED\xA0\x80", 3));        //  a UTF-16 surrogate
    assert_false (ptext_utf8_valid ("\xF4\x90\x80\x80", 4));    //  beyond U+10FFFF
    assert_false (ptext_utf8_valid ("ab\xE2\x82", 4));          //  cut short
    assert_false (ptext_utf8_valid ("a\0b", 3));                //  NUL would cut a C string

    size_t len, bad;
    char *s = ptext_scrub ("{\"t\":\"a\xFFz\"}", 11, &len, &bad);
    assert_int_equal (bad, 1);
    assert_string_equal (s, "{\"t\":\"a" PTEXT_SENTINEL "z\"}");
    assert_int_equal (len, strlen (s));
    assert_true (ptext_has_sentinel (s));
    free (s);
    s = ptext_scrub ("clean", 5, &len, &bad);
    assert_int_equal (bad, 0);
    assert_string_equal (s, "clean");
    assert_false (ptext_has_sentinel (s));
    free (s);
}

static void test_cut (void **state)
{
    (void) state;
    const char *t = "hello big world";
    assert_int_equal (ptext_cut (t, strlen (t), 100, PTEXT_BYTES, true), strlen (t));
    //  Words stay whole: the cut moves back to the space.
    assert_int_equal (ptext_cut (t, strlen (t), 12, PTEXT_BYTES, true), 9);
    assert_int_equal (ptext_cut (t, strlen (t), 12, PTEXT_BYTES, false), 12);
    //  Never inside a character: "é" is two bytes, one code point, one UTF-16 unit.
    const char *e = "\xC3\xA9\xC3\xA9\xC3\xA9";
    assert_int_equal (ptext_cut (e, 6, 3, PTEXT_BYTES, false), 2);
    assert_int_equal (ptext_cut (e, 6, 2, PTEXT_CODEPOINTS, false), 4);
    //  An emoji is two UTF-16 units: one unit is not enough for it.
    const char *smile = "\xF0\x9F\x98\x80\xF0\x9F\x98\x80";
    assert_int_equal (ptext_cut (smile, 8, 3, PTEXT_UTF16, false), 4);
    assert_int_equal (ptext_cut (smile, 8, 1, PTEXT_UTF16, false), 0);
}

static const char *s_lookup (void *ctx, const char *name)
{
    (void) ctx;
    if (strcmp (name, "name") == 0)
        return "Joker";
    if (strcmp (name, "text") == 0)
        return "a {name} inside";
    return NULL;
}

static void test_fill (void **state)
{
    (void) state;
    char *s = ptext_fill ("{name}: {text} {unknown} {} {", s_lookup, NULL);
    //  Values are not filled again, unknown names stay.
    assert_string_equal (s, "Joker: a {name} inside {unknown} {} {");
    free (s);
}

static void test_irc_parse (void **state)
{
    (void) state;
    char line[] = "@badge-info=;display-name=Ana\\sB;id=abc-1;reply-parent-msg-id=p1;flag "
                  ":ana!ana@ana.tmi.twitch.tv PRIVMSG #chan :hello @bot: how are you";
    pirc_msg_t m;
    assert_int_equal (pirc_parse (line, &m), 0);
    assert_string_equal (m.command, "PRIVMSG");
    assert_string_equal (m.nick, "ana");
    assert_int_equal (m.param_count, 2);
    assert_string_equal (m.params[0], "#chan");
    assert_string_equal (m.params[1], "hello @bot: how are you");
    char v[64];
    assert_string_equal (pirc_tag (&m, "display-name", v, sizeof v), "Ana B");
    assert_string_equal (pirc_tag (&m, "id", v, sizeof v), "abc-1");
    assert_string_equal (pirc_tag (&m, "badge-info", v, sizeof v), "");
    assert_string_equal (pirc_tag (&m, "flag", v, sizeof v), "");
    assert_null (pirc_tag (&m, "i", v, sizeof v));
    assert_null (pirc_tag (&m, "missing", v, sizeof v));

    char ping[] = "PING :tmi.twitch.tv";
    assert_int_equal (pirc_parse (ping, &m), 0);
    assert_string_equal (m.command, "PING");
    assert_string_equal (m.params[0], "tmi.twitch.tv");

    char escaped[] = "@system-msg=a\\:b\\\\c\\rd :tmi.twitch.tv NOTICE #c :x";
    assert_int_equal (pirc_parse (escaped, &m), 0);
    assert_string_equal (pirc_tag (&m, "system-msg", v, sizeof v), "a;b\\c\rd");

    //  A value cut to fit its buffer ends at a character boundary.
    char cut[] = "@display-name=abcd\xc3\xa9" "f :x PRIVMSG #c :y";
    assert_int_equal (pirc_parse (cut, &m), 0);
    assert_string_equal (pirc_tag (&m, "display-name", v, 6), "abcd");
    assert_string_equal (pirc_tag (&m, "display-name", v, 7), "abcd\xc3\xa9");
    assert_string_equal (pirc_tag (&m, "display-name", v, 1), "");

    char bad[] = "@tags-without-command";
    assert_int_equal (pirc_parse (bad, &m), -1);
    char empty[] = ":prefix.only";
    assert_int_equal (pirc_parse (empty, &m), -1);
}

static void test_redact_and_backoff (void **state)
{
    (void) state;
    char out[200];
    phttp_redact ("GET /bot123:SECRET/getUpdates failed for 123:SECRET", "123:SECRET", out,
                  sizeof out);
    assert_string_equal (out, "GET /bot<redacted>/getUpdates failed for <redacted>");
    phttp_redact ("nothing to hide", NULL, out, sizeof out);
    assert_string_equal (out, "nothing to hide");
    phttp_redact ("abcdef", "cd", out, 6);      //  no room for the mark: cut, never the secret
    assert_null (strstr (out, "cd"));
    for (unsigned f = 0; f < 20; f++) {
        int64_t d = phttp_backoff_ms (f, 1000, 60000);
        int64_t full = f < 6 ? 1000LL << f : 60000;
        if (full > 60000)
            full = 60000;
        assert_in_range (d, full / 2, full);
    }
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_utf8_validity_and_scrub),
        cmocka_unit_test (test_cut),
        cmocka_unit_test (test_fill),
        cmocka_unit_test (test_irc_parse),
        cmocka_unit_test (test_redact_and_backoff),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
