/*  fuzz_jsonl - the JSON-lines source: a file (or standard input) of chat
    messages, one JSON object a line.

    The input is the file. It is read through a memory file the source
    opens by path, and polled to its end as the poller does, with the
    poller refusing a message now and then (it must come again). Every
    message emitted is checked (fuzz_chat.h). Seeds: tests/fuzz/jsonl/.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/plog.h"
#include "fuzz_chat.h"

#define MAX_POLLS 10000

static pcfg_t *s_config;
static int s_fd;

static bool s_emit (void *ctx, source_t *source, const chat_msg_t *msg)
{
    int *count = ctx;
    fuzz_check_chat_msg (source->config->name, msg);
    return ++*count % 7 != 3;
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    plog_init ("fuzz", PLOG_TRACE);
    fuzz_scrubbed = false;     //  jansson refuses invalid UTF-8; U+FFFF is a character here
    s_fd = memfd_create ("fuzz-jsonl", 0);
    if (s_fd < 0)
        abort ();
    char json[300], err[512];
    snprintf (json, sizeof json,
              "{\"poller\": {\"sources\": [{\"name\": \"file\", \"type\": \"jsonl\","
              " \"path\": \"/proc/self/fd/%d\", \"botAuthors\": [\"helperbot\"]}]}}",
              s_fd);
    s_config = pcfg_load_string (json, "fuzz", true, err, sizeof err);
    if (!s_config)
        abort ();
    return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (ftruncate (s_fd, 0) || (size && pwrite (s_fd, data, size, 0) != (ssize_t) size))
        abort ();
    source_t *source = source_new (s_config->sources.items, s_config, 1);
    if (!source)
        abort ();
    int count = 0;
    for (int polls = 0; polls < MAX_POLLS && !source->finished (source); polls++)
        source->poll (source, 1763900000000 + polls, 5, s_emit, &count);
    FUZZ_REQUIRE (source->finished (source), "the source did not reach the end of the file");
    const char *cursor = source->cursor (source);
    FUZZ_REQUIRE (!cursor || strtoull (cursor, NULL, 10) == size,
                  "the cursor is not the file's end");
    source_destroy (&source);
    return 0;
}
