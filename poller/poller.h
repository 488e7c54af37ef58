/*  poller - finds new chat messages and turns them into jobs.

    The poller server is a czmq actor: it runs the configured sources, drops
    messages it has seen, picks which entities answer (select.h), attaches
    the chat's recent lines as context, and submits the jobs to the broker
    in batches. A batch counts as handed over only when the broker's ACK
    arrives; until then it is sent again every resendMs (the broker drops
    duplicates). Reading pauses while submitWindow jobs are unacknowledged.
*/
#ifndef POLLER_H_INCLUDED
#define POLLER_H_INCLUDED

#include <czmq.h>

#include "common/pconfig.h"

typedef struct {
    const pcfg_t *config;       //  borrowed; must outlive the actor
    const char *ready_file;
} poller_args_t;

void poller_server (zsock_t *pipe, void *args);

#endif
