/*  fuzz_telegram - the Telegram source: getUpdates answers and their updates.

    The input is one or more answers to getUpdates, separated by a line
    "#page"; each may start with a line "#status N" (default 200). They go,
    in order, to one source through source_telegram_feed (the code the
    poller runs on a real answer: the response handling, then each update's
    message, author, reply and mention entities). After each answer the
    source's cursor is committed, as the poller does once the jobs are
    stored. Every message emitted is checked (fuzz_chat.h). Seeds:
    tests/fuzz/telegram/.
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
    return ++*count % 7 != 3;   //  now and then the poller is full
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    plog_init ("fuzz", PLOG_TRACE);
    setenv ("PARLEY_FUZZ_TELEGRAM_TOKEN", "123456:fuzz-token", 1);
    char err[512];
    s_config = pcfg_load_string (
        "{\"poller\": {\"sources\": [{\"name\": \"tg\", \"type\": \"telegram\","
        " \"url\": \"http://127.0.0.1:9\", \"tokenEnv\": \"PARLEY_FUZZ_TELEGRAM_TOKEN\","
        " \"botAuthors\": [\"helperbot\"]}]}}",
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
    source_t *source = source_new (s_config->sources.items, s_config, 1);
    if (!source)
        abort ();
    int count = 0;
    char *rest = text;
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
        size_t len = strlen (rest);
        char *body = malloc (len + 1);
        memcpy (body, rest, len + 1);
        //  The poller polls again until the last answer is handed over.
        for (int tries = 0; tries < 8; tries++)
            if (source_telegram_feed (source, status, body, len, 1000, s_emit, &count))
                break;
        free (body);
        const char *cursor = source->cursor (source);
        if (cursor) {
            char copy[32];
            if (strlen (cursor) >= sizeof copy)
                abort ();
            strcpy (copy, cursor);
            source->committed (source, copy);
        }
        rest = next;
    }
    source_destroy (&source);
    free (text);
    return 0;
}
