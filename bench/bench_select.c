/*  bench_select - the poller's cost per message against the number of entities.

    Usage: bench_select [MESSAGES]     (default 100000)

    For 10, 100 and 1,000 entities (each with an id and an alias; two with
    a responseChance of 0.1, the others answering mentions only), runs the
    selection over MESSAGES chat messages, a third of them mentioning an
    entity, and prints microseconds per message. With the mention index
    the figure does not grow with the entity count (each entity with a
    responseChance costs one draw, a SHA-1, per message).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/pconfig.h"
#include "poller/select.h"

static double s_seconds (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void s_run (int entities, int messages)
{
    size_t cap = 200 + (size_t) entities * 120;
    char *text = malloc (cap), err[512];
    size_t len = (size_t) snprintf (text, cap, "{\"entities\": [");
    for (int i = 0; i < entities; i++)
        len += (size_t) snprintf (text + len, cap - len,
                                  "%s{\"id\":\"ent%d\",\"aliases\":[\"alias%d\"],\"responseChance\":%s}",
                                  i ? "," : "", i, i, i < 2 ? "0.1" : "0");
    snprintf (text + len, cap - len, "]}");
    pcfg_t *config = pcfg_load_string (text, "bench", true, err, sizeof err);
    free (text);
    if (!config) {
        fprintf (stderr, "%s\n", err);
        exit (1);
    }
    select_t *select = select_new (config);
    selection_t *out = calloc ((size_t) entities, sizeof *out);
    long selected = 0;
    double start = s_seconds ();
    for (int i = 0; i < messages; i++) {
        char key[64], body[128];
        snprintf (key, sizeof key, "src/room/%d", i);
        if (i % 3 == 0)
            snprintf (body, sizeof body, "hey @ent%d what do you think about this", (i * 7919) % entities);
        else
            snprintf (body, sizeof body, "just some plain chat message number %d here", i);
        chat_msg_t m = {key + 9, "room", "group", "user", "user", body, NULL, 0, false, NULL, 0};
        selected += select_run (select, NULL, "src/room", &m, key, 7, out, NULL);
    }
    double took = s_seconds () - start;
    printf ("%5d entities: %6.2f us per message (%ld jobs)\n", entities, took / messages * 1e6,
            selected);
    free (out);
    select_destroy (&select);
    pcfg_destroy (&config);
}

int main (int argc, char **argv)
{
    int messages = argc > 1 ? atoi (argv[1]) : 100000;
    s_run (10, messages);
    s_run (100, messages);
    s_run (1000, messages);
    return 0;
}
