/*  test_config - defaults, validation with JSON paths, overrides, the sample. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/pdaemon.h"
#include "common/plog.h"

static pcfg_t *s_load (const char *text, bool strict, char *err)
{
    return pcfg_load_string (text, "test.json", strict, err, 512);
}

static void s_expect_error (const char *text, const char *expected)
{
    char err[512] = "";
    pcfg_t *config = s_load (text, false, err);
    if (config)
        fail_msg ("loaded, but expected an error containing \"%s\"", expected);
    if (!strstr (err, expected))
        fail_msg ("error \"%s\" does not contain \"%s\"", err, expected);
}

static void test_embedded_default (void **state)
{
    (void) state;
    char err[512];
    pcfg_t *config = pcfg_load (NULL, true, err, sizeof err);
    assert_non_null (config);
    assert_int_equal (config->entities.count, 10);
    assert_string_equal (pcfg_entity (config, 0)->id, "philosopher");
    assert_int_equal (pcfg_entity_index (config, "storyteller"), 9);
    assert_int_equal (pcfg_entity_index (config, "nobody"), -1);
    assert_int_equal (config->sources.count, 1);
    assert_string_equal (((pcfg_source_t *) config->sources.items)[0].type, "demo");
    pcfg_destroy (&config);
    assert_null (config);
}

static void test_defaults (void **state)
{
    (void) state;
    char err[512];
    pcfg_t *config = s_load ("{}", true, err);
    assert_non_null (config);
    assert_int_equal (config->stale_claim_timeout_ms, 60000);
    assert_int_equal (config->max_retries, 3);
    assert_int_equal (config->default_priority, 50);
    assert_int_equal (config->global_max_in_flight, 5);
    assert_int_equal (config->entity_max_in_flight, 2);
    assert_int_equal (config->polling_interval_ms, 30000);
    assert_int_equal (config->delay_urgent.min_ms, 1000);
    assert_int_equal (config->delay_urgent.max_ms, 3000);
    assert_int_equal (config->delay_low.max_ms, 8000);
    assert_string_equal (config->broker_frontend, "tcp://127.0.0.1:7531");
    assert_string_equal (config->fsync, "always");
    assert_string_equal (config->data_dir, "parley-data");
    assert_int_equal (config->entities.count, 0);
    //  Defaults of array elements apply to each element.
    pcfg_destroy (&config);
    config = s_load ("{\"entities\":[{\"id\":\"a\"}]}", true, err);
    assert_non_null (config);
    pcfg_entity_t *e = pcfg_entity (config, 0);
    assert_string_equal (e->name, "a");     //  name defaults to the id
    assert_true (e->enabled);
    assert_true (e->response_chance == 0.15);
    assert_int_equal (e->max_tokens, 150);
    assert_int_equal (e->rate.max_posts_per_minute, 0);
    pcfg_destroy (&config);
}

static void test_errors_name_the_path (void **state)
{
    (void) state;
    s_expect_error ("{\"entities\":[{\"id\":\"a\"},{\"id\":\"b\",\"rateLimits\":{\"maxPostsPerMinute\":\"3\"}}]}",
                    "entities[1].rateLimits.maxPostsPerMinute: expected an integer, got a string");
    s_expect_error ("{\"queueSettings\":{\"defaultPriority\":120}}",
                    "queueSettings.defaultPriority: 120 is out of range 0..99");
    s_expect_error ("{\"entities\":[{\"id\":\"a\",\"responseChance\":1.5}]}",
                    "entities[0].responseChance: 1.5 is out of range 0..1");
    s_expect_error ("{\"storage\":{\"fsync\":\"sometimes\"}}",
                    "storage.fsync: \"sometimes\" is not one of always|batch|off");
    s_expect_error ("{\"entities\":[{\"name\":\"x\"}]}", "entities[0].id: required, but missing");
    s_expect_error ("{\"entities\":[{\"id\":\"a\"},{\"id\":\"a\"}]}",
                    "entities[1].id: \"a\" is also the id of entities[0]");
    s_expect_error ("{\"entities\":{}}", "entities: expected an array, got an object");
    s_expect_error ("{\"botSettings\":[]}", "botSettings: expected an object, got an array");
    s_expect_error ("{\"entities\":[{\"id\":\"a\",\"aliases\":[\"x\",3]}]}",
                    "entities[0].aliases[1]: expected a string, got an integer");
    s_expect_error ("{\"lmStudioServers\":[{\"name\":\"mac\"}]}",
                    "lmStudioServers[0]: needs \"url\" (or \"ip\" and \"port\")");
    s_expect_error ("{\"queueSettings\":{\"responseDelays\":{\"normal\":{\"minMs\":5,\"maxMs\":1}}}}",
                    "queueSettings.responseDelays.normal: minMs (5) is greater than maxMs (1)");
    s_expect_error ("{\n  \"botSettings\": {,}\n}", "test.json: line 2, column");
    s_expect_error ("{\"a\":1,\"a\":2}", "duplicate object key");
}

static void test_unknown_keys (void **state)
{
    (void) state;
    const char *text = "{\"botSettings\":{\"pollingIntervl\":5000},\"featureFlags\":{\"useQueue\":true}}";
    char err[512];
    int saved = plog_level;
    plog_level = -1;    //  the warning is expected
    pcfg_t *config = s_load (text, false, err);
    plog_level = saved;
    assert_non_null (config);   //  a warning only
    assert_int_equal (config->polling_interval_ms, 30000);
    pcfg_destroy (&config);
    config = s_load (text, true, err);
    assert_null (config);
    assert_non_null (strstr (err, "botSettings.pollingIntervl: unknown key (did you mean 'pollingInterval'?)"));
}

static void test_comments_and_seed_shape (void **state)
{
    (void) state;
    //  The seeds annotate their configs with // comments; ip + port servers.
    const char *text =
        "{\n"
        "  \"botSettings\": {\n"
        "    \"pollingInterval\": 30000,        // How often to check KV (ms)\n"
        "    \"minSecondsBetweenAnyPost\": 5,   /* global cooldown */\n"
        "    \"maxTotalMessagesPerMinute\": 50, // Hard cap\n"
        "    \"websocketPort\": 4002\n"
        "  },\n"
        "  \"queueSettings\": {\"staleClaimTimeout\": 60000, \"maxRetries\": 3, \"defaultPriority\": 50},\n"
        "  \"featureFlags\": {\"useQueue\": true, \"useRouter\": false},\n"
        "  \"lmStudioServers\": [{\"name\": \"Mac Studio 1\", \"ip\": \"10.0.0.102\", \"port\": 1234}],\n"
        "  \"entities\": [{\"id\": \"philosopher\", \"text\": \"a // is not a comment in a string\",\n"
        "     \"rateLimits\": {\"minSecondsBetweenPosts\": 45, \"maxPostsPerMinute\": 1, \"maxPostsPerHour\": 20},\n"
        "     \"responseChance\": 0.15}]\n"
        "}\n";
    char err[512];
    int saved = plog_level;
    plog_level = -1;    //  entities[0].text is unknown: a warning
    pcfg_t *config = s_load (text, false, err);
    plog_level = saved;
    if (!config)
        fail_msg ("%s", err);
    assert_true (config->min_seconds_between_any_post == 5);
    assert_int_equal (config->max_total_messages_per_minute, 50);
    pcfg_llm_server_t *server = config->llm_servers.items;
    assert_string_equal (server->url, "http://10.0.0.102:1234");
    assert_true (pcfg_entity (config, 0)->rate.min_seconds_between_posts == 45);
    assert_int_equal (pcfg_entity (config, 0)->rate.max_posts_per_hour, 20);
    pcfg_destroy (&config);
}

static void test_environment_overrides (void **state)
{
    (void) state;
    char err[512];
    setenv ("PARLEY_BROKER_BACKEND", "tcp://10.1.2.3:7532", 1);
    setenv ("WORKER_ID", "gpu-box-7", 1);
    setenv ("PARLEY_CONCURRENCY", "128", 1);
    pcfg_t *config = s_load ("{\"network\":{\"brokerBackend\":\"tcp://file:1\"}}", true, err);
    assert_non_null (config);
    assert_string_equal (config->broker_backend, "tcp://10.1.2.3:7532");
    assert_string_equal (config->worker_id, "gpu-box-7");
    assert_int_equal (config->worker_concurrency, 128);
    pcfg_destroy (&config);
    setenv ("PARLEY_CONCURRENCY", "lots", 1);
    config = s_load ("{}", true, err);
    assert_null (config);
    assert_non_null (strstr (err, "worker.concurrency (from $PARLEY_CONCURRENCY): expected an integer"));
    unsetenv ("PARLEY_BROKER_BACKEND");
    unsetenv ("WORKER_ID");
    unsetenv ("PARLEY_CONCURRENCY");
}

static void test_set_overrides (void **state)
{
    (void) state;
    char path[] = "/tmp/parley-test-config-XXXXXX";
    int fd = mkstemp (path);
    const char *text = "{\"entities\":[{\"id\":\"a\"},{\"id\":\"b\"}]}";
    assert_int_equal (write (fd, text, strlen (text)), (ssize_t) strlen (text));
    close (fd);
    char s1[] = "worker.concurrency=8";
    char s2[] = "entities[1].rateLimits.maxPostsPerMinute=4";
    char s3[] = "network.brokerFrontend=tcp://127.0.0.1:9";
    char s4[] = "poller.sources.0={\"name\":\"x\",\"type\":\"jsonl\",\"path\":\"-\"}";
    char *sets[] = {s1, s2, s3, s4};
    char err[512];
    pcfg_t *config = pdaemon_load_config (path, sets, 4, true, err, sizeof err);
    if (!config)
        fail_msg ("%s", err);
    assert_int_equal (config->worker_concurrency, 8);
    assert_int_equal (pcfg_entity (config, 1)->rate.max_posts_per_minute, 4);
    assert_string_equal (config->broker_frontend, "tcp://127.0.0.1:9");
    assert_int_equal (config->sources.count, 1);
    assert_string_equal (((pcfg_source_t *) config->sources.items)[0].type, "jsonl");
    pcfg_destroy (&config);
    char bad[] = "entities[5].id=x";
    char *sets2[] = {bad};
    assert_null (pdaemon_load_config (path, sets2, 1, true, err, sizeof err));
    assert_non_null (strstr (err, "past the end"));
    unlink (path);
}

//  Keys and values that are not UTF-8 (a shell passes any bytes): refused
//  with a reason. jansson frees a value it refuses to store, which once
//  left the walk on freed memory.
static void test_set_not_utf8 (void **state)
{
    (void) state;
    char err[512];
    char s1[] = "sink.dest\x9f\x91ions.0.path=out.jsonl";
    char s2[] = "worker.\xff=1";
    char s3[] = "worker.id=\xc3\x28";
    char *cases[] = {s1, s2, s3};
    const char *reasons[] = {"is not a valid key", "is not a valid key", "neither JSON nor UTF-8"};
    for (size_t i = 0; i < 3; i++) {
        json_t *root = json_object ();
        err[0] = 0;
        assert_int_equal (pdaemon_apply_sets (root, &cases[i], 1, err, sizeof err), -1);
        if (!strstr (err, reasons[i]))
            fail_msg ("case %zu: %s", i, err);
        json_decref (root);
    }
    //  The strings are given back as they came.
    assert_non_null (strchr (s3, '='));
}

//  The sample printed by `parleyctl config sample` loads, strictly, and
//  gives the defaults: the documentation cannot drift from the code.
static void test_sample_round_trip (void **state)
{
    (void) state;
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&buf, &size);
    pcfg_write_sample (out);
    fclose (out);
    char err[512];
    pcfg_t *config = s_load (buf, true, err);
    if (!config)
        fail_msg ("sample does not load: %s\n%s", err, buf);
    assert_int_equal (config->stale_claim_timeout_ms, 60000);
    assert_int_equal (config->entities.count, 1);   //  one example entity
    pcfg_destroy (&config);
    free (buf);
    out = open_memstream (&buf, &size);
    pcfg_write_reference (out);
    fclose (out);
    assert_non_null (strstr (buf, "| `staleClaimTimeout` | integer | `60000` |"));
    assert_non_null (strstr (buf, "PARLEY_BROKER_FRONTEND"));
    free (buf);
}

int main (void)
{
    plog_init ("test", PLOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_embedded_default),  cmocka_unit_test (test_defaults),
        cmocka_unit_test (test_errors_name_the_path), cmocka_unit_test (test_unknown_keys),
        cmocka_unit_test (test_comments_and_seed_shape), cmocka_unit_test (test_environment_overrides),
        cmocka_unit_test (test_set_overrides),     cmocka_unit_test (test_sample_round_trip),
        cmocka_unit_test (test_set_not_utf8),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
