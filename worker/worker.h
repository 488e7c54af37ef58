/*  worker - writes replies: takes jobs from the broker, has a backend (an
    LLM, or the built-in templates) write them, and sends the results to
    the sink. See worker_server.c for the conversation.
*/
#ifndef WORKER_H_INCLUDED
#define WORKER_H_INCLUDED

#include <czmq.h>

#include "common/pconfig.h"

typedef struct {
    const pcfg_t *config;       //  borrowed; must outlive the actor
    const char *ready_file;
} worker_args_t;

void worker_server (zsock_t *pipe, void *args);

#endif
