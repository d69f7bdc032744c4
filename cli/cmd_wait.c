/* placeholder, replaced below */
#include "cli/cli.h"
int cli_cmd_wait(int argc, char **argv) {
  (void)argc;
  (void)argv;
  return 2;
}
