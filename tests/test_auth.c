/*  test_auth - transport security: key files, the plain-text policy, the
    ZAP domain rules, and the authenticator against real CurveZMQ clients
    (admission by role, refusals, routing-id takeover, revocation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/pdaemon.h"
#include "common/plog.h"
#include "proto/proto_auth.h"
#include "proto/proto_keys.h"
#include "proto/proto_sock.h"

//  The example pairs of zmq_curve(7): public, secret.
static const char *s_doc_client[2] = {"Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID",
                                      "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"};
static const char *s_doc_server[2] = {"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
                                      "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"};

//  --- helpers ---------------------------------------------------------------------------------

static char *s_tempdir (void)
{
    char *dir = strdup ("/tmp/parley-test-auth-XXXXXX");
    assert_non_null (mkdtemp (dir));
    return dir;
}

static void s_remove_tree (const char *dir)
{
    char command[512];
    snprintf (command, sizeof command, "rm -rf '%s'", dir);
    assert_int_equal (system (command), 0);
}

//  Makes dir/sub/NAME.key{,_secret}; returns the public key (static buffer per call site).
static void s_keygen (const char *dir, const char *sub, const char *name,
                      char public_txt[PROTO_KEY_TXT])
{
    char where[512], pub[4200], sec[4200], why[1024];
    snprintf (where, sizeof where, "%s/%s", dir, sub);
    if (proto_keys_generate (where, name, false, public_txt, pub, sec, sizeof pub, why, sizeof why))
        fail_msg ("keygen %s: %s", name, why);
}

static void s_copy (const char *from, const char *to)
{
    char command[10000];
    snprintf (command, sizeof command, "mkdir -p \"$(dirname '%s')\" && cp '%s' '%s'", to, from,
              to);
    assert_int_equal (system (command), 0);
}

//  A certificate from Z85 texts (zcert_new_from_txt is a draft method).
static zcert_t *s_cert_from_txt (const char *public_txt, const char *secret_txt)
{
    uint8_t public_key[32], secret_key[32];
    assert_non_null (zmq_z85_decode (public_key, public_txt));
    assert_non_null (zmq_z85_decode (secret_key, secret_txt));
    return zcert_new_from (public_key, secret_key);
}

static pcfg_t *s_config (const char *cert, const char *allow_dir, bool security, bool insecure)
{
    char s1[600], s2[600], s3[64], s4[64];
    snprintf (s1, sizeof s1, "network.security.certificate=%s", cert ? cert : "");
    snprintf (s2, sizeof s2, "network.security.allowDir=%s", allow_dir ? allow_dir : "");
    snprintf (s3, sizeof s3, "network.security.enabled=%s", security ? "true" : "false");
    snprintf (s4, sizeof s4, "network.insecure=%s", insecure ? "true" : "false");
    char *sets[] = {s1, s2, s3, s4};
    char err[1024];
    pcfg_t *config = pdaemon_load_config (NULL, sets, 4, false, err, sizeof err);
    if (!config)
        fail_msg ("config: %s", err);
    return config;
}

//  A client's transport settings: its own key pair and the server key it pins.
static proto_net_t s_client_net (const char *dir, const char *sub, const char *name,
                                 const char *server_public)
{
    proto_net_t net;
    proto_net_defaults (&net);
    net.linger_ms = 0;
    net.secure = true;
    char path[600], why[1024];
    snprintf (path, sizeof path, "%s/%s/%s.key_secret", dir, sub, name);
    if (proto_keys_load_own (path, net.public_key, net.secret_key, why, sizeof why))
        fail_msg ("%s", why);
    snprintf (net.broker_key, sizeof net.broker_key, "%s", server_public);
    snprintf (net.sink_key, sizeof net.sink_key, "%s", server_public);
    return net;
}

//  A raw CurveZMQ client from key texts (for keys that are not files).
static zsock_t *s_raw_client (int type, const char *endpoint, const char *public_txt,
                              const char *secret_txt, const char *server_public,
                              const char *identity)
{
    zsock_t *sock = zsock_new (type);
    zsock_set_linger (sock, 0);
    if (identity)
        zsock_set_identity (sock, identity);
    if (public_txt) {
        zsock_set_curve_serverkey (sock, server_public);
        zsock_set_curve_publickey (sock, public_txt);
        zsock_set_curve_secretkey (sock, secret_txt);
    }
    assert_int_equal (zsock_connect (sock, "%s", endpoint), 0);
    return sock;
}

static void s_ping (zsock_t *client)
{
    proto_ctl_t ctl = {7, "ping", NULL, 0};
    assert_int_equal (proto_send (client, PROTO_CTL, &ctl), 0);
}

//  Waits up to `ms` for a message on `server`; PROTO_NONE if none came.
static int s_recv (zsock_t *server, int ms, proto_peer_t *peer, char *why, size_t whylen)
{
    zpoller_t *poller = zpoller_new (server, NULL);
    int rc = PROTO_NONE;
    if (zpoller_wait (poller, ms)) {
        proto_msg_t msg;
        rc = proto_recv (server, &msg, peer, why, whylen);
        if (rc == PROTO_OK)
            proto_msg_release (&msg);
    }
    zpoller_destroy (&poller);
    return rc;
}

//  Waits until counter `field` of proto_auth_counts reaches `target`.
#define WAIT_COUNT(field, target)                                                                  \
    do {                                                                                           \
        proto_auth_counts_t c_;                                                                    \
        int64_t until_ = zclock_mono () + 5000;                                                    \
        do {                                                                                       \
            proto_auth_counts (&c_);                                                               \
            if (c_.field >= (uint64_t) (target))                                                   \
                break;                                                                             \
            zclock_sleep (10);                                                                     \
        } while (zclock_mono () < until_);                                                         \
        if (c_.field < (uint64_t) (target))                                                        \
            fail_msg ("timed out waiting for " #field " to reach %d (is %d)", (int) (target),     \
                      (int) c_.field);                                                             \
    } while (0)

static uint64_t s_count (const char *field)
{
    proto_auth_counts_t c;
    proto_auth_counts (&c);
    if (streq (field, "admitted"))
        return c.admitted;
    if (streq (field, "refused"))
        return c.refused;
    if (streq (field, "failed"))
        return c.failed_handshakes;
    return c.refused_messages;
}

//  A running authenticator and a broker-like server with the four ports.
typedef struct {
    char *dir;
    char allow[512];
    char server_public[PROTO_KEY_TXT];
    pcfg_t *config;
    proto_net_t net;
    zsock_t *frontend, *backend, *results, *stats;
    char *fe, *be, *re, *se;
    char worker[PROTO_KEY_TXT], worker2[PROTO_KEY_TXT];
    char poller[PROTO_KEY_TXT], operator_[PROTO_KEY_TXT];
} s_world_t;

static s_world_t *s_world_new (void)
{
    s_world_t *w = calloc (1, sizeof *w);
    w->dir = s_tempdir ();
    snprintf (w->allow, sizeof w->allow, "%s/allow", w->dir);
    s_keygen (w->dir, "server", "server", w->server_public);
    s_keygen (w->dir, "clients", "w1", w->worker);
    s_keygen (w->dir, "clients", "w2", w->worker2);
    s_keygen (w->dir, "clients", "p1", w->poller);
    s_keygen (w->dir, "clients", "op", w->operator_);
    char from[600], to[600];
    const char *files[][2] = {
        {"w1", "workers"}, {"w2", "workers"}, {"p1", "pollers"}, {"op", "operators"}};
    for (int i = 0; i < 4; i++) {
        snprintf (from, sizeof from, "%s/clients/%s.key", w->dir, files[i][0]);
        snprintf (to, sizeof to, "%s/%s/%s.key", w->allow, files[i][1], files[i][0]);
        s_copy (from, to);
    }
    char cert[600];
    snprintf (cert, sizeof cert, "%s/server/server.key_secret", w->dir);
    w->config = s_config (cert, w->allow, true, false);
    assert_int_equal (proto_auth_start (w->config), 0);
    assert_true (proto_auth_running ());
    assert_int_equal (proto_net_from_config (&w->net, w->config, "broker"), 0);
    w->net.linger_ms = 0;
    w->frontend = proto_sock_new (&w->net, ZMQ_ROUTER, "tcp://127.0.0.1:*", true, NULL,
                                  PROTO_PORT_FRONTEND);
    w->backend = proto_sock_new (&w->net, ZMQ_ROUTER, "tcp://127.0.0.1:*", true, NULL,
                                 PROTO_PORT_BACKEND);
    w->results = proto_sock_new (&w->net, ZMQ_PULL, "tcp://127.0.0.1:*", true, NULL,
                                 PROTO_PORT_RESULTS);
    w->stats = proto_sock_new (&w->net, ZMQ_PUB, "tcp://127.0.0.1:*", true, NULL, PROTO_PORT_STATS);
    assert_non_null (w->frontend);
    assert_non_null (w->backend);
    assert_non_null (w->results);
    assert_non_null (w->stats);
    w->fe = proto_sock_endpoint (w->frontend);
    w->be = proto_sock_endpoint (w->backend);
    w->re = proto_sock_endpoint (w->results);
    w->se = proto_sock_endpoint (w->stats);
    return w;
}

static void s_world_destroy (s_world_t **w_p)
{
    s_world_t *w = *w_p;
    zsock_destroy (&w->frontend);
    zsock_destroy (&w->backend);
    zsock_destroy (&w->results);
    zsock_destroy (&w->stats);
    proto_auth_stop ();
    assert_false (proto_auth_running ());
    zstr_free (&w->fe);
    zstr_free (&w->be);
    zstr_free (&w->re);
    zstr_free (&w->se);
    pcfg_destroy (&w->config);
    s_remove_tree (w->dir);
    free (w->dir);
    free (w);
    *w_p = NULL;
}

//  --- pure rules ------------------------------------------------------------------------------

static void test_domain_rules (void **state)
{
    (void) state;
    //  domain: poller, worker, sink, operator
    const struct {
        const char *domain;
        bool admits[PROTO_ROLES];
    } table[] = {
        {"frontend", {true, false, true, true}},
        {"backend", {false, true, false, false}},
        {"results", {false, true, false, false}},
        {"stats", {false, false, false, true}},
        {"", {false, false, false, false}},
        {"Frontend", {false, false, false, false}},
        {"other", {false, false, false, false}},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        for (int r = 0; r < PROTO_ROLES; r++)
            if (proto_auth_admits (table[i].domain, (proto_role_t) r) != table[i].admits[r])
                fail_msg ("domain \"%s\", role %s: expected %s", table[i].domain,
                          proto_role_name ((proto_role_t) r),
                          table[i].admits[r] ? "admitted" : "refused");
    assert_false (proto_auth_admits (NULL, PROTO_ROLE_WORKER));
    assert_string_equal (proto_role_dir (PROTO_ROLE_OPERATOR), "operators");
    assert_string_equal (proto_port_name (PROTO_PORT_RESULTS), "results");
}

static void test_endpoint_locality (void **state)
{
    (void) state;
    const char *local[] = {"tcp://127.0.0.1:7531", "tcp://127.1.2.3:1", "tcp://localhost:7531",
                           "tcp://LOCALHOST:1", "tcp://[::1]:7531", "tcp://[::ffff:127.0.0.1]:9",
                           "tcp://lo:7531", "ipc:///tmp/parley.sock", "inproc://x",
                           "tcp://10.0.0.1:0;127.0.0.1:7531", "tcp://127.0.0.1:*", NULL};
    const char *remote[] = {"tcp://*:7531", "tcp://0.0.0.0:7531", "tcp://10.0.0.5:7532",
                            "tcp://192.168.1.2:1", "tcp://[::]:7531", "tcp://[2001:db8::1]:1",
                            "tcp://broker.example.com:7531", "tcp://eth0:7531",
                            "tcp://127.0.0.1:0;10.0.0.5:7531", "tcp://localhost.evil.com:1",
                            "tcp://128.0.0.1:1", "pgm://eth0;239.192.1.1:5555", "ws://127.0.0.1:1",
                            NULL};
    for (const char **e = local; *e; e++)
        if (!proto_endpoint_is_local (*e))
            fail_msg ("%s should be local", *e);
    for (const char **e = remote; *e; e++)
        if (proto_endpoint_is_local (*e))
            fail_msg ("%s should not be local", *e);
}

//  --- key files -------------------------------------------------------------------------------

static void test_keys (void **state)
{
    (void) state;
    char *dir = s_tempdir ();
    char sub[600], pub[4200], sec[4200], why[2048], public_txt[PROTO_KEY_TXT];
    snprintf (sub, sizeof sub, "%s/new/dir", dir);
    assert_int_equal (proto_keys_generate (sub, "w-1.a_b", false, public_txt, pub, sec, sizeof pub,
                                           why, sizeof why), 0);
    assert_int_equal (strlen (public_txt), 40);
    struct stat st;
    assert_int_equal (stat (sec, &st), 0);
    assert_int_equal (st.st_mode & 0777, 0600);
    assert_int_equal (stat (pub, &st), 0);
    assert_int_equal (st.st_mode & 0777, 0644);
    assert_int_equal (stat (sub, &st), 0);
    assert_int_equal (st.st_mode & 0777, 0700);
    zcert_t *cert = zcert_load (pub);
    assert_non_null (cert);
    assert_string_equal (zcert_meta (cert, "name"), "w-1.a_b");
    assert_non_null (zcert_meta (cert, "created"));
    assert_string_equal (zcert_public_txt (cert), public_txt);
    zcert_destroy (&cert);

    //  No overwrite without --force; with it, a new key.
    char again[PROTO_KEY_TXT];
    assert_int_equal (proto_keys_generate (sub, "w-1.a_b", false, again, pub, sec, sizeof pub, why,
                                           sizeof why), -1);
    assert_non_null (strstr (why, "exists"));
    assert_int_equal (proto_keys_generate (sub, "w-1.a_b", true, again, pub, sec, sizeof pub, why,
                                           sizeof why), 0);
    assert_string_not_equal (again, public_txt);
    const char *bad[] = {"", "../x", "a/b", ".hidden", "-x", "sp ace", NULL};
    for (const char **b = bad; *b; b++)
        assert_int_equal (proto_keys_generate (sub, *b, false, again, pub, sec, sizeof pub, why,
                                               sizeof why), -1);

    //  Own certificate: the secret file, or the public name beside it.
    char own_public[PROTO_KEY_TXT], own_secret[PROTO_KEY_TXT];
    assert_int_equal (proto_keys_load_own (sec, own_public, own_secret, why, sizeof why), 0);
    assert_string_equal (own_public, again);
    assert_int_equal (proto_keys_load_own (pub, own_public, own_secret, why, sizeof why), 0);
    char public_only[600];
    snprintf (public_only, sizeof public_only, "%s/lonely.key", dir);
    s_copy (pub, public_only);
    assert_int_equal (proto_keys_load_own (public_only, own_public, own_secret, why, sizeof why),
                      -1);
    assert_int_equal (proto_keys_load_own ("", own_public, own_secret, why, sizeof why), -1);
    assert_non_null (strstr (why, "PARLEY_CERT"));
    assert_int_equal (proto_keys_load_own ("/nonexistent/x.key_secret", own_public, own_secret, why,
                                           sizeof why), -1);

    //  A pinned key is a public file; the secret file is refused, and no
    //  error message carries the secret key.
    char pinned[PROTO_KEY_TXT];
    assert_int_equal (proto_keys_load_public (pub, pinned, why, sizeof why), 0);
    assert_string_equal (pinned, again);
    assert_int_equal (proto_keys_load_public (sec, pinned, why, sizeof why), -1);
    assert_null (strstr (why, own_secret));

    //  The documentation's example keys are never accepted.
    assert_true (proto_keys_published (s_doc_client[0]));
    assert_true (proto_keys_published (s_doc_server[0]));
    assert_false (proto_keys_published (again));
    zcert_t *doc = s_cert_from_txt (s_doc_server[0], s_doc_server[1]);
    char doc_path[600];
    snprintf (doc_path, sizeof doc_path, "%s/doc.key", dir);
    assert_int_equal (zcert_save (doc, doc_path), 0);
    zcert_destroy (&doc);
    assert_int_equal (proto_keys_load_own (doc_path, own_public, own_secret, why, sizeof why), -1);
    assert_non_null (strstr (why, "documentation"));
    assert_null (strstr (why, s_doc_server[1]));
    assert_int_equal (proto_keys_load_public (doc_path, pinned, why, sizeof why), -1);
    s_remove_tree (dir);
    free (dir);
}

//  --- the plain-text policy --------------------------------------------------------------------

static void test_plain_policy (void **state)
{
    (void) state;
    pcfg_t *config = s_config (NULL, NULL, false, false);
    proto_net_t net;
    assert_int_equal (proto_net_from_config (&net, config, "broker"), 0);
    net.linger_ms = 0;
    assert_false (net.secure);
    //  Loopback, ipc and inproc are fine.
    zsock_t *sock = proto_sock_new (&net, ZMQ_ROUTER, "tcp://127.0.0.1:*", true, NULL,
                                    PROTO_PORT_BACKEND);
    assert_non_null (sock);
    zsock_destroy (&sock);
    sock = proto_sock_new (&net, ZMQ_PULL, "inproc://test-plain", true, NULL, PROTO_PORT_RESULTS);
    assert_non_null (sock);
    zsock_destroy (&sock);
    //  Anything reachable from elsewhere is refused...
    const char *remote[] = {"tcp://0.0.0.0:*", "tcp://*:*", NULL};
    for (const char **e = remote; *e; e++)
        assert_null (proto_sock_new (&net, ZMQ_ROUTER, *e, true, NULL, PROTO_PORT_FRONTEND));
    //  ... unless network.insecure says so.
    pcfg_destroy (&config);
    config = s_config (NULL, NULL, false, true);
    assert_int_equal (proto_net_from_config (&net, config, "broker"), 0);
    net.linger_ms = 0;
    sock = proto_sock_new (&net, ZMQ_ROUTER, "tcp://0.0.0.0:*", true, NULL, PROTO_PORT_FRONTEND);
    assert_non_null (sock);
    zsock_destroy (&sock);
    //  Connecting elsewhere in plain text is allowed (with a warning).
    sock = proto_sock_new (&net, ZMQ_DEALER, "tcp://192.0.2.1:7531", false, NULL,
                           PROTO_PORT_FRONTEND);
    assert_non_null (sock);
    zsock_destroy (&sock);
    pcfg_destroy (&config);
}

static void test_security_needs_its_pieces (void **state)
{
    (void) state;
    char *dir = s_tempdir ();
    char server_public[PROTO_KEY_TXT];
    s_keygen (dir, "k", "server", server_public);
    char cert[600];
    snprintf (cert, sizeof cert, "%s/k/server.key_secret", dir);
    //  No allowDir: the authenticator does not start.
    pcfg_t *config = s_config (cert, NULL, true, false);
    assert_int_equal (proto_auth_start (config), -1);
    assert_false (proto_auth_running ());
    pcfg_destroy (&config);
    char missing[600];
    snprintf (missing, sizeof missing, "%s/nope", dir);
    config = s_config (cert, missing, true, false);
    assert_int_equal (proto_auth_start (config), -1);
    pcfg_destroy (&config);
    //  Without the authenticator no secure server socket is made.
    config = s_config (cert, dir, true, false);
    proto_net_t net;
    assert_int_equal (proto_net_from_config (&net, config, "broker"), 0);
    assert_null (proto_sock_new (&net, ZMQ_ROUTER, "tcp://127.0.0.1:*", true, NULL,
                                 PROTO_PORT_BACKEND));
    //  A worker must pin both server keys.
    assert_int_equal (proto_net_from_config (&net, config, "worker"), -1);
    assert_true (net.failed);
    assert_null (proto_sock_new (&net, ZMQ_DEALER, "tcp://127.0.0.1:9", false, NULL,
                                 PROTO_PORT_BACKEND));
    pcfg_destroy (&config);
    //  An unreadable certificate stops everything.
    config = s_config ("/nonexistent/cert.key_secret", dir, true, false);
    assert_int_equal (proto_net_from_config (&net, config, "broker"), -1);
    pcfg_destroy (&config);
    s_remove_tree (dir);
    free (dir);
}

//  --- the authenticator, live -----------------------------------------------------------------

static void test_admission_by_role (void **state)
{
    (void) state;
    proto_auth_set_limits (100000, 1000);
    s_world_t *w = s_world_new ();
    char why[256];
    proto_peer_t peer;

    //  A worker on the backend: admitted, and its messages say who it is.
    proto_net_t wnet = s_client_net (w->dir, "clients", "w1", w->server_public);
    zsock_t *worker = proto_sock_new (&wnet, ZMQ_DEALER, w->be, false, "W:one", PROTO_PORT_BACKEND);
    s_ping (worker);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
    assert_string_equal (peer.user, "worker/w1");
    assert_string_equal (peer.key, w->worker);
    //  A worker on the results socket too.
    zsock_t *push = proto_sock_new (&wnet, ZMQ_PUSH, w->re, false, NULL, PROTO_PORT_RESULTS);
    s_ping (push);
    assert_int_equal (s_recv (w->results, 5000, &peer, why, sizeof why), PROTO_OK);
    assert_string_equal (peer.user, "worker/w1");

    //  A poller on the frontend: admitted; a worker there: refused.
    proto_net_t pnet = s_client_net (w->dir, "clients", "p1", w->server_public);
    zsock_t *poller = proto_sock_new (&pnet, ZMQ_DEALER, w->fe, false, NULL, PROTO_PORT_FRONTEND);
    s_ping (poller);
    assert_int_equal (s_recv (w->frontend, 5000, &peer, why, sizeof why), PROTO_OK);
    assert_string_equal (peer.user, "poller/p1");
    uint64_t refused = s_count ("refused");
    zsock_t *intruder = proto_sock_new (&wnet, ZMQ_DEALER, w->fe, false, NULL, PROTO_PORT_FRONTEND);
    s_ping (intruder);
    WAIT_COUNT (refused, refused + 1);
    //  ... and a poller on the backend.
    zsock_t *intruder2 = proto_sock_new (&pnet, ZMQ_DEALER, w->be, false, NULL, PROTO_PORT_BACKEND);
    s_ping (intruder2);
    WAIT_COUNT (refused, refused + 2);
    assert_int_equal (s_recv (w->frontend, 200, &peer, why, sizeof why), PROTO_NONE);
    assert_int_equal (s_recv (w->backend, 200, &peer, why, sizeof why), PROTO_NONE);

    //  The stats feed: an operator subscribes, a worker cannot.
    proto_net_t onet = s_client_net (w->dir, "clients", "op", w->server_public);
    zsock_t *watcher = proto_sock_new (&onet, ZMQ_SUB, w->se, false, NULL, PROTO_PORT_STATS);
    zsock_set_subscribe (watcher, "");
    zsock_t *snoop = proto_sock_new (&wnet, ZMQ_SUB, w->se, false, NULL, PROTO_PORT_STATS);
    zsock_set_subscribe (snoop, "");
    WAIT_COUNT (refused, refused + 3);
    int got = PROTO_NONE;
    for (int i = 0; i < 100 && got == PROTO_NONE; i++) {
        s_ping (w->stats);
        got = s_recv (watcher, 50, &peer, why, sizeof why);
    }
    assert_int_equal (got, PROTO_OK);
    assert_int_equal (s_recv (snoop, 200, &peer, why, sizeof why), PROTO_NONE);

    //  Unknown keys, the documentation's keys (even allow-listed), plain
    //  text, and a client that pinned another server key: all refused.
    zcert_t *stranger = zcert_new ();
    zsock_t *s1 = s_raw_client (ZMQ_DEALER, w->be, zcert_public_txt (stranger),
                                zcert_secret_txt (stranger), w->server_public, NULL);
    s_ping (s1);
    WAIT_COUNT (refused, refused + 4);
    zcert_t *doc = s_cert_from_txt (s_doc_client[0], s_doc_client[1]);
    char doc_path[600];
    snprintf (doc_path, sizeof doc_path, "%s/workers/doc.key", w->allow);
    assert_int_equal (zcert_save_public (doc, doc_path), 0);
    zsock_t *s2 = s_raw_client (ZMQ_DEALER, w->be, s_doc_client[0], s_doc_client[1],
                                w->server_public, NULL);
    s_ping (s2);
    WAIT_COUNT (refused, refused + 5);
    uint64_t failed = s_count ("failed");
    zsock_t *s3 = s_raw_client (ZMQ_DEALER, w->be, NULL, NULL, NULL, NULL);
    s_ping (s3);
    WAIT_COUNT (failed_handshakes, failed + 1);
    zsock_t *s4 =
        s_raw_client (ZMQ_DEALER, w->be, w->worker, wnet.secret_key, s_doc_server[0], NULL);
    s_ping (s4);
    WAIT_COUNT (failed_handshakes, failed + 2);
    assert_int_equal (s_recv (w->backend, 300, &peer, why, sizeof why), PROTO_NONE);

    zsock_t *socks[] = {worker, push, poller, intruder, intruder2, watcher, snoop, s1, s2, s3, s4};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        zsock_destroy (&socks[i]);
    zcert_destroy (&stranger);
    zcert_destroy (&doc);
    s_world_destroy (&w);
}

static void test_routing_id_takeover_refused (void **state)
{
    (void) state;
    proto_auth_set_limits (100000, 1000);
    s_world_t *w = s_world_new ();
    char why[256] = "";
    proto_peer_t peer;
    proto_net_t n1 = s_client_net (w->dir, "clients", "w1", w->server_public);
    proto_net_t n2 = s_client_net (w->dir, "clients", "w2", w->server_public);
    zsock_t *victim = proto_sock_new (&n1, ZMQ_DEALER, w->be, false, "W:victim:1",
                                      PROTO_PORT_BACKEND);
    s_ping (victim);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
    assert_string_equal (peer.user, "worker/w1");
    //  Another worker key presents the same routing id: every message it
    //  sends is refused.
    uint64_t before = s_count ("messages");
    zsock_t *thief = proto_sock_new (&n2, ZMQ_DEALER, w->be, false, "W:victim:1",
                                     PROTO_PORT_BACKEND);
    s_ping (thief);
    int rc = s_recv (w->backend, 5000, &peer, why, sizeof why);
    assert_int_equal (rc, PROTO_MALFORMED);
    assert_non_null (strstr (why, "routing id"));
    assert_string_equal (peer.user, "worker/w2");
    assert_int_equal (s_count ("messages"), before + 1);
    //  The same key on another routing id is fine.
    zsock_t *other = proto_sock_new (&n2, ZMQ_DEALER, w->be, false, "W:other:2",
                                     PROTO_PORT_BACKEND);
    s_ping (other);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
    assert_string_equal (peer.user, "worker/w2");
    zsock_destroy (&thief);
    //  The victim (reconnected by ZeroMQ after the takeover closed its
    //  connection) is heard again.
    rc = PROTO_NONE;
    for (int i = 0; i < 200 && rc != PROTO_OK; i++) {
        s_ping (victim);
        rc = s_recv (w->backend, 50, &peer, why, sizeof why);
    }
    assert_int_equal (rc, PROTO_OK);
    assert_string_equal (peer.user, "worker/w1");
    zsock_destroy (&victim);
    zsock_destroy (&other);
    s_world_destroy (&w);
}

static void test_routing_table_is_bounded (void **state)
{
    (void) state;
    proto_auth_set_limits (2, 1000);
    s_world_t *w = s_world_new ();
    char why[256];
    proto_peer_t peer;
    proto_net_t n1 = s_client_net (w->dir, "clients", "w1", w->server_public);
    proto_net_t n2 = s_client_net (w->dir, "clients", "w2", w->server_public);
    const char *ids[] = {"A", "B", "C"};
    zsock_t *socks[3];
    for (int i = 0; i < 3; i++) {
        socks[i] = proto_sock_new (&n1, ZMQ_DEALER, w->be, false, ids[i], PROTO_PORT_BACKEND);
        s_ping (socks[i]);
        assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
        zsock_destroy (&socks[i]);
    }
    //  "A" was forgotten (the oldest of three in a table of two): a new key may use it.
    zsock_t *late = proto_sock_new (&n2, ZMQ_DEALER, w->be, false, "A", PROTO_PORT_BACKEND);
    s_ping (late);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
    assert_string_equal (peer.user, "worker/w2");
    zsock_destroy (&late);
    //  "C" is remembered.
    late = proto_sock_new (&n2, ZMQ_DEALER, w->be, false, "C", PROTO_PORT_BACKEND);
    s_ping (late);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_MALFORMED);
    zsock_destroy (&late);
    s_world_destroy (&w);
    proto_auth_set_limits (100000, 1000);
}

static void test_revocation (void **state)
{
    (void) state;
    proto_auth_set_limits (100000, 100);
    s_world_t *w = s_world_new ();
    char why[256];
    proto_peer_t peer;
    proto_net_t n1 = s_client_net (w->dir, "clients", "w1", w->server_public);
    zsock_t *open_ = proto_sock_new (&n1, ZMQ_DEALER, w->be, false, "W:open", PROTO_PORT_BACKEND);
    s_ping (open_);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
    char file[600], saved[600];
    snprintf (file, sizeof file, "%s/workers/w1.key", w->allow);
    snprintf (saved, sizeof saved, "%s/w1.key.saved", w->dir);
    s_copy (file, saved);
    assert_int_equal (unlink (file), 0);
    //  At once: a new connection with the key is refused.
    uint64_t refused = s_count ("refused");
    zsock_t *fresh = proto_sock_new (&n1, ZMQ_DEALER, w->be, false, "W:fresh", PROTO_PORT_BACKEND);
    s_ping (fresh);
    WAIT_COUNT (refused, refused + 1);
    //  Within a rescan: the open connection's messages are refused.
    int rc = PROTO_OK;
    for (int i = 0; i < 100 && rc != PROTO_MALFORMED; i++) {
        s_ping (open_);
        rc = s_recv (w->backend, 50, &peer, why, sizeof why);
    }
    assert_int_equal (rc, PROTO_MALFORMED);
    assert_non_null (strstr (why, "removed"));
    //  Put back: admitted again, on both.
    s_copy (saved, file);
    zsock_destroy (&fresh);
    fresh = proto_sock_new (&n1, ZMQ_DEALER, w->be, false, "W:fresh2", PROTO_PORT_BACKEND);
    s_ping (fresh);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
    assert_int_equal (s_recv (w->backend, 300, &peer, why, sizeof why), PROTO_NONE);
    s_ping (open_);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
    //  A key file replaced by another key's file of the same size, in the
    //  same second (zcertstore's own check misses that) is noticed too.
    char w3[PROTO_KEY_TXT], w3_file[600];
    s_keygen (w->dir, "clients", "w3", w3);
    snprintf (w3_file, sizeof w3_file, "%s/clients/w3.key", w->dir);
    snprintf (file, sizeof file, "%s/workers/w2.key", w->allow);
    proto_net_t n2 = s_client_net (w->dir, "clients", "w2", w->server_public);
    proto_net_t n3 = s_client_net (w->dir, "clients", "w3", w->server_public);
    zsock_t *before = proto_sock_new (&n2, ZMQ_DEALER, w->be, false, "W:w2", PROTO_PORT_BACKEND);
    s_ping (before);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
    assert_int_equal (unlink (file), 0);
    s_copy (w3_file, file);
    zsock_t *after = proto_sock_new (&n3, ZMQ_DEALER, w->be, false, "W:w3", PROTO_PORT_BACKEND);
    s_ping (after);
    assert_int_equal (s_recv (w->backend, 5000, &peer, why, sizeof why), PROTO_OK);
    assert_string_equal (peer.user, "worker/w3");
    refused = s_count ("refused");
    zsock_t *gone = proto_sock_new (&n2, ZMQ_DEALER, w->be, false, "W:w2b", PROTO_PORT_BACKEND);
    s_ping (gone);
    WAIT_COUNT (refused, refused + 1);
    zsock_destroy (&before);
    zsock_destroy (&after);
    zsock_destroy (&gone);
    zsock_destroy (&open_);
    zsock_destroy (&fresh);
    s_world_destroy (&w);
    proto_auth_set_limits (100000, 1000);
}

int main (void)
{
    plog_init ("test_auth", PLOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_domain_rules),
        cmocka_unit_test (test_endpoint_locality),
        cmocka_unit_test (test_keys),
        cmocka_unit_test (test_plain_policy),
        cmocka_unit_test (test_security_needs_its_pieces),
        cmocka_unit_test (test_admission_by_role),
        cmocka_unit_test (test_routing_id_takeover_refused),
        cmocka_unit_test (test_routing_table_is_bounded),
        cmocka_unit_test (test_revocation),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
