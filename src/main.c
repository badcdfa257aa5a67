/* main.c -- ndingest's entry point: parses the command line and runs serve, convert, schema
 * or deliver. */
#include "convert.h"
#include "delivery/deliver.h"
#include "log.h"
#include "json.h"
#include "options.h"
#include "schema.h"
#include "server.h"
#include "types.h"

int main(int argc, char **argv)
{
    struct options o;
    int rc = options_parse(&o, argc, argv);
    if (rc) {
        options_free(&o);
        return rc == 1 ? 0 : 2;
    }
    json_engine_init(); /* before server_run forks the workers */
    /* before any definition is loaded: its DEFAULTs are checked against the target too */
    type_set_target(o.clickhouse_1816 ? TYPE_TARGET_18_16 : TYPE_TARGET_CURRENT);
    if (o.command == CMD_SCHEMA) {
        rc = schema_run(&o);
    } else if (o.command == CMD_DELIVER) {
        log_set_quiet(o.quiet);
        rc = deliver_run(&o, NULL, NULL);
    } else
        rc = o.command == CMD_CONVERT ? convert_run(&o) : server_run(&o);
    options_free(&o);
    return rc;
}
