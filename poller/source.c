/*  source - creates sources by kind. See source.h. */
#include "poller/source.h"
#include "common/plog.h"

#include <stdlib.h>
#include <string.h>

source_t *source_new (const pcfg_source_t *config, const pcfg_t *root, uint64_t seed)
{
    source_t *self = calloc (1, sizeof *self);
    self->config = config;
    self->root = root;
    int rc;
    if (strcmp (config->type, "demo") == 0)
        rc = source_demo_init (self, seed);
    else if (strcmp (config->type, "jsonl") == 0)
        rc = source_jsonl_init (self);
    else {
        plog_error ("source %s: type \"%s\" is not available in this build", config->name,
                    config->type);
        rc = -1;
    }
    if (rc) {
        free (self);
        return NULL;
    }
    return self;
}

void source_destroy (source_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    source_t *self = *self_p;
    if (self->destroy)
        self->destroy (self);
    free (self);
    *self_p = NULL;
}
