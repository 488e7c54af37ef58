/*  fuzz_config - the configuration loader on untrusted text.

    The input is what a user could put in a file and on the command line:
    its first lines, while they start with "--set " (or are "--strict"),
    are PATH=VALUE overrides as `--set` takes them (and --strict-config);
    the rest is the JSON document. It goes the way pdaemon_load_config
    takes it: pcfg_parse_string (comments stripped), the overrides, then
    pcfg_from_json (defaults, bounds, validation). Seeds:
    tests/fuzz/config/ (config/default.json, the README's whole-file
    examples, small configurations with overrides).
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pconfig.h"
#include "common/pdaemon.h"
#include "common/plog.h"

#define MAX_SETS 16

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    plog_init ("fuzz", PLOG_TRACE);
    return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *text = malloc (size + 1);
    if (size)
        memcpy (text, data, size);
    text[size] = 0;
    char *sets[MAX_SETS];
    size_t nsets = 0;
    bool strict = false;
    char *doc = text;
    for (;;) {
        char *nl = strchr (doc, '\n');
        if (strncmp (doc, "--set ", 6) == 0 && nl && nsets < MAX_SETS) {
            *nl = 0;
            sets[nsets++] = doc + 6;
        }
        else if (strncmp (doc, "--strict\n", 9) == 0)
            strict = true;
        else
            break;
        doc = nl + 1;
    }
    char err[1024];
    json_t *root = pcfg_parse_string (doc, "fuzz", err, sizeof err);
    if (root) {
        if (pdaemon_apply_sets (root, sets, nsets, err, sizeof err) == 0) {
            pcfg_t *config = pcfg_from_json (root, "fuzz", strict, err, sizeof err);
            if (config) {
                for (size_t i = 0; i < config->entities.count; i++)
                    if (pcfg_entity_index (config, pcfg_entity (config, i)->id) < 0)
                        abort ();   //  every entity can be found by its id
                pcfg_destroy (&config);
            }
        }
        json_decref (root);
    }
    free (text);
    return 0;
}
