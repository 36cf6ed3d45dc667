/*
 * `provend --sandbox-exec -- PROGRAM ARGS...`: what surrounds an app's
 * runtime worker process (see sandbox.c for the layers).
 */

#ifndef PROVEND_SANDBOX_H
#define PROVEND_SANDBOX_H

/*
 * Who a worker runs as when provend runs as root: each app a uid (and gid)
 * of its own from PROVEND_SANDBOX_APP_UID up, given with --uid; nobody
 * (65534) when none is given (the deploy check).
 */
#define PROVEND_SANDBOX_UID      65534
#define PROVEND_SANDBOX_APP_UID  0x70000000u

/* Applies the layers and execs argv[0]; returns only on failure
   (126: a required layer was refused, 127: nothing to run). */
int provend_sandbox_exec(int argc, char **argv);

#endif /* PROVEND_SANDBOX_H */
