/*  dest - creates destinations by kind. See dest.h. */
#include "sink/dest.h"
#include "common/plog.h"

#include <stdlib.h>
#include <string.h>

dest_t *dest_new (const pcfg_destination_t *config, const pcfg_t *root, dest_done_fn *done,
                  void *ctx)
{
    dest_t *self = calloc (1, sizeof *self);
    self->config = config;
    self->root = root;
    self->done = done;
    self->ctx = ctx;
    int rc;
    if (strcmp (config->type, "stdout") == 0)
        rc = dest_stdout_init (self);
    else if (strcmp (config->type, "jsonl") == 0)
        rc = dest_jsonl_init (self);
    else {
        plog_error ("destination %s: type \"%s\" is not available in this build", config->name,
                    config->type);
        rc = -1;
    }
    if (rc) {
        free (self);
        return NULL;
    }
    return self;
}

void dest_destroy (dest_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dest_t *self = *self_p;
    if (self->destroy)
        self->destroy (self);
    free (self);
    *self_p = NULL;
}
