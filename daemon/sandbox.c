/*
 * The process around an app's runtime worker: `provend --sandbox-exec --
 * PROGRAM ARGS...` applies what the kernel allows, then execs PROGRAM.
 *
 *   - no new privileges (setuid binaries gain nothing);
 *   - a network namespace of its own with no interface but a down loopback
 *     (as root, or through an unprivileged user namespace mapped to the
 *     caller's uid): no TCP or UDP anywhere; unix sockets on the file
 *     system still work, which is how nginx and provend reach the worker;
 *   - a seccomp filter: socket() of any family but AF_UNIX, io_uring,
 *     ptrace and other process inspection, mounts, namespaces, modules,
 *     keyrings, BPF and the like fail with EPERM/EACCES;
 *   - rlimits: no core dumps, a bounded number of open files.
 *
 * A layer the kernel refuses is reported once on stderr and skipped: the
 * worker still runs, with the layers that did apply.
 */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "sandbox.h"


#if defined(__x86_64__)
#define PROVEND_AUDIT_ARCH  AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define PROVEND_AUDIT_ARCH  AUDIT_ARCH_AARCH64
#endif


static void
provend_sandbox_say(const char *what, int err)
{
    fprintf(stderr, "provend sandbox: %s: %s (that layer is skipped)\n",
            what, strerror(err));
}


static int
provend_sandbox_write(const char *path, const char *text)
{
    int      fd;
    ssize_t  n;

    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t) strlen(text) ? 0 : -1;
}


/* A network namespace; without root, inside a user namespace of our own. */
static void
provend_sandbox_network(void)
{
    char   map[64];
    uid_t  uid;
    gid_t  gid;

    if (unshare(CLONE_NEWNET) == 0) {
        return;
    }

    uid = getuid();
    gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
        provend_sandbox_say("no network namespace", errno);
        return;
    }

    /* the same uid and gid inside, so files are reached as before */
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned) uid, (unsigned) uid);
    if (provend_sandbox_write("/proc/self/setgroups", "deny") != 0
        || provend_sandbox_write("/proc/self/uid_map", map) != 0)
    {
        provend_sandbox_say("cannot map the user namespace", errno);
        return;
    }
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned) gid, (unsigned) gid);
    if (provend_sandbox_write("/proc/self/gid_map", map) != 0) {
        provend_sandbox_say("cannot map the group", errno);
    }
}


#ifdef PROVEND_AUDIT_ARCH

#define PROVEND_DENY(nr)                                                     \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1),                         \
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

static void
provend_sandbox_seccomp(void)
{
    struct sock_filter  filter[] = {
        /* another architecture's calls: refused outright */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                 offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROVEND_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),

        BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                 offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        /* x32 numbers would get around the list below */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif

        /* socket(): AF_UNIX only */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                 offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K,
                 SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA)),

        PROVEND_DENY(__NR_ptrace),
        PROVEND_DENY(__NR_process_vm_readv),
        PROVEND_DENY(__NR_process_vm_writev),
        PROVEND_DENY(__NR_io_uring_setup),
        PROVEND_DENY(__NR_mount),
        PROVEND_DENY(__NR_umount2),
        PROVEND_DENY(__NR_pivot_root),
        PROVEND_DENY(__NR_chroot),
        PROVEND_DENY(__NR_unshare),
        PROVEND_DENY(__NR_setns),
        PROVEND_DENY(__NR_init_module),
        PROVEND_DENY(__NR_finit_module),
        PROVEND_DENY(__NR_delete_module),
        PROVEND_DENY(__NR_kexec_load),
        PROVEND_DENY(__NR_bpf),
        PROVEND_DENY(__NR_perf_event_open),
        PROVEND_DENY(__NR_keyctl),
        PROVEND_DENY(__NR_add_key),
        PROVEND_DENY(__NR_request_key),
        PROVEND_DENY(__NR_userfaultfd),
        PROVEND_DENY(__NR_open_by_handle_at),
        PROVEND_DENY(__NR_reboot),
        PROVEND_DENY(__NR_swapon),
        PROVEND_DENY(__NR_swapoff),
        PROVEND_DENY(__NR_acct),
        PROVEND_DENY(__NR_settimeofday),
        PROVEND_DENY(__NR_clock_settime),

        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog  prog = {
        .len = (unsigned short) (sizeof(filter) / sizeof(filter[0])),
        .filter = filter,
    };

    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        provend_sandbox_say("no seccomp filter", errno);
    }
}

#else

static void
provend_sandbox_seccomp(void)
{
    fprintf(stderr, "provend sandbox: no seccomp filter for this "
            "architecture (that layer is skipped)\n");
}

#endif


int
provend_sandbox_exec(int argc, char **argv)
{
    struct rlimit  none = { 0, 0 }, files;

    if (argc < 1) {
        fprintf(stderr, "provend sandbox: nothing to run\n");
        return 127;
    }

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        provend_sandbox_say("no_new_privs", errno);
    }
    (void) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);

    provend_sandbox_network();

    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_max > 4096) {
        files.rlim_max = 4096;
    }
    if (files.rlim_cur > files.rlim_max) {
        files.rlim_cur = files.rlim_max;
    }
    if (setrlimit(RLIMIT_CORE, &none) != 0
        || setrlimit(RLIMIT_NOFILE, &files) != 0)
    {
        provend_sandbox_say("rlimits", errno);
    }

    provend_sandbox_seccomp();

    execvp(argv[0], argv);
    fprintf(stderr, "provend sandbox: cannot run %s: %s\n", argv[0],
            strerror(errno));
    return 127;
}
