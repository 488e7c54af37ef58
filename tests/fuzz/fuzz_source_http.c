/*  fuzz_source_http - the generic HTTP source's page parser and field mapping.

    The input is one or more API answers, separated by a line "#page".
    Each may start with a line "#status N" (default 200). The first line of
    the input may be "#fields {...}": the source's "fields" mapping (JSON),
    as a user would configure it. The pages go, in order, to one source (so
    ids seen on a page are known on the next, as replies need), through
    source_http_feed: the code the poller runs on a real answer. Every
    message it emits is checked (fuzz_chat.h). Seeds: tests/fuzz/source_http/.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/plog.h"
#include "poller/source_feed.h"
#include "fuzz_chat.h"

#define MAX_PAGES 8

static pcfg_t *s_config;

static bool s_emit (void *ctx, source_t *source, const chat_msg_t *msg)
{
    int *count = ctx;
    fuzz_check_chat_msg (source->config->name, msg);
    //  The poller refuses a message now and then (its window is full): the
    //  source must keep it and hand it over again.
    return ++*count % 7 != 3;
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    plog_init ("fuzz", PLOG_TRACE);
    char err[512];
    s_config = pcfg_load_string (
        "{\"poller\": {\"sources\": [{\"name\": \"web\", \"type\": \"http\","
        " \"url\": \"http://127.0.0.1:9/api?since={since}\", \"pageSize\": 3,"
        " \"botAuthors\": [\"helperbot\"], \"defaultChat\": \"lobby\"}]}}",
        "fuzz", true, err, sizeof err);
    if (!s_config)
        abort ();
    return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *text = malloc (size + 1);
    if (size)
        memcpy (text, data, size);
    text[size] = 0;
    char *rest = text;
    pcfg_source_t config = ((pcfg_source_t *) s_config->sources.items)[0];
    json_t *fields = NULL;
    if (strncmp (rest, "#fields ", 8) == 0) {
        char *nl = strchr (rest, '\n');
        if (nl)
            *nl = 0;
        fields = json_loads (rest + 8, 0, NULL);
        rest = nl ? nl + 1 : rest + strlen (rest);
        if (!fields) {
            free (text);
            return 0;
        }
        config.fields = fields;
    }
    source_t *source = source_new (&config, s_config, 1);
    if (source) {
        int count = 0;
        for (int page = 0; page < MAX_PAGES && rest; page++) {
            char *next = strstr (rest, "\n#page\n");
            if (next) {
                *next = 0;
                next += 7;
            }
            long status = 200;
            if (strncmp (rest, "#status ", 8) == 0) {
                status = strtol (rest + 8, NULL, 10);
                char *nl = strchr (rest, '\n');
                rest = nl ? nl + 1 : rest + strlen (rest);
            }
            //  The body as phttp hands it over: exactly `size` bytes and a NUL.
            size_t len = strlen (rest);
            char *body = malloc (len + 1);
            memcpy (body, rest, len + 1);
            source_http_feed (source, status, body, len, 1000, s_emit, &count);
            free (body);
            const char *cursor = source->cursor (source);
            if (cursor && strlen (cursor) > 20)
                abort ();
            rest = next;
        }
        source_destroy (&source);
    }
    json_decref (fields);
    free (text);
    return 0;
}
