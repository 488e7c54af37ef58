/*  backend - creates the configured backend. See backend.h. */
#include "worker/backend.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <stdlib.h>
#include <string.h>

backend_t *backend_new (const pcfg_t *config, backend_done_fn *done, void *ctx)
{
    backend_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->done = done;
    self->ctx = ctx;
    int rc;
    if (strcmp (config->worker_backend, "template") == 0)
        rc = backend_template_init (self);
    else if (strcmp (config->worker_backend, "openai") == 0)
        rc = backend_openai_init (self);
    else {
        plog_error ("backend \"%s\" is not available in this build", config->worker_backend);
        rc = -1;
    }
    if (rc) {
        free (self);
        return NULL;
    }
    return self;
}

void backend_destroy (backend_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    backend_t *self = *self_p;
    if (self->destroy)
        self->destroy (self);
    free (self);
    *self_p = NULL;
}
