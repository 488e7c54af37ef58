/*  test_prt - the daemon loop: phases in order, timers, readers, drain, commit failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "common/prt.h"

typedef struct {
    prt_t *rt;
    char log[4096];             //  the phases, one letter each: r(ead) a(pply) c(ommit) s(end) t(imer)
    int reads, timers, commits, sends;
    bool fail_commit;
    int drain_turns;            //  turns to keep going after $TERM
    bool draining;
} s_app_t;

static void s_note (s_app_t *app, char c)
{
    size_t n = strlen (app->log);
    if (n + 1 < sizeof app->log) {
        app->log[n] = c;
        app->log[n + 1] = 0;
    }
}

static int s_read (void *arg, zsock_t *sock, int max)
{
    s_app_t *app = arg;
    int n = 0;
    while (n < max) {
        char *s = zstr_recv_nowait (sock);
        if (!s)
            break;
        zstr_free (&s);
        n++;
        app->reads++;
    }
    if (n)
        s_note (app, 'r');
    return n;
}

static void s_timer (void *arg, int64_t now)
{
    (void) now;
    s_app_t *app = arg;
    app->timers++;
    s_note (app, 't');
}

static void s_apply (void *self, int64_t now)
{
    (void) now;
    s_app_t *app = self;
    if (app->draining && app->drain_turns-- <= 0)
        prt_stop (app->rt);
    if (app->reads || app->timers)
        s_note (app, 'a');
}

static int s_commit (void *self)
{
    s_app_t *app = self;
    app->commits++;
    return app->fail_commit ? -1 : 0;
}

static void s_send (void *self, int64_t now)
{
    (void) now;
    s_app_t *app = self;
    app->sends++;
}

static void s_term (void *self, int64_t now)
{
    (void) now;
    s_app_t *app = self;
    app->draining = true;
}

typedef struct {
    s_app_t *app;
    const char *endpoint;
    int rc;
} s_args_t;

static void s_actor (zsock_t *pipe, void *args)
{
    s_args_t *a = args;
    zsock_t *pull = zsock_new_pull (a->endpoint);
    prt_hooks_t hooks = {s_apply, s_commit, s_send, NULL, s_term};
    a->app->rt = prt_new (pipe, &hooks, a->app);
    prt_reader (a->app->rt, pull, s_read, a->app);
    prt_every (a->app->rt, 20, s_timer, a->app);
    zsock_signal (pipe, 0);
    a->rc = prt_run (a->app->rt);
    prt_destroy (&a->app->rt);
    zsock_destroy (&pull);
}

static void test_turn_order_and_drain (void **state)
{
    (void) state;
    s_app_t app = {0};
    app.drain_turns = 2;
    s_args_t args = {&app, "@inproc://test-prt-1", 99};
    zactor_t *actor = zactor_new (s_actor, &args);
    zsock_t *push = zsock_new_push (">inproc://test-prt-1");
    for (int i = 0; i < 1000; i++)
        zstr_send (push, "x");
    zclock_sleep (150);
    zactor_destroy (&actor);    //  $TERM: the app drains two more turns, then stops
    assert_int_equal (args.rc, 0);
    assert_int_equal (app.reads, 1000);
    assert_true (app.timers >= 2);
    assert_true (app.commits >= 2);
    //  Every commit is followed by a send, every turn commits once.
    assert_int_equal (app.commits, app.sends);
    //  A read is always applied in the same turn: "r" is followed by "a" or a timer then "a".
    for (const char *p = app.log; *p; p++)
        if (*p == 'r')
            assert_true (p[1] == 'a' || p[1] == 't' || p[1] == 'r');
    assert_true (app.draining);
    zsock_destroy (&push);
}

static void test_commit_failure_stops_before_send (void **state)
{
    (void) state;
    s_app_t app = {0};
    app.fail_commit = true;
    s_args_t args = {&app, "@inproc://test-prt-2", 99};
    zactor_t *actor = zactor_new (s_actor, &args);
    zsock_t *push = zsock_new_push (">inproc://test-prt-2");
    zstr_send (push, "x");
    //  The actor ends on its own; wait for its pipe to close by destroying it.
    zclock_sleep (100);
    zactor_destroy (&actor);
    assert_int_equal (args.rc, -1);
    assert_int_equal (app.commits, 1);
    assert_int_equal (app.sends, 0);
    zsock_destroy (&push);
}

static void test_clock_never_goes_back (void **state)
{
    (void) state;
    zsock_t *pipe = zsock_new_pair ("@inproc://test-prt-3");
    prt_t *rt = prt_new (pipe, NULL, NULL);
    int64_t a = prt_now (rt);
    int64_t b = prt_clock (rt);
    assert_true (b >= a);
    assert_true (a > 1600000000000LL);     //  wall milliseconds
    prt_destroy (&rt);
    zsock_destroy (&pipe);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_turn_order_and_drain),
        cmocka_unit_test (test_commit_failure_stops_before_send),
        cmocka_unit_test (test_clock_never_goes_back),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
