/*  pconfig_schema - the table behind pconfig (private to common/). */
#ifndef PCONFIG_SCHEMA_H_INCLUDED
#define PCONFIG_SCHEMA_H_INCLUDED

#include "common/pconfig.h"

typedef enum {
    PCFG_INT,       //  int64_t
    PCFG_NUM,       //  double
    PCFG_BOOL,      //  bool
    PCFG_STR,       //  char *, owned
    PCFG_STRS,      //  pcfg_strs_t
    PCFG_OBJ,       //  nested object; sub-fields are relative to base + offset
    PCFG_ARR,       //  pcfg_arr_t of sub->size elements
    PCFG_JSON,      //  json_t *, any JSON value, kept as is
    PCFG_IGNORE     //  accepted for compatibility with existing configs, unused
} pcfg_type_t;

#define PCFG_REQUIRED 1u    //  no default: must be given
#define PCFG_SECRET   2u    //  never printed

typedef struct pcfg_schema_s pcfg_schema_t;

typedef struct {
    const char *key;            //  JSON key
    pcfg_type_t type;
    size_t offset;              //  where the value lives, relative to the object's base
    const char *def;            //  default as JSON text; NULL with PCFG_REQUIRED
    double min, max;            //  inclusive bounds for numbers (ignored when min > max)
    const char *choices;        //  allowed strings, "a|b|c"
    const char *env;            //  environment variable that overrides the file
    unsigned flags;
    const pcfg_schema_t *sub;   //  for PCFG_OBJ and PCFG_ARR
    const char *example;        //  JSON text shown in the sample for required keys
    const char *doc;            //  one sentence for the sample and the reference
} pcfg_field_t;

struct pcfg_schema_s {
    const char *name;           //  for the reference ("entities[]")
    size_t size;                //  element size for arrays
    const pcfg_field_t *fields;
    size_t count;
};

extern const pcfg_schema_t pcfg_root_schema;

#endif
