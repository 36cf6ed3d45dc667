/*
 * `provend --sandbox-exec -- PROGRAM ARGS...`: what surrounds an app's
 * runtime worker process (see sandbox.c for the layers).
 */

#ifndef PROVEND_SANDBOX_H
#define PROVEND_SANDBOX_H

/* Applies the layers and execs argv[0]; returns only on failure (127). */
int provend_sandbox_exec(int argc, char **argv);

#endif /* PROVEND_SANDBOX_H */
