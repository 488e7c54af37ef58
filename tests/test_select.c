/*  Who answers what: mentions, platform-marked mentions with UTF-16
    offsets, replies, responseChance statistics, allow/deny lists, the bot
    loop guard, priorities (entity, source, queueSettings; 99 = skip), and
    the indexed selection against the plain rule with 1,000 entities. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "common/pconfig.h"
#include "net/ptext.h"
#include "poller/select.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pcfg_t *s_config_text (const char *text)
{
    char err[512] = "";
    pcfg_t *config = pcfg_load_string (text, "test", true, err, sizeof err);
    if (!config)
        fail_msg ("config: %s", err);
    return config;
}

static pcfg_t *s_config (const char *entities)
{
    char text[4096];
    snprintf (text, sizeof text, "{\"entities\": %s}", entities);
    return s_config_text (text);
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

static void test_priorities_and_skip (void **state)
{
    (void) state;
    //  a: its own; b: the source's; c: queueSettings'; d: never answers plain
    //  messages (99); e: the "quiet" source says 99 for plain messages.
    pcfg_t *c = s_config_text (
        "{\"queueSettings\": {\"defaultPriority\": 40, \"mentionPriority\": 5},"
        " \"poller\": {\"sources\": ["
        "   {\"name\": \"tg\", \"type\": \"jsonl\", \"path\": \"-\", \"defaultPriority\": 60,"
        "    \"mentionPriority\": 20},"
        "   {\"name\": \"quiet\", \"type\": \"jsonl\", \"path\": \"-\", \"defaultPriority\": 99}]},"
        " \"entities\": ["
        "   {\"id\": \"a\", \"responseChance\": 1, \"defaultPriority\": 70, \"mentionPriority\": 1},"
        "   {\"id\": \"b\", \"responseChance\": 1},"
        "   {\"id\": \"d\", \"responseChance\": 1, \"defaultPriority\": 99}]}");
    selection_t sel[3];
    char ids[200];
    select_t *s = select_new (c);
    const pcfg_source_t *tg = &((const pcfg_source_t *) c->sources.items)[0];
    const pcfg_source_t *quiet = &((const pcfg_source_t *) c->sources.items)[1];
    int skipped = -1;

    chat_msg_t m = s_msg ("ana", "plain words");
    int n = select_run (s, tg, "tg/room", &m, "tg/room/1", 7, sel, &skipped);
    assert_string_equal (s_ids (c, sel, n, ids), "a,b");
    assert_int_equal (sel[0].priority, 70);     //  the entity's own
    assert_int_equal (sel[1].priority, 60);     //  the source's
    assert_int_equal (skipped, 1);              //  d: 99

    m = s_msg ("ana", "@a @b @d hello");
    n = select_run (s, tg, "tg/room", &m, "tg/room/2", 7, sel, &skipped);
    assert_string_equal (s_ids (c, sel, n, ids), "a,b,d");
    assert_int_equal (sel[0].priority, 1);
    assert_int_equal (sel[1].priority, 20);
    assert_int_equal (sel[2].priority, 20);     //  d answers mentions at the source's
    assert_int_equal (skipped, 0);

    //  No source: queueSettings'.
    n = select_run (s, NULL, "x/room", &m, "x/room/2", 7, sel, &skipped);
    assert_int_equal (sel[1].priority, 5);
    m = s_msg ("ana", "plain words");
    n = select_run (s, NULL, "x/room", &m, "x/room/3", 7, sel, &skipped);
    assert_string_equal (s_ids (c, sel, n, ids), "a,b");
    assert_int_equal (sel[1].priority, 40);

    //  The quiet source: b inherits 99 and is skipped; a keeps its own 70.
    n = select_run (s, quiet, "quiet/room", &m, "quiet/room/4", 7, sel, &skipped);
    assert_string_equal (s_ids (c, sel, n, ids), "a");
    assert_int_equal (skipped, 2);
    m = s_msg ("ana", "@b you there?");
    n = select_run (s, quiet, "quiet/room", &m, "quiet/room/5", 7, sel, &skipped);
    assert_string_equal (s_ids (c, sel, n, ids), "a,b");
    assert_int_equal (sel[1].priority, 5);      //  mentions: the source names none
    assert_int_equal (skipped, 1);              //  d

    //  The compatibility form finds the source by name.
    m = s_msg ("ana", "plain words");
    n = select_entities (c, "quiet", &m, "quiet/room/6", 7, sel);
    assert_string_equal (s_ids (c, sel, n, ids), "a");
    select_destroy (&s);
    pcfg_destroy (&c);
}

//  --- 1,000 entities: the index against the plain rule --------------------------------

#define MANY 1000

static bool s_plain_is (const pcfg_entity_t *e, const char *who)
{
    if (!who)
        return false;
    if (strcasecmp (who, e->name) == 0 || strcasecmp (who, e->id) == 0)
        return true;
    for (size_t i = 0; i < e->aliases.count; i++)
        if (strcasecmp (who, e->aliases.items[i]) == 0)
            return true;
    return false;
}

static bool s_plain_listed (const pcfg_strs_t *list, const char *chat_key)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp (list->items[i], chat_key) == 0)
            return true;
    return false;
}

//  select.h's rule written as plainly as possible: every entity, every name.
static int s_plain_select (const pcfg_t *c, const pcfg_source_t *src, const char *chat_key,
                           const chat_msg_t *msg, const char *key, selection_t *out, int *skipped)
{
    int author = -1;
    for (size_t i = 0; i < c->entities.count; i++)
        if (s_plain_is (pcfg_entity (c, i), msg->author))
            author = (int) i;
    bool from_bot = msg->from_bot || author >= 0;
    int n = 0;
    *skipped = 0;
    for (size_t i = 0; i < c->entities.count; i++) {
        const pcfg_entity_t *e = pcfg_entity (c, i);
        if (!e->enabled || (int) i == author || (from_bot && !e->answer_bots))
            continue;
        if ((e->allow_chats.count && !s_plain_listed (&e->allow_chats, chat_key))
            || s_plain_listed (&e->deny_chats, chat_key))
            continue;
        bool mention = select_mentions (msg->text, e->name) || select_mentions (msg->text, e->id)
                       || s_plain_is (e, msg->reply_to_author);
        for (size_t a = 0; !mention && a < e->aliases.count; a++)
            mention = select_mentions (msg->text, e->aliases.items[a]);
        for (size_t m = 0; !mention && m < msg->mention_count; m++)
            mention = s_plain_is (e, msg->mentions[m]);
        if (!mention
            && !(e->response_chance >= 1.0
                 || (e->response_chance > 0 && select_draw (7, key, e->id) < e->response_chance)))
            continue;
        int64_t p = mention ? e->mention_priority : e->default_priority;
        if (p < 0)
            p = mention ? src->mention_priority : src->default_priority;
        if (p < 0)
            p = mention ? c->mention_priority : c->default_priority;
        if (p == 99)
            (*skipped)++;
        else
            out[n++] = (selection_t) {(int) i, (int) p, mention};
    }
    return n;
}

//  A configuration of `count` entities with every kind of name and rule.
static pcfg_t *s_many (size_t count)
{
    size_t cap = 4096 + count * 400;
    char *text = malloc (cap);
    size_t len = (size_t) snprintf (text, cap,
                                    "{\"poller\": {\"sources\": [{\"name\": \"src\", \"type\": \"jsonl\","
                                    " \"path\": \"-\", \"mentionPriority\": 15}]}, \"entities\": [");
    for (size_t i = 0; i < count; i++) {
        char extra[300] = "";
        if (i % 10 == 3)
            strcat (extra, ", \"aliases\": [\"Alias");
        if (i % 10 == 3)
            snprintf (extra + strlen (extra), 100, "%zu\", \"jo-ker%zu\"]", i, i);
        if (i % 50 == 7)
            strcat (extra, ", \"enabled\": false");
        if (i % 17 == 5)
            strcat (extra, ", \"answerBots\": true");
        if (i % 23 == 9)
            strcat (extra, ", \"allowChats\": [\"src/r1\"]");
        if (i % 29 == 11)
            strcat (extra, ", \"denyChats\": [\"src/r2\"]");
        if (i % 31 == 13)
            strcat (extra, ", \"defaultPriority\": 99");
        if (i % 37 == 15)
            strcat (extra, ", \"mentionPriority\": 99");
        const char *chance = i % 100 == 0 ? "0.2" : i % 333 == 1 ? "1" : "0";
        len += (size_t) snprintf (text + len, cap - len,
                                  "%s{\"id\": \"e%zu\", \"name\": \"Ent%zu\", \"responseChance\": %s%s}",
                                  i ? "," : "", i, i, chance, extra);
    }
    snprintf (text + len, cap - len, "]}");
    pcfg_t *c = s_config_text (text);
    free (text);
    return c;
}

static const char *s_name_of (const pcfg_t *c, unsigned r)
{
    const pcfg_entity_t *e = pcfg_entity (c, (r / 4) % c->entities.count);
    if (r % 4 == 0)
        return e->id;
    if (r % 4 == 1 || e->aliases.count == 0)
        return e->name;
    return e->aliases.items[(r / 4) % e->aliases.count];
}

//  A text of a few words, some of them mentions, near misses or addresses.
static void s_random_text (const pcfg_t *c, unsigned *seed, char *out, size_t len)
{
    static const char *words[] = {"hello", "what", "do you think", "ok?", "@", "@@", "x@y",
                                  "\xE2\x80\x99s", "(", ")", ",", "!"};
    out[0] = 0;
    int count = 1 + rand_r (seed) % 6;
    for (int w = 0; w < count; w++) {
        char word[200];
        unsigned r = (unsigned) rand_r (seed);
        const char *name = s_name_of (c, r >> 3);
        switch (r % 8) {
        case 0: case 1: snprintf (word, sizeof word, "@%s", name); break;
        case 2: snprintf (word, sizeof word, "@%s_x", name); break;     //  a longer name
        case 3: snprintf (word, sizeof word, "ana@%s.com", name); break;    //  an address
        case 4: {   //  any case
            snprintf (word, sizeof word, "@%s", name);
            for (char *p = word; *p; p++)
                if (rand_r (seed) % 2)
                    *p = (char) (*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
            break;
        }
        case 5: snprintf (word, sizeof word, "@%s%s", name, words[rand_r (seed) % 12]); break;
        default: snprintf (word, sizeof word, "%s", words[rand_r (seed) % 12]);
        }
        if (strlen (out) + strlen (word) + 2 < len) {
            if (w)
                strcat (out, rand_r (seed) % 3 ? " " : "");
            strcat (out, word);
        }
    }
}

static void test_thousand_entities_match_the_plain_rule (void **state)
{
    (void) state;
    pcfg_t *c = s_many (MANY);
    assert_int_equal (c->entities.count, MANY);
    const pcfg_source_t *src = c->sources.items;
    select_t *s = select_new (c);
    selection_t *fast = calloc (MANY, sizeof *fast), *plain = calloc (MANY, sizeof *plain);
    unsigned seed = 12345;
    int total = 0, mentions = 0, skips = 0;
    for (int i = 0; i < 600; i++) {
        char text[600], key[64], author[64];
        s_random_text (c, &seed, text, sizeof text);
        snprintf (key, sizeof key, "src/r%d/m%d", i % 3, i);
        unsigned r = (unsigned) rand_r (&seed);
        //  Some messages are written by an entity, some by a platform bot.
        snprintf (author, sizeof author, "%s", r % 5 == 0 ? s_name_of (c, r >> 3) : "someone");
        const char *platform[2] = {s_name_of (c, r >> 5), "nobody"};
        chat_msg_t m = s_msg (author, text);
        char chat[8];
        snprintf (chat, sizeof chat, "r%d", i % 3);
        m.chat_ref = chat;
        m.from_bot = r % 7 == 0;
        m.reply_to_author = r % 6 == 0 ? s_name_of (c, r >> 9) : NULL;
        if (r % 4 == 0) {
            m.mentions = platform;
            m.mention_count = 2;
        }
        char chat_key[16];
        snprintf (chat_key, sizeof chat_key, "src/%s", chat);
        int fast_skipped, plain_skipped;
        int n = select_run (s, src, chat_key, &m, key, 7, fast, &fast_skipped);
        int k = s_plain_select (c, src, chat_key, &m, key, plain, &plain_skipped);
        if (n != k || fast_skipped != plain_skipped)
            fail_msg ("message %d \"%s\" by %s: %d selected and %d skipped, the rule says %d and %d",
                      i, text, author, n, fast_skipped, k, plain_skipped);
        for (int j = 0; j < n; j++) {
            assert_int_equal (fast[j].entity, plain[j].entity);
            assert_int_equal (fast[j].priority, plain[j].priority);
            assert_int_equal (fast[j].mention, plain[j].mention);
            mentions += fast[j].mention;
        }
        assert_int_equal (select_who (s, author), select_author_entity (c, &m));
        total += n;
        skips += fast_skipped;
    }
    //  The mix really exercised mentions, draws and skips.
    assert_true (mentions > 200);
    assert_true (total - mentions > 100);
    assert_true (skips > 5);
    free (fast);
    free (plain);
    select_destroy (&s);
    pcfg_destroy (&c);
}

static void test_names_that_are_not_plain_words (void **state)
{
    (void) state;
    pcfg_t *c = s_config ("[{\"id\":\"joker\",\"aliases\":[\"jo-ker\",\"mr joker\"],\"responseChance\":0},"
                          "{\"id\":\"jo\",\"responseChance\":0}]");
    selection_t sel[2];
    char ids[200];
    select_t *s = select_new (c);
    struct {
        const char *text, *want;
    } cases[] = {
        {"@jo-ker hi", "joker,jo"},    //  the alias with a dash, and "@jo" before the dash
        {"@JO-KER", "joker,jo"},
        {"@jo-kers", "jo"},            //  "jo-kers" is not "jo-ker"; "@jo" still is
        {"@mr joker, hi", "joker"},
        {"@mr jokers", ""},
        {"ana@jo-ker", ""},            //  inside a word
        {"@jo", "jo"},
        {"@joker", "joker"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        chat_msg_t m = s_msg ("ana", cases[i].text);
        int n = select_run (s, NULL, "tg/room", &m, "tg/room/1", 7, sel, NULL);
        assert_string_equal (s_ids (c, sel, n, ids), cases[i].want);
    }
    select_destroy (&s);
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
        cmocka_unit_test (test_priorities_and_skip),
        cmocka_unit_test (test_names_that_are_not_plain_words),
        cmocka_unit_test (test_thousand_entities_match_the_plain_rule),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
