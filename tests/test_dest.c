/*  The sink's safety net for platform limits (dest_limit) and the outbox
    that holds, splits and resumes posts (dest_outbox), on a virtual clock;
    and the JSON-lines destination: its lines, and its writes when they fail
    part way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sink/dest.h"
#include "sink/dest_limit.h"
#include "sink/dest_outbox.h"
#include "net/ptext.h"
#include "proto/proto.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_sliding_windows (void **state)
{
    (void) state;
    dest_rule_t rules[] = {{DEST_SCOPE_ALL, 3, 1000}, {DEST_SCOPE_GROUP, 2, 10000},
                           {DEST_SCOPE_PRIVATE, 1, 1000}};
    dest_limit_t *l = dest_limit_new (rules, 3);
    int64_t t = 100000;
    //  A group: 2 per 10 s.
    assert_int_equal (dest_limit_next (l, "-1", false, t), t);
    dest_limit_record (l, "-1", false, t);
    dest_limit_record (l, "-1", false, t + 10);
    assert_int_equal (dest_limit_next (l, "-1", false, t + 20), t + 10000);
    //  Another group is not held by the first, but the overall 3/s counts both.
    assert_int_equal (dest_limit_next (l, "-2", false, t + 20), t + 20);
    dest_limit_record (l, "-2", false, t + 20);
    assert_int_equal (dest_limit_next (l, "-3", false, t + 30), t + 1000);
    //  Private chats: 1 per second each, and the group rule does not apply.
    assert_int_equal (dest_limit_next (l, "7", true, t + 1000), t + 1000);
    dest_limit_record (l, "7", true, t + 1000);
    assert_int_equal (dest_limit_next (l, "7", true, t + 1001), t + 2000);
    //  A 429 about one chat holds that chat; one about the account, everything.
    dest_limit_pause (l, "8", t + 20000);
    assert_true (dest_limit_chat_paused (l, "8", t + 3000));
    assert_int_equal (dest_limit_paused_chats (l, t + 3000), 1);
    assert_int_equal (dest_limit_next (l, "8", true, t + 3000), t + 20000);
    assert_int_equal (dest_limit_next (l, "9", true, t + 3000), t + 3000);
    dest_limit_pause (l, NULL, t + 50000);
    assert_int_equal (dest_limit_next (l, "9", true, t + 3000), t + 50000);
    dest_limit_destroy (&l);
    assert_null (l);
}

static void test_platform_rules (void **state)
{
    (void) state;
    char err[300];
    pcfg_t *c = pcfg_load_string (
        "{\"sink\":{\"destinations\":["
        "{\"name\":\"tg\",\"type\":\"telegram\"},"
        "{\"name\":\"tw\",\"type\":\"twitch\",\"moderator\":true,"
        " \"limits\":[{\"scope\":\"chat\",\"count\":1,\"perMs\":1500}]},"
        "{\"name\":\"raw\",\"type\":\"twitch\",\"platformLimits\":false}]}}",
        "test", true, err, sizeof err);
    assert_non_null (c);
    const pcfg_destination_t *d = c->destinations.items;
    dest_rule_t r[DEST_MAX_RULES];
    assert_int_equal (dest_limit_rules (&d[0], r, DEST_MAX_RULES), 3);
    assert_true (r[0].scope == DEST_SCOPE_ALL && r[0].count == 30 && r[0].per_ms == 1000);
    assert_true (r[1].scope == DEST_SCOPE_GROUP && r[1].count == 20 && r[1].per_ms == 60000);
    assert_true (r[2].scope == DEST_SCOPE_PRIVATE && r[2].count == 1 && r[2].per_ms == 1000);
    assert_int_equal (dest_limit_rules (&d[1], r, DEST_MAX_RULES), 2);
    assert_true (r[0].count == 100 && r[0].per_ms == 30000);
    assert_true (r[1].scope == DEST_SCOPE_CHAT && r[1].count == 1 && r[1].per_ms == 1500);
    assert_int_equal (dest_limit_rules (&d[2], r, DEST_MAX_RULES), 0);
    //  Held with margins: 5 % longer, at least 100 ms (the defaults).
    assert_int_equal (dest_limit_held_rules (&d[0], r, DEST_MAX_RULES), 3);
    assert_true (r[0].per_ms == 1100 && r[1].per_ms == 63000 && r[2].per_ms == 1100);
    pcfg_destroy (&c);
}

//  --- the outbox, with a destination that records what it sends ----------------------

typedef struct {
    char sent[32][600];
    int sent_count;
    dest_item_t *last;
    int ready;              //  send returns 1 while 0
    int done_status[16];
    char done_reason[16][600];
    int done_count;
} s_rec_t;

static s_rec_t s_rec;

static int s_send (dest_t *dest, dest_item_t *item, int64_t now, char *why, size_t whylen)
{
    (void) dest, (void) now;
    if (!s_rec.ready) {
        snprintf (why, whylen, "offline");
        return 1;
    }
    snprintf (s_rec.sent[s_rec.sent_count++], 600, "%s", item->parts[item->part_next]);
    s_rec.last = item;
    return 0;
}

static void s_done (void *ctx, void *tag, int status, const char *reason, int64_t retry_after)
{
    (void) ctx, (void) tag, (void) retry_after;
    s_rec.done_status[s_rec.done_count] = status;
    snprintf (s_rec.done_reason[s_rec.done_count++], 600, "%s", reason ? reason : "");
}

static dest_t *s_dest (pcfg_t **config, const char *json)
{
    char err[300];
    *config = pcfg_load_string (json, "test", true, err, sizeof err);
    assert_non_null (*config);
    dest_t *d = calloc (1, sizeof *d);
    d->config = (*config)->destinations.items;
    d->root = *config;
    d->done = s_done;
    return d;
}

static dest_post_t s_post (const char *msg_key, const char *text)
{
    dest_post_t p = {msg_key, "joker", "Joker", "tg/-1", "tg", "-1", "5", "ana", text, 0, 1, 1, 10};
    return p;
}

static void test_outbox_split_order_and_resume (void **state)
{
    (void) state;
    memset (&s_rec, 0, sizeof s_rec);
    s_rec.ready = 1;
    pcfg_t *config;
    dest_t *d = s_dest (&config, "{\"sink\":{\"destinations\":[{\"name\":\"x\",\"type\":\"http\","
                                 "\"maxLength\":10}]}}");
    dest_outbox_t *box = dest_outbox_new (d, s_send, PTEXT_BYTES, 0);
    dest_rule_t none[1];
    dest_limit_t *limit = dest_limit_new (none, 0);
    dest_post_t p = s_post ("tg/-1/5", "one two three four");
    dest_outbox_add (box, &p, NULL, p.text, "-1", false, NULL, limit);
    dest_post_t q = s_post ("tg/-1/6", "short");
    dest_outbox_add (box, &q, NULL, q.text, "-1", false, NULL, limit);
    dest_outbox_run (box, 1000);
    //  One post in flight per chat: the second waits for the first.
    assert_int_equal (s_rec.sent_count, 1);
    assert_string_equal (s_rec.sent[0], "one two");
    dest_outbox_part_done (box, s_rec.last, DEST_OK, NULL, 0, 1001);
    dest_outbox_run (box, 1002);
    assert_string_equal (s_rec.sent[1], "three four");
    //  The second part fails: the reply is handed back, the first part remembered.
    dest_outbox_part_done (box, s_rec.last, DEST_RETRY, "HTTP 503", 0, 1003);
    assert_int_equal (s_rec.done_count, 1);
    assert_int_equal (s_rec.done_status[0], DEST_RETRY);
    assert_string_equal (s_rec.done_reason[0], "part 2 of 2: HTTP 503");
    dest_outbox_run (box, 1004);
    assert_string_equal (s_rec.sent[2], "short");
    dest_outbox_part_done (box, s_rec.last, DEST_OK, NULL, 0, 1005);
    assert_int_equal (s_rec.done_status[1], DEST_OK);
    //  The sink retries the first reply: only its second part goes again.
    dest_outbox_add (box, &p, NULL, p.text, "-1", false, NULL, limit);
    dest_outbox_run (box, 2000);
    assert_int_equal (s_rec.sent_count, 4);
    assert_string_equal (s_rec.sent[3], "three four");
    dest_outbox_part_done (box, s_rec.last, DEST_OK, NULL, 0, 2001);
    assert_int_equal (s_rec.done_status[2], DEST_OK);
    assert_int_equal (dest_outbox_size (box), 0);
    dest_outbox_destroy (&box);
    dest_limit_destroy (&limit);
    free (d);
    pcfg_destroy (&config);
}

static void test_outbox_trim_limits_and_timeout (void **state)
{
    (void) state;
    memset (&s_rec, 0, sizeof s_rec);
    pcfg_t *config;
    dest_t *d = s_dest (&config, "{\"sink\":{\"destinations\":[{\"name\":\"x\",\"type\":\"http\","
                                 "\"maxLength\":8,\"overLength\":\"trim\",\"timeoutMs\":5000}]}}");
    dest_outbox_t *box = dest_outbox_new (d, s_send, PTEXT_CODEPOINTS, 0);
    dest_rule_t rules[] = {{DEST_SCOPE_ALL, 1, 1000}};
    dest_limit_t *limit = dest_limit_new (rules, 1);
    dest_post_t p = s_post ("k/1", "abc def ghi jkl");
    dest_outbox_add (box, &p, NULL, p.text, "-1", false, NULL, limit);
    dest_post_t q = s_post ("k/2", "second");
    dest_outbox_add (box, &q, NULL, q.text, "-2", false, NULL, limit);
    //  Not ready: both wait, then time out as retries.
    dest_outbox_run (box, 1000);
    assert_int_equal (dest_outbox_wakeup (box, 1000), 6000);
    dest_outbox_run (box, 6000);
    assert_int_equal (s_rec.done_count, 2);
    assert_int_equal (s_rec.done_status[0], DEST_RETRY);
    assert_non_null (strstr (s_rec.done_reason[0], "offline"));
    //  Ready: the trimmed text; while it is under way it fills the 1/s rule,
    //  then the rule holds the next one a second from its answer (7300).
    s_rec.ready = 1;
    dest_outbox_add (box, &p, NULL, p.text, "-1", false, NULL, limit);
    dest_outbox_add (box, &q, NULL, q.text, "-2", false, NULL, limit);
    dest_outbox_run (box, 7000);
    assert_int_equal (s_rec.sent_count, 1);
    assert_string_equal (s_rec.sent[0], "abc def\xE2\x80\xA6");
    assert_int_equal (dest_outbox_wakeup (box, 7100), DEST_NEVER);
    dest_outbox_run (box, 7200);
    assert_int_equal (s_rec.sent_count, 1);
    dest_outbox_part_done (box, s_rec.last, DEST_OK, NULL, 0, 7300);
    dest_outbox_run (box, 7500);
    assert_int_equal (s_rec.sent_count, 1);
    assert_int_equal (dest_outbox_wakeup (box, 7500), 8300);
    dest_outbox_run (box, 8299);
    assert_int_equal (s_rec.sent_count, 1);
    dest_outbox_run (box, 8300);
    assert_int_equal (s_rec.sent_count, 2);
    assert_string_equal (s_rec.sent[1], "second");
    dest_outbox_destroy (&box);
    dest_limit_destroy (&limit);
    free (d);
    pcfg_destroy (&config);
}

//  A post as the outbox sees it: its chat, priority and age.
static dest_post_t s_ranked (const char *msg_key, const char *chat, int priority, int64_t created)
{
    dest_post_t p = {msg_key, "joker", "Joker", "tg/x", "tg", chat, "5", "ana", msg_key,
                     created, 1, 1, priority};
    return p;
}

static void test_outbox_mentions_first (void **state)
{
    (void) state;
    memset (&s_rec, 0, sizeof s_rec);
    s_rec.ready = 1;
    pcfg_t *config;
    dest_t *d = s_dest (&config, "{\"sink\":{\"destinations\":[{\"name\":\"x\",\"type\":\"http\"}]}}");
    dest_outbox_t *box = dest_outbox_new (d, s_send, PTEXT_BYTES, 0);
    //  Two posts per 20 s for the account, one per 10 s in each chat.
    dest_rule_t rules[] = {{DEST_SCOPE_ALL, 2, 20000}, {DEST_SCOPE_CHAT, 1, 10000}};
    dest_limit_t *limit = dest_limit_new (rules, 2);
    int64_t t = 100000;
    //  Chatter that waited longest, then two mentions in chat A.
    dest_post_t c1 = s_ranked ("c1", "B", 50, t - 60000);
    dest_post_t m1 = s_ranked ("m1", "A", 10, t - 2000), m2 = s_ranked ("m2", "A", 10, t - 1000);
    dest_outbox_add (box, &c1, NULL, c1.text, "B", false, NULL, limit);
    dest_outbox_add (box, &m2, NULL, m2.text, "A", false, NULL, limit);
    dest_outbox_add (box, &m1, NULL, m1.text, "A", false, NULL, limit);
    dest_outbox_run (box, t);
    assert_int_equal (s_rec.sent_count, 1);
    assert_string_equal (s_rec.sent[0], "m1");
    dest_outbox_part_done (box, s_rec.last, DEST_OK, NULL, 0, t + 1);
    //  m2 waits for chat A until t + 10001; the account could take c1 now,
    //  but then m2 would wait until t + 20001: c1 waits instead.
    for (int64_t at = t + 2; at < t + 10001; at += 999)
        dest_outbox_run (box, at);
    assert_int_equal (s_rec.sent_count, 1);
    dest_outbox_run (box, t + 10001);
    assert_int_equal (s_rec.sent_count, 2);
    assert_string_equal (s_rec.sent[1], "m2");
    dest_outbox_part_done (box, s_rec.last, DEST_OK, NULL, 0, t + 10002);
    //  The account's window is full until a window after m1's answer.
    dest_outbox_run (box, t + 20000);
    assert_int_equal (s_rec.sent_count, 2);
    assert_int_equal (dest_outbox_wakeup (box, t + 20000), t + 20001);
    dest_outbox_run (box, t + 20001);
    assert_int_equal (s_rec.sent_count, 3);
    assert_string_equal (s_rec.sent[2], "c1");
    dest_outbox_part_done (box, s_rec.last, DEST_OK, NULL, 0, t + 20002);
    dest_outbox_destroy (&box);
    dest_limit_destroy (&limit);
    free (d);
    pcfg_destroy (&config);
}

//  The sink's answer when a reply is about to leave.
static int s_answers[8];
static int s_asked;

static int s_sending (void *ctx, void *tag, int64_t now)
{
    (void) ctx, (void) tag, (void) now;
    return s_answers[s_asked++];
}

static void test_outbox_asks_before_sending (void **state)
{
    (void) state;
    memset (&s_rec, 0, sizeof s_rec);
    s_rec.ready = 1;
    pcfg_t *config;
    dest_t *d = s_dest (&config, "{\"sink\":{\"destinations\":[{\"name\":\"x\",\"type\":\"http\"}]}}");
    d->sending = s_sending;
    dest_outbox_t *box = dest_outbox_new (d, s_send, PTEXT_BYTES, 0);
    dest_rule_t rules[] = {{DEST_SCOPE_ALL, 1, 1000}};
    dest_limit_t *limit = dest_limit_new (rules, 1);
    s_asked = 0;
    s_answers[0] = DEST_SEND_LATER;     //  the mark is being stored
    s_answers[1] = DEST_SEND_GO;
    s_answers[2] = DEST_SEND_DROP;      //  too late by the time it may go
    dest_post_t a = s_ranked ("a", "A", 10, 1), b = s_ranked ("b", "B", 10, 2);
    dest_outbox_add (box, &a, NULL, a.text, "A", false, NULL, limit);
    dest_outbox_add (box, &b, NULL, b.text, "B", false, NULL, limit);
    dest_outbox_run (box, 5000);
    //  a waits for its mark, and keeps its place: b does not take the window.
    assert_int_equal (s_rec.sent_count, 0);
    assert_int_equal (s_asked, 1);
    dest_outbox_run (box, 5001);
    assert_int_equal (s_rec.sent_count, 1);
    assert_string_equal (s_rec.sent[0], "a");
    //  A post under way fills the window until its answer.
    dest_outbox_run (box, 9000);
    assert_int_equal (s_asked, 2);
    dest_outbox_part_done (box, s_rec.last, DEST_OK, NULL, 0, 9500);
    dest_outbox_run (box, 10499);
    assert_int_equal (s_asked, 2);
    dest_outbox_run (box, 10500);
    assert_int_equal (s_asked, 3);
    assert_int_equal (s_rec.sent_count, 1);
    assert_int_equal (s_rec.done_count, 2);
    assert_int_equal (s_rec.done_status[1], DEST_DROPPED);
    assert_int_equal (dest_outbox_size (box), 0);
    dest_outbox_destroy (&box);
    dest_limit_destroy (&limit);
    free (d);
    pcfg_destroy (&config);
}

//  --- jsonl: a write that fails part way -------------------------------------------

typedef struct {
    int status;
    char reason[600];
    int count;
} s_outcome_t;

//  A configuration whose one destination is the jsonl file `path`; NULL
//  if it does not load (callers in child processes cannot use fail_msg).
//  A scratch directory for a jsonl destination's file.
typedef struct {
    char dir[32];
    char path[300];
} scratch_t;

static void s_scratch (scratch_t *t)
{
    snprintf (t->dir, sizeof t->dir, "/tmp/parley-test-dest-XXXXXX");
    assert_non_null (mkdtemp (t->dir));
    snprintf (t->path, sizeof t->path, "%s/replies.jsonl", t->dir);
}

static void s_scratch_remove (scratch_t *t)
{
    unlink (t->path);
    rmdir (t->dir);
}

//  Runs `steps` on `path` in a child process (a file size limit applies to
//  the whole process) and fails with the step that went wrong.
static void s_in_child (int (*steps) (const char *path), const char *path, const char *what)
{
    fflush (NULL);
    pid_t pid = fork ();
    assert_true (pid >= 0);
    if (pid == 0)
        _exit (steps (path));
    int status = 0;
    assert_int_equal (waitpid (pid, &status, 0), pid);
    assert_true (WIFEXITED (status));
    if (WEXITSTATUS (status))
        fail_msg ("step %d of the %s test failed", WEXITSTATUS (status), what);
}

static pcfg_t *s_jsonl_config (const char *path)
{
    char json[600], err[300];
    snprintf (json, sizeof json,
              "{\"sink\":{\"destinations\":[{\"name\":\"out\",\"type\":\"jsonl\","
              "\"path\":\"%s\"}]}}",
              path);
    return pcfg_load_string (json, "test", true, err, sizeof err);
}

static void s_jsonl_done (void *ctx, void *tag, int status, const char *reason, int64_t retry_after)
{
    (void) tag, (void) retry_after;
    s_outcome_t *o = ctx;
    o->status = status;
    snprintf (o->reason, sizeof o->reason, "%s", reason ? reason : "");
    o->count++;
}

//  A jsonl destination writing `path` and reporting into `o`; *config is
//  NULL if the configuration cannot be made, the result NULL if the
//  destination cannot.
static dest_t *s_jsonl_open (const char *path, pcfg_t **config, s_outcome_t *o)
{
    *config = s_jsonl_config (path);
    if (!*config)
        return NULL;
    dest_events_t events = {.done = s_jsonl_done, .ctx = o};
    return dest_new ((*config)->destinations.items, *config, &events);
}

//  Each line of the file is a whole JSON object; returns how many, or -1.
static int s_whole_lines (const char *path, char keys[][32], int max)
{
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    char line[4096];
    int n = 0;
    while (fgets (line, sizeof line, f)) {
        size_t len = strlen (line);
        json_t *obj = json_loads (line, 0, NULL);
        const char *key = json_string_value (json_object_get (obj, "msg_key"));
        bool whole = len && line[len - 1] == '\n' && key && n < max;
        if (whole)
            snprintf (keys[n++], 32, "%s", key);
        json_decref (obj);
        if (!whole) {
            fclose (f);
            return -1;
        }
    }
    fclose (f);
    return n;
}

//  The steps, in a child process: a file size limit applies to the whole
//  process. Returns 0, or the number of the step that went wrong.
static int s_torn_write_steps (const char *path)
{
    pcfg_t *config;
    s_outcome_t o = {0};
    dest_t *d = s_jsonl_open (path, &config, &o);
    if (!config)
        return 1;
    if (!d)
        return 2;
    dest_post_t p = s_post ("tg/-1/1", "the first reply, written whole");
    d->post (d, &p, NULL, 1000);
    d->flush (d);
    struct stat st;
    if (o.count != 1 || o.status != DEST_OK || stat (path, &st))
        return 3;
    off_t one_line = st.st_size;
    //  Room for a few bytes more: the next line is cut short, then refused (EFBIG).
    signal (SIGXFSZ, SIG_IGN);
    struct rlimit old, small;
    getrlimit (RLIMIT_FSIZE, &old);
    small = old;
    small.rlim_cur = (rlim_t) one_line + 20;
    if (setrlimit (RLIMIT_FSIZE, &small))
        return 4;
    p = s_post ("tg/-1/2", "the second reply, which does not fit");
    d->post (d, &p, NULL, 2000);
    d->flush (d);
    if (o.count != 2 || o.status != DEST_RETRY)
        return 5;
    //  The reason names the file and the error.
    if (!strstr (o.reason, path) || !strstr (o.reason, strerror (EFBIG)))
        return 6;
    //  The file ends with the first line, whole: the torn part is gone.
    if (stat (path, &st) || st.st_size != one_line)
        return 7;
    setrlimit (RLIMIT_FSIZE, &old);
    p = s_post ("tg/-1/3", "the third reply, after the disk has room again");
    d->post (d, &p, NULL, 3000);
    d->flush (d);
    if (o.count != 3 || o.status != DEST_OK)
        return 8;
    char keys[8][32];
    if (s_whole_lines (path, keys, 8) != 2 || strcmp (keys[0], "tg/-1/1")
        || strcmp (keys[1], "tg/-1/3"))
        return 9;
    //  And what it wrote can be looked up after a crash.
    if (d->was_posted (d, "tg/-1/3", "joker") != 1 || d->was_posted (d, "tg/-1/2", "joker") != 0)
        return 10;
    dest_destroy (&d);
    pcfg_destroy (&config);
    return 0;
}

static void test_jsonl_torn_write_is_cut_back (void **state)
{
    (void) state;
    scratch_t t;
    s_scratch (&t);
    const char *path = t.path;
    s_in_child (s_torn_write_steps, path, "torn write");
    s_scratch_remove (&t);
}

//  --- jsonl: a line torn by a crash is cut off at the next start ---------------------

static void test_jsonl_torn_tail_cut_at_start (void **state)
{
    (void) state;
    scratch_t t;
    s_scratch (&t);
    const char *path = t.path;
    //  What a sink killed in the middle of a turn's write leaves behind.
    const char *before = "{\"msg_key\":\"a\"}\n{\"msg_key\":\"b\",\"te";
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    fputs (before, f);
    fclose (f);
    pcfg_t *config;
    s_outcome_t o = {0};
    dest_t *d = s_jsonl_open (path, &config, &o);
    assert_non_null (config);
    assert_non_null (d);
    //  The torn reply was never reported posted, so it is not "posted" either.
    assert_int_equal (d->was_posted (d, "a", "joker"), 0);
    dest_post_t p = s_post ("tg/-1/c", "after the restart");
    d->post (d, &p, NULL, 1000);
    d->flush (d);
    assert_int_equal (o.status, DEST_OK);
    f = fopen (path, "r");
    assert_non_null (f);
    char line[2048];
    int lines = 0;
    while (fgets (line, sizeof line, f)) {
        json_t *obj = json_loads (line, 0, NULL);
        assert_non_null (obj);      //  every line whole
        json_decref (obj);
        lines++;
    }
    fclose (f);
    assert_int_equal (lines, 2);
    dest_destroy (&d);
    pcfg_destroy (&config);
    s_scratch_remove (&t);
}

//  --- jsonl: each line is what jansson writes for the post --------------------------

static void test_jsonl_lines_as_jansson_writes_them (void **state)
{
    (void) state;
    scratch_t t;
    s_scratch (&t);
    const char *path = t.path;
    pcfg_t *config;
    s_outcome_t o = {0};
    dest_t *d = s_jsonl_open (path, &config, &o);
    assert_non_null (config);
    assert_non_null (d);
    //  Plain text, every kind of escape, text beyond ASCII, an empty string.
    const char *texts[] = {"a plain reply, the common case",
                           "\"quoted\" and back\\slash / slash",
                           "tab\there, newline\nthere, bell\a, delete\x7f, \b\f\r\x01\x1f, nul-free",
                           "caf\xc3\xa9 \xe2\x80\xa6 \xf0\x9f\x98\x80 (two code units)",
                           ""};
    size_t n = sizeof texts / sizeof texts[0];
    char *expected = NULL;
    size_t expected_len = 0;
    for (size_t i = 0; i < n; i++) {
        dest_post_t p = s_post (i % 2 ? "tg/-1/\"x\"" : "tg/-1/1", texts[i]);
        p.author = texts[(i + 1) % n];
        p.created_ms = i == 3 ? -5 : (int64_t) 1700000000000 + (int64_t) i;
        p.job_id = UINT64_C (1) << 62;
        int64_t now = 1700000000123 + (int64_t) i;
        d->post (d, &p, NULL, now);
        d->flush (d);
        assert_int_equal (o.count, (int) i + 1);
        assert_int_equal (o.status, DEST_OK);
        json_t *line = json_pack (
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "msg_key", p.msg_key,
            "entity", p.entity_id, "chat", p.chat, "source", p.source, "chat_ref", p.chat_ref,
            "reply_to", p.msg_ref, "author", p.author, "text", p.text, "created_ms",
            (json_int_t) p.created_ms, "posted_ms", (json_int_t) now, "job_id",
            (json_int_t) p.job_id, "attempt", (json_int_t) p.attempt);
        assert_non_null (line);
        char *text = json_dumps (line, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref (line);
        size_t len = strlen (text);
        expected = realloc (expected, expected_len + len + 2);
        memcpy (expected + expected_len, text, len);
        expected[expected_len + len] = '\n';
        expected_len += len + 1;
        expected[expected_len] = 0;
        free (text);
    }
    //  Text that is not UTF-8 cannot be a JSON string: the post fails, nothing is written.
    dest_post_t bad = s_post ("tg/-1/9", "broken \xc3 sequence");
    d->post (d, &bad, NULL, 5000);
    d->flush (d);
    assert_int_equal (o.status, DEST_FAIL);
    FILE *f = fopen (path, "r");
    assert_non_null (f);
    char got[8192];
    size_t got_len = fread (got, 1, sizeof got - 1, f);
    got[got_len] = 0;
    fclose (f);
    assert_string_equal (got, expected);
    free (expected);
    dest_destroy (&d);
    pcfg_destroy (&config);
    s_scratch_remove (&t);
}

//  --- jsonl: a turn's lines go in one write; a write cut short keeps the whole lines ---

typedef struct {
    int status[4];              //  by tag; -1 = not reported
    int first[4];
} s_turn_t;

static void s_turn_done (void *ctx, void *tag, int status, const char *reason, int64_t retry_after)
{
    (void) reason, (void) retry_after;
    s_turn_t *t = ctx;
    t->status[(intptr_t) tag] = status;
}

static void s_turn_first (void *ctx, void *tag, int64_t at)
{
    (void) at;
    s_turn_t *t = ctx;
    t->first[(intptr_t) tag]++;
}

//  In a child process (a file size limit applies to the whole process):
//  0, or the number of the step that went wrong.
static int s_turn_steps (const char *path)
{
    pcfg_t *config = s_jsonl_config (path);
    if (!config)
        return 1;
    s_turn_t t = {{-1, -1, -1, -1}, {0}};
    dest_events_t events = {.done = s_turn_done, .first = s_turn_first, .ctx = &t};
    dest_t *d = dest_new (config->destinations.items, config, &events);
    if (!d)
        return 2;
    //  Three posts: nothing is written, nothing reported, until the flush.
    const char *keys[] = {"", "tg/-1/1", "tg/-1/2", "tg/-1/3"};
    dest_post_t p[4];
    for (int i = 1; i <= 3; i++) {
        p[i] = s_post (keys[i], "a reply of the turn");
        d->post (d, &p[i], (void *) (intptr_t) i, 1000 + i);
    }
    struct stat st;
    if (t.status[1] != -1 || t.status[3] != -1 || (stat (path, &st) == 0 && st.st_size != 0))
        return 3;
    //  Room for the first line and half of the second: one write, cut short.
    d->flush (d);
    if (t.status[1] != DEST_OK || t.status[2] != DEST_OK || t.status[3] != DEST_OK
        || stat (path, &st))
        return 4;
    off_t three = st.st_size, one = three / 3;
    if (truncate (path, 0))
        return 5;
    signal (SIGXFSZ, SIG_IGN);
    struct rlimit old, small;
    getrlimit (RLIMIT_FSIZE, &old);
    small = old;
    small.rlim_cur = (rlim_t) (one + one / 2);
    if (setrlimit (RLIMIT_FSIZE, &small))
        return 6;
    t = (s_turn_t) {{-1, -1, -1, -1}, {0}};
    for (int i = 1; i <= 3; i++)
        d->post (d, &p[i], (void *) (intptr_t) i, 2000 + i);
    d->flush (d);
    //  The whole first line is posted; the torn second is cut back and retried with the third.
    if (t.status[1] != DEST_OK || t.first[1] != 1 || t.status[2] != DEST_RETRY
        || t.status[3] != DEST_RETRY || t.first[2] || t.first[3])
        return 7;
    if (stat (path, &st) || st.st_size != one)
        return 8;
    setrlimit (RLIMIT_FSIZE, &old);
    t = (s_turn_t) {{-1, -1, -1, -1}, {0}};
    for (int i = 2; i <= 3; i++)
        d->post (d, &p[i], (void *) (intptr_t) i, 3000 + i);
    d->flush (d);
    if (t.status[2] != DEST_OK || t.status[3] != DEST_OK)
        return 9;
    char got[3][32];
    if (s_whole_lines (path, got, 3) != 3 || strcmp (got[0], keys[1]) || strcmp (got[1], keys[2])
        || strcmp (got[2], keys[3]))
        return 10;
    dest_destroy (&d);
    pcfg_destroy (&config);
    return 0;
}

static void test_jsonl_turn_is_one_write_cut_at_a_whole_line (void **state)
{
    (void) state;
    scratch_t t;
    s_scratch (&t);
    const char *path = t.path;
    s_in_child (s_turn_steps, path, "turn");
    s_scratch_remove (&t);
}

//  A reason must reach the broker: its OUTCOME frame carries it, and the
//  decoder refuses a string that is not UTF-8.
static void s_assert_reason_travels (const char *why)
{
    assert_true (ptext_utf8_valid (why, strlen (why)));
    proto_outcome_item_t item = {7, 9, PROTO_OUT_FAILED, why, 1700000000000ull};
    proto_outcome_t outcome = {1, &item, 1};
    zmq_msg_t frame;
    assert_int_equal (proto_encode (PROTO_OUTCOME, &outcome, &frame), 0);
    proto_msg_t msg;
    char err[300];
    int rc = proto_decode (zmq_msg_data (&frame), zmq_msg_size (&frame), &msg, err, sizeof err);
    zmq_msg_close (&frame);
    if (rc != PROTO_OK)
        fail_msg ("the OUTCOME frame does not decode: %s", err);
    assert_string_equal (msg.body.outcome.items[0].reason, why);
    proto_msg_release (&msg);
}

//  Long multi-byte answers are cut at a character; bytes that are not
//  UTF-8 become '?'.
static void test_reasons_are_utf8 (void **state)
{
    (void) state;
    //  An HTTP 500 whose body is "x" and 150 two-byte characters: the
    //  200-byte excerpt would end inside the 100th.
    char body[400] = "x";
    for (int i = 0; i < 150; i++)
        strcat (body, "\xc3\xa9");
    phttp_response_t r = {.status = 500, .body = body, .size = strlen (body),
                          .retry_after_ms = -1, .first_byte_ms = -1};
    char why[600];
    assert_int_equal (dest_http_outcome (&r, "api", why, sizeof why), DEST_RETRY);
    s_assert_reason_travels (why);
    char expect[400] = "api answered HTTP 500: x";
    for (int i = 0; i < 99; i++)
        strcat (expect, "\xc3\xa9");
    assert_string_equal (why, expect);

    //  A body in another encoding.
    r.status = 404;
    r.body = "not found: caf\xe9 \xff";
    r.size = strlen (r.body);
    assert_int_equal (dest_http_outcome (&r, "api", why, sizeof why), DEST_FAIL);
    assert_string_equal (why, "api answered HTTP 404: not found: caf? ?");

    //  A reason cut by a small buffer.
    r.body = "\xe2\x82\xac\xe2\x82\xac";
    r.size = strlen (r.body);
    char small[28];
    dest_http_outcome (&r, "api", small, sizeof small);
    assert_string_equal (small, "api answered HTTP 404: \xe2\x82\xac");

    //  Telegram's description, long and in Cyrillic, cut at 300 bytes.
    char json[1200] = "{\"ok\": false, \"error_code\": 400, \"description\": \"Bad Request: ";
    for (int i = 0; i < 300; i++)
        strcat (json, "\xd0\xb6");
    strcat (json, "\"}");
    r = (phttp_response_t) {.status = 400, .body = json, .size = strlen (json),
                            .retry_after_ms = -1, .first_byte_ms = -1};
    int64_t wait;
    assert_int_equal (dest_telegram_outcome (&r, "123:SECRET", why, sizeof why, &wait), DEST_FAIL);
    s_assert_reason_travels (why);
    assert_non_null (strstr (why, "Telegram 400: Bad Request: \xd0\xb6"));

    char cut[] = "abc\xe2\x82";
    dest_reason_utf8 (cut);
    assert_string_equal (cut, "abc");
    char bad[] = "\xc3\x28 \xed\xa0\x80 ok \xf0\x9f\x98\x80";
    dest_reason_utf8 (bad);
    assert_string_equal (bad, "?( ??? ok \xf0\x9f\x98\x80");
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_sliding_windows),
        cmocka_unit_test (test_platform_rules),
        cmocka_unit_test (test_outbox_split_order_and_resume),
        cmocka_unit_test (test_outbox_trim_limits_and_timeout),
        cmocka_unit_test (test_outbox_mentions_first),
        cmocka_unit_test (test_outbox_asks_before_sending),
        cmocka_unit_test (test_jsonl_torn_write_is_cut_back),
        cmocka_unit_test (test_jsonl_torn_tail_cut_at_start),
        cmocka_unit_test (test_jsonl_lines_as_jansson_writes_them),
        cmocka_unit_test (test_jsonl_turn_is_one_write_cut_at_a_whole_line),
        cmocka_unit_test (test_reasons_are_utf8),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
