/*  test_llm_pool - which LLM server gets a call, with the clock passed in.

    Weights and slots, hot models first, failover to untried servers, pauses
    after 429/503, the circuit breaker's open / half-open / closed cycle,
    health, API keys from the environment or a file.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/plog.h"
#include "worker/llm_pool.h"

#define T0 1000000

static const char *s_config_text =
    "{\"entities\": [{\"id\": \"a\", \"model\": \"m1\"}, {\"id\": \"b\", \"model\": \"llama3.2\"}],"
    " \"worker\": {\"breakerFailures\": 3, \"breakerOpenMs\": 1000, \"backoffMs\": 100,"
    "              \"backoffMaxMs\": 1000},"
    " \"lmStudioServers\": ["
    "   {\"name\": \"s1\", \"url\": \"http://127.0.0.1:1/v1/\", \"maxConcurrent\": 2},"
    "   {\"name\": \"s2\", \"url\": \"http://user:pw@127.0.0.1:2\", \"weight\": 3, \"maxConcurrent\": 10},"
    "   {\"name\": \"off\", \"url\": \"http://127.0.0.1:4\", \"enabled\": false},"
    "   {\"name\": \"s3\", \"ip\": \"127.0.0.1\", \"port\": 3, \"models\": [\"m9\"],"
    "    \"maxTokensField\": \"max_completion_tokens\"}"
    " ]}";

typedef struct {
    pcfg_t *config;
    llm_pool_t *pool;
} s_fixture_t;

static int s_setup (void **state)
{
    s_fixture_t *f = calloc (1, sizeof *f);
    char err[512];
    f->config = pcfg_load_string (s_config_text, "test", false, err, sizeof err);
    assert_non_null (f->config);
    f->pool = llm_pool_new (f->config, err, sizeof err);
    assert_non_null (f->pool);
    *state = f;
    return 0;
}

static int s_teardown (void **state)
{
    s_fixture_t *f = *state;
    llm_pool_destroy (&f->pool);
    pcfg_destroy (&f->config);
    free (f);
    return 0;
}

static size_t s_pick (llm_pool_t *pool, const char *model, const bool *tried, int64_t now)
{
    size_t index = 99;
    llm_pick_t rc = llm_pool_pick (pool, model, tried, now, &index);
    if (rc != LLM_PICK_OK)
        fail_msg ("pick %s: %d", model, (int) rc);
    return index;
}

static void test_servers (void **state)
{
    s_fixture_t *f = *state;
    assert_int_equal (llm_pool_size (f->pool), 3);     //  the disabled one is left out
    llm_server_t *s1 = llm_pool_server (f->pool, 0), *s2 = llm_pool_server (f->pool, 1),
                 *s3 = llm_pool_server (f->pool, 2);
    assert_string_equal (s1->base, "http://127.0.0.1:1");
    assert_string_equal (s2->base, "http://user:pw@127.0.0.1:2");
    assert_string_equal (s2->shown_url, "http://127.0.0.1:2");
    assert_string_equal (s3->base, "http://127.0.0.1:3");
    assert_string_equal (s1->max_tokens_field, "max_tokens");
    assert_string_equal (s3->max_tokens_field, "max_completion_tokens");
    assert_null (s1->api_key);
    assert_null (llm_pool_server (f->pool, 3));
    char err[512];
    pcfg_t *config = pcfg_load_string ("{\"lmStudioServers\": [{\"url\": \"https://api.openai.com/v1\"}]}",
                                       "t", false, err, sizeof err);
    llm_pool_t *pool = llm_pool_new (config, err, sizeof err);
    assert_string_equal (llm_pool_server (pool, 0)->base, "https://api.openai.com");
    assert_string_equal (llm_pool_server (pool, 0)->max_tokens_field, "max_completion_tokens");
    llm_pool_destroy (&pool);
    pcfg_destroy (&config);
}

static void test_model_match (void **state)
{
    (void) state;
    assert_true (llm_pool_model_match ("qwen2.5", "qwen2.5"));
    assert_true (llm_pool_model_match ("llama3.2", "llama3.2:latest"));
    assert_true (llm_pool_model_match ("llama3.2:latest", "llama3.2"));
    assert_false (llm_pool_model_match ("llama3.2", "llama3.2:1b"));
    assert_true (llm_pool_model_match ("qwen2.5-7b-q4_k_m", "/models/Qwen2.5-7B-Q4_K_M.gguf"));
    assert_false (llm_pool_model_match ("qwen2.5", "/models/qwen2.5-7b.gguf"));
    assert_false (llm_pool_model_match ("a", "b"));
}

static void test_weights_and_slots (void **state)
{
    s_fixture_t *f = *state;
    int count[3] = {0};
    //  s1 (weight 1, 2 slots) and s2 (weight 3, 10 slots) share m1; s3 serves only m9.
    for (int i = 0; i < 12; i++) {
        size_t k = s_pick (f->pool, "m1", NULL, T0);
        assert_true (k < 2);
        //  Load per weight stays balanced: s2 never gets a call while it has 3x s1's.
        count[k]++;
        llm_pool_call_started (f->pool, k, T0);
    }
    assert_int_equal (count[0], 2);
    assert_int_equal (count[1], 10);
    size_t k;
    assert_int_equal (llm_pool_pick (f->pool, "m1", NULL, T0, &k), LLM_PICK_BUSY);
    assert_true (llm_pool_has_free_slot (f->pool, T0));     //  s3 still has room, for m9
    assert_int_equal (s_pick (f->pool, "m9", NULL, T0), 2);
    llm_pool_call_ended (f->pool, 0, LLM_OK, -1, NULL, T0);
    assert_int_equal (s_pick (f->pool, "m1", NULL, T0), 0);
}

static void test_weighted_share (void **state)
{
    s_fixture_t *f = *state;
    //  With every call ending at once, picks follow the weights' ratio as loads grow.
    int count[3] = {0};
    for (int i = 0; i < 8; i++) {
        size_t k = s_pick (f->pool, "m1", NULL, T0);
        count[k]++;
        llm_pool_call_started (f->pool, k, T0);
    }
    assert_int_equal (count[0], 2);
    assert_int_equal (count[1], 6);
}

static void test_hot_and_tried_first (void **state)
{
    s_fixture_t *f = *state;
    const char *s1_models[] = {"m1"};
    const char *s2_models[] = {"llama3.2:latest", "other"};
    llm_pool_set_loaded (f->pool, 0, s1_models, 1);
    llm_pool_set_loaded (f->pool, 1, s2_models, 2);
    //  s1 has m1 loaded: it wins although s2 weighs more.
    assert_int_equal (s_pick (f->pool, "m1", NULL, T0), 0);
    assert_int_equal (s_pick (f->pool, "llama3.2", NULL, T0), 1);
    //  A job that failed on s1 goes to s2, cold or not.
    bool tried[3] = {true, false, false};
    assert_int_equal (s_pick (f->pool, "m1", tried, T0), 1);
    //  Tried everywhere: still served, hot first.
    bool all[3] = {true, true, true};
    assert_int_equal (s_pick (f->pool, "m1", all, T0), 0);
    //  m9 is configured on s3 only; an empty model takes any server.
    assert_int_equal (s_pick (f->pool, "m9", NULL, T0), 2);
    //  What HEARTBEAT reports: entity spellings first, then the listings.
    const char *hot[16];
    size_t n = llm_pool_hot_models (f->pool, hot, 16, T0);
    assert_int_equal (n, 5);
    assert_string_equal (hot[0], "m1");
    assert_string_equal (hot[1], "llama3.2");
    assert_string_equal (hot[2], "llama3.2:latest");
    assert_string_equal (hot[3], "other");
    assert_string_equal (hot[4], "m9");
    //  The model sent: the entity's, else the server's first.
    assert_string_equal (llm_pool_model_for (f->pool, 0, "m1"), "m1");
    assert_string_equal (llm_pool_model_for (f->pool, 0, ""), "m1");
    assert_string_equal (llm_pool_model_for (f->pool, 2, ""), "m9");
    //  A server that is down reports nothing and gets nothing.
    llm_pool_set_up (f->pool, 0, false, "/health answered HTTP 503");
    n = llm_pool_hot_models (f->pool, hot, 16, T0);
    assert_int_equal (n, 4);
    assert_string_equal (hot[0], "llama3.2");
    assert_int_equal (s_pick (f->pool, "m1", NULL, T0), 1);
    char text[500];
    llm_pool_describe (f->pool, T0, text, sizeof text);
    assert_non_null (strstr (text, "s1: down (/health answered HTTP 503)"));
    llm_pool_set_up (f->pool, 0, true, NULL);
    assert_int_equal (s_pick (f->pool, "m1", NULL, T0), 0);
}

static void test_pause_after_429_and_503 (void **state)
{
    s_fixture_t *f = *state;
    llm_pool_call_started (f->pool, 0, T0);
    llm_pool_call_ended (f->pool, 0, LLM_RATE_LIMITED, 500, "HTTP 429", T0);
    //  Retry-After: 500 ms of no calls to s1; s2 takes them.
    assert_int_equal (s_pick (f->pool, "m1", NULL, T0 + 499), 1);
    assert_int_equal (llm_pool_next_change (f->pool, T0), T0 + 500);
    char text[500];
    llm_pool_describe (f->pool, T0 + 100, text, sizeof text);
    assert_non_null (strstr (text, "s1: paused for 400 ms more (HTTP 429)"));
    //  No Retry-After: backoffMs, doubling, capped by backoffMaxMs.
    int64_t now = T0 + 500;
    int64_t want[] = {200, 400, 800, 1000, 1000};  //  the first pause (500) counted once
    for (int i = 0; i < 5; i++) {
        llm_pool_call_started (f->pool, 0, now);
        llm_pool_call_ended (f->pool, 0, LLM_BUSY, -1, "HTTP 503", now);
        assert_int_equal (llm_pool_server (f->pool, 0)->paused_until, now + want[i]);
        now += want[i];
    }
    //  A success ends the doubling.
    llm_pool_call_started (f->pool, 0, now);
    llm_pool_call_ended (f->pool, 0, LLM_OK, -1, NULL, now);
    llm_pool_call_started (f->pool, 0, now);
    llm_pool_call_ended (f->pool, 0, LLM_BUSY, -1, "HTTP 503", now);
    assert_int_equal (llm_pool_server (f->pool, 0)->paused_until, now + 100);
    //  Pauses never open the circuit.
    assert_int_equal (llm_pool_server (f->pool, 0)->circuit, LLM_CIRCUIT_CLOSED);
}

static void test_circuit_breaker (void **state)
{
    s_fixture_t *f = *state;
    llm_server_t *s1 = llm_pool_server (f->pool, 0);
    bool only_s1[3] = {false, true, true};
    //  Two failures, then a success: the count starts again.
    for (int i = 0; i < 2; i++) {
        llm_pool_call_started (f->pool, 0, T0);
        llm_pool_call_ended (f->pool, 0, LLM_SERVER_ERROR, -1, "HTTP 500", T0);
    }
    llm_pool_call_started (f->pool, 0, T0);
    llm_pool_call_ended (f->pool, 0, LLM_CONTEXT, -1, NULL, T0);  //  an answer, not a failure
    assert_int_equal (s1->failures, 0);
    llm_outcome_t failures[] = {LLM_TIMEOUT, LLM_TRANSPORT, LLM_AUTH};
    for (int i = 0; i < 3; i++) {
        llm_pool_call_started (f->pool, 0, T0);
        llm_pool_call_ended (f->pool, 0, failures[i], -1, "refused", T0);
    }
    assert_int_equal (s1->circuit, LLM_CIRCUIT_OPEN);
    assert_int_equal (s_pick (f->pool, "m1", only_s1, T0 + 999), 1);
    assert_int_equal (llm_pool_usable (f->pool, T0 + 999), 2);
    //  After breakerOpenMs, one trial call; nothing else while it is out.
    assert_int_equal (s_pick (f->pool, "m1", only_s1, T0 + 1000), 0);
    llm_pool_call_started (f->pool, 0, T0 + 1000);
    assert_int_equal (s1->circuit, LLM_CIRCUIT_HALF_OPEN);
    assert_int_equal (s_pick (f->pool, "m1", only_s1, T0 + 1001), 1);
    char text[500];
    llm_pool_describe (f->pool, T0 + 1001, text, sizeof text);
    assert_non_null (strstr (text, "s1: trial call in flight"));
    //  The trial fails: open again.
    llm_pool_call_ended (f->pool, 0, LLM_TIMEOUT, -1, "timeout", T0 + 1500);
    assert_int_equal (s1->circuit, LLM_CIRCUIT_OPEN);
    assert_int_equal (llm_pool_next_change (f->pool, T0 + 1500), T0 + 2500);
    llm_pool_describe (f->pool, T0 + 1500, text, sizeof text);
    assert_non_null (strstr (text, "s1: circuit open for 1000 ms more (last: timeout)"));
    //  The next trial succeeds: closed.
    assert_int_equal (s_pick (f->pool, "m1", only_s1, T0 + 2500), 0);
    llm_pool_call_started (f->pool, 0, T0 + 2500);
    llm_pool_call_ended (f->pool, 0, LLM_OK, -1, NULL, T0 + 2600);
    assert_int_equal (s1->circuit, LLM_CIRCUIT_CLOSED);
    assert_int_equal (s1->in_flight, 0);
    //  A cancelled trial lets another one go.
    for (int i = 0; i < 3; i++) {
        llm_pool_call_started (f->pool, 0, T0 + 3000);
        llm_pool_call_ended (f->pool, 0, LLM_SERVER_ERROR, -1, "HTTP 500", T0 + 3000);
    }
    llm_pool_call_started (f->pool, 0, T0 + 4000);
    llm_pool_call_cancelled (f->pool, 0);
    assert_int_equal (s_pick (f->pool, "m1", only_s1, T0 + 4001), 0);
}

static void test_down_and_none (void **state)
{
    s_fixture_t *f = *state;
    for (size_t i = 0; i < 3; i++)
        llm_pool_set_up (f->pool, i, false, "connection refused");
    size_t k;
    assert_int_equal (llm_pool_pick (f->pool, "m1", NULL, T0, &k), LLM_PICK_DOWN);
    assert_false (llm_pool_has_free_slot (f->pool, T0));
    assert_int_equal (llm_pool_usable (f->pool, T0), 0);
    char err[512];
    pcfg_t *config = pcfg_load_string (
        "{\"lmStudioServers\": [{\"url\": \"http://h:1\", \"models\": [\"x\"]}]}", "t", false, err,
        sizeof err);
    llm_pool_t *pool = llm_pool_new (config, err, sizeof err);
    assert_int_equal (llm_pool_pick (pool, "y", NULL, T0, &k), LLM_PICK_NONE);
    assert_int_equal (llm_pool_pick (pool, "x", NULL, T0, &k), LLM_PICK_OK);
    llm_pool_destroy (&pool);
    pcfg_destroy (&config);
}

static void test_api_keys (void **state)
{
    (void) state;
    char err[512] = "";
    char path[] = "/tmp/parley-key-XXXXXX";
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, "  sk-from-file\n", 15), 15);
    close (fd);
    setenv ("PARLEY_TEST_KEY", "sk-from-env", 1);
    char text[1024];
    snprintf (text, sizeof text,
              "{\"lmStudioServers\": [{\"url\": \"http://h:1\", \"apiKeyEnv\": \"PARLEY_TEST_KEY\"},"
              " {\"url\": \"http://h:2\", \"apiKeyFile\": \"%s\"}]}", path);
    pcfg_t *config = pcfg_load_string (text, "t", false, err, sizeof err);
    llm_pool_t *pool = llm_pool_new (config, err, sizeof err);
    assert_non_null (pool);
    assert_string_equal (llm_pool_server (pool, 0)->api_key, "sk-from-env");
    assert_string_equal (llm_pool_server (pool, 0)->api_key_from, "PARLEY_TEST_KEY");
    assert_string_equal (llm_pool_server (pool, 1)->api_key, "sk-from-file");
    llm_pool_destroy (&pool);
    pcfg_destroy (&config);
    unlink (path);
    //  A key that cannot be read stops the worker with the setting's path, never the key.
    unsetenv ("PARLEY_TEST_KEY");
    snprintf (text, sizeof text, "{\"lmStudioServers\": [{\"url\": \"http://h:1\", \"enabled\": false},"
                                 " {\"url\": \"http://h:1\", \"apiKeyEnv\": \"PARLEY_TEST_KEY\"}]}");
    config = pcfg_load_string (text, "t", false, err, sizeof err);
    assert_null (llm_pool_new (config, err, sizeof err));
    assert_string_equal (err, "lmStudioServers[1].apiKeyEnv: the environment variable "
                              "PARLEY_TEST_KEY is not set");
    pcfg_destroy (&config);
    snprintf (text, sizeof text, "{\"lmStudioServers\": [{\"url\": \"http://h:1\", "
                                 "\"apiKeyFile\": \"%s\"}]}", path);
    config = pcfg_load_string (text, "t", false, err, sizeof err);
    assert_null (llm_pool_new (config, err, sizeof err));
    assert_non_null (strstr (err, "lmStudioServers[0].apiKeyFile: cannot read /tmp/parley-key-"));
    assert_non_null (strstr (err, "No such file"));
    pcfg_destroy (&config);
    config = pcfg_load_string ("{}", "t", false, err, sizeof err);
    assert_null (llm_pool_new (config, err, sizeof err));
    assert_non_null (strstr (err, "no enabled server"));
    pcfg_destroy (&config);
}

int main (void)
{
    plog_init ("test", PLOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_servers, s_setup, s_teardown),
        cmocka_unit_test (test_model_match),
        cmocka_unit_test_setup_teardown (test_weights_and_slots, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_weighted_share, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_hot_and_tried_first, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_pause_after_429_and_503, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_circuit_breaker, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_down_and_none, s_setup, s_teardown),
        cmocka_unit_test (test_api_keys),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
