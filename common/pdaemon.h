/*  pdaemon - what every Parley program does before its real work starts:
    command line, configuration, logging, and the ready file.

    Common options (each daemon adds its own description and extras):
        -c, --config FILE      configuration file (default: the embedded demo)
        -s, --set PATH=VALUE   override one setting, e.g. --set worker.concurrency=8
                               (VALUE is JSON, or a plain string)
            --strict-config    unknown configuration keys are errors
        -v, --verbose          more logging (twice for trace)
        -q, --quiet            only warnings and errors
            --ready-file FILE  once listening, write the bound endpoints there as JSON
        -h, --help             this help
        -V, --version          version
*/
#ifndef PDAEMON_H_INCLUDED
#define PDAEMON_H_INCLUDED

#include "common/pconfig.h"

#include <czmq.h>

typedef struct {
    const char *name;           //  program name, "parley-broker"
    const char *role;           //  log component, "broker"
    const char *summary;        //  one line: what it does
    const char *extra_help;     //  more lines for --help, may be NULL
    //  Optional, around the actor in pdaemon_run_actor: `before` runs just
    //  before the actor starts (the broker and sink start the transport
    //  authenticator here), and when it fails (-1) the actor is not started
    //  and the exit status is 1; `after` runs once the actor and its sockets
    //  are gone.
    int (*before) (const pcfg_t *config);
    void (*after) (void);
} pdaemon_info_t;

typedef struct {
    pcfg_t *config;
    char *config_path;          //  NULL = embedded default
    char *ready_file;
    int verbosity;              //  -v count minus -q count
} pdaemon_t;

//  Parses argv, loads the configuration and sets up logging. Exits the
//  process with status 0 for --help/--version and 2 for a bad command line
//  or configuration (after printing why).
void pdaemon_start (pdaemon_t *self, const pdaemon_info_t *info, int argc, char **argv);

void pdaemon_finish (pdaemon_t *self);

//  Writes `json` (an object of endpoint names to endpoints, plus "pid") to
//  `path` if it is not NULL: to a temporary name, then renamed, so a reader
//  never sees half a file. Takes ownership of `json`.
void pdaemon_write_ready (const char *path, json_t *json);

//  Runs `actor` (a czmq actor taking `args`) until SIGINT/SIGTERM or until
//  the actor ends by itself; then stops it. Runs the before/after hooks of
//  the info given to pdaemon_start around it. Returns the process exit
//  status: 0, or 1 when the actor (or the before hook) failed to start or
//  the actor stopped with an error.
int pdaemon_run_actor (zactor_fn *actor, void *args);

//  Applies PATH=VALUE overrides (as --set takes them) to a parsed
//  document. Returns 0, or -1 with the reason in `err`. Each string is
//  restored after use.
int pdaemon_apply_sets (json_t *root, char **sets, size_t nsets, char *err, size_t errlen);

//  Loads a configuration file (NULL = default) with PATH=VALUE overrides
//  applied first. Same contract as pcfg_load.
pcfg_t *pdaemon_load_config (const char *path, char **sets, size_t nsets, bool strict, char *err,
                             size_t errlen);

#endif
