/*  broker - the single source of truth for work.

    The broker server is a czmq actor: it binds the frontend (pollers,
    sinks, parleyctl: ROUTER) and the backend (workers: ROUTER), stores and
    queues jobs, hands them to workers within their credits and every
    limit, fences results by dispatch token, retries, dead-letters, and
    answers admin commands. main.c is a thin wrapper around it.
*/
#ifndef BROKER_H_INCLUDED
#define BROKER_H_INCLUDED

#include <czmq.h>

#include "common/pconfig.h"

typedef struct {
    const pcfg_t *config;       //  borrowed; must outlive the actor
    const char *ready_file;     //  where to write the bound endpoints, or NULL
} broker_args_t;

//  The actor: zactor_new (broker_server, &args).
void broker_server (zsock_t *pipe, void *args);

#endif
