/* main.c -- ndingest's entry point: parses the command line and runs serve or convert. */
#include "convert.h"
#include "json.h"
#include "options.h"
#include "server.h"

int main(int argc, char **argv)
{
    struct options o;
    int rc = options_parse(&o, argc, argv);
    if (rc) {
        options_free(&o);
        return rc == 1 ? 0 : 2;
    }
    json_engine_init(); /* before server_run forks the workers */
    rc = o.command == CMD_CONVERT ? convert_run(&o) : server_run(&o);
    options_free(&o);
    return rc;
}
