/*
 * The process around an app's runtime worker: `provend --sandbox-exec --
 * PROGRAM ARGS...` applies what the kernel allows, then execs PROGRAM.
 *
 *   - no new privileges (setuid binaries gain nothing);
 *   - network, mount and PID namespaces of its own (as root, or through an
 *     unprivileged user namespace mapped to the caller's uid): no network
 *     interface but a down loopback, so no TCP or UDP anywhere (unix
 *     sockets on the file system still work, which is how nginx and
 *     provend reach the worker); with --hide DIR the data directory is an
 *     empty tmpfs but for --keep DIR (the workers' socket directory), so
 *     keys, storage and provend's socket are out of reach; a fresh /proc
 *     shows no other process; every capability dropped;
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
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/capability.h>

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


/*
 * Network, mount and PID namespaces; without root, inside a user namespace
 * of our own.  Returns whether the mount and PID ones exist.
 */
static int
provend_sandbox_namespaces(void)
{
    int    flags, full;
    char   map[64];
    uid_t  uid;
    gid_t  gid;

    flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID;
    if (unshare(flags) == 0) {
        return 1;
    }

    uid = getuid();
    gid = getgid();
    full = 1;
    if (unshare(CLONE_NEWUSER | flags) != 0) {
        full = 0;
        if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
            if (unshare(CLONE_NEWNET) != 0) {
                provend_sandbox_say("no network namespace", errno);
            }
            return 0;
        }
    }

    /* the same uid and gid inside, so files are reached as before */
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned) uid, (unsigned) uid);
    if (provend_sandbox_write("/proc/self/setgroups", "deny") != 0
        || provend_sandbox_write("/proc/self/uid_map", map) != 0)
    {
        provend_sandbox_say("cannot map the user namespace", errno);
        return 0;
    }
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned) gid, (unsigned) gid);
    if (provend_sandbox_write("/proc/self/gid_map", map) != 0) {
        provend_sandbox_say("cannot map the group", errno);
    }
    return full;
}


/*
 * In the new mount namespace: hide is covered by an empty tmpfs, keep
 * (inside hide) bound back at its place, and /proc is this PID
 * namespace's own.
 */
static void
provend_sandbox_mounts(const char *hide, const char *keep)
{
    int     kept;
    char    path[4096], fdpath[64], *p;
    size_t  hide_len;

    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        provend_sandbox_say("cannot make mounts private", errno);
        return;
    }

    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              NULL) != 0)
    {
        provend_sandbox_say("no /proc of its own", errno);
    }

    if (hide == NULL) {
        return;
    }

    kept = -1;
    hide_len = strlen(hide);
    if (keep != NULL) {
        if (strncmp(keep, hide, hide_len) != 0 || keep[hide_len] != '/') {
            fprintf(stderr, "provend sandbox: --keep must be inside --hide\n");
            return;
        }
        kept = open(keep, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (kept < 0) {
            provend_sandbox_say("cannot open the kept directory", errno);
            return;
        }
    }

    if (mount("tmpfs", hide, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=64k,mode=0700") != 0)
    {
        provend_sandbox_say("cannot hide the data directory", errno);
        if (kept >= 0) {
            close(kept);
        }
        return;
    }

    if (kept >= 0) {
        snprintf(path, sizeof(path), "%s", keep);
        for (p = path + hide_len + 1; (p = strchr(p, '/')) != NULL; p++) {
            *p = '\0';
            (void) mkdir(path, 0700);
            *p = '/';
        }
        (void) mkdir(path, 0700);
        snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", kept);
        if (mount(fdpath, path, NULL, MS_BIND, NULL) != 0) {
            provend_sandbox_say("cannot keep the socket directory", errno);
        }
        close(kept);
    }
}


/* Every capability, effective, permitted, inheritable and bounding. */
static void
provend_sandbox_drop_caps(void)
{
    int                               cap;
    struct __user_cap_header_struct   header;
    struct __user_cap_data_struct     data[2];

    for (cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno == EINVAL) {
            break;
        }
    }

    memset(&header, 0, sizeof(header));
    memset(data, 0, sizeof(data));
    header.version = _LINUX_CAPABILITY_VERSION_3;
    if (syscall(SYS_capset, &header, data) != 0) {
        provend_sandbox_say("cannot drop capabilities", errno);
    }
}


/*
 * The first process of the new PID namespace runs the program; this one
 * waits for it, passes on SIGTERM and SIGINT, and exits as it did.
 */
static pid_t  provend_sandbox_child;

static void
provend_sandbox_forward(int sig)
{
    if (provend_sandbox_child > 0) {
        kill(provend_sandbox_child, sig);
    }
}


static int
provend_sandbox_wait(void)
{
    int  status;

    signal(SIGTERM, provend_sandbox_forward);
    signal(SIGINT, provend_sandbox_forward);
    signal(SIGHUP, provend_sandbox_forward);

    while (waitpid(provend_sandbox_child, &status, 0) < 0) {
        if (errno != EINTR) {
            return 127;
        }
    }
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        kill(getpid(), WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
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
    int            i, isolated;
    const char    *hide, *keep;
    struct rlimit  none = { 0, 0 }, files;

    hide = NULL;
    keep = NULL;
    for (i = 0; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--hide") == 0) {
            hide = argv[i + 1];
        } else if (strcmp(argv[i], "--keep") == 0) {
            keep = argv[i + 1];
        } else {
            break;
        }
    }
    if (i < argc && strcmp(argv[i], "--") == 0) {
        i++;
    }
    argc -= i;
    argv += i;

    if (argc < 1) {
        fprintf(stderr, "provend sandbox: nothing to run\n");
        return 127;
    }

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        provend_sandbox_say("no_new_privs", errno);
    }
    (void) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);

    isolated = provend_sandbox_namespaces();

    if (isolated) {
        /* the program is the new PID namespace's first process */
        provend_sandbox_child = fork();
        if (provend_sandbox_child < 0) {
            provend_sandbox_say("cannot fork", errno);
            return 127;
        }
        if (provend_sandbox_child > 0) {
            /* _exit: nothing of this process's own to clean up or report
               (a sanitizer's exit-time checks cannot work across the
               namespaces made above) */
            _exit(provend_sandbox_wait());
        }
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        provend_sandbox_mounts(hide, keep);
    }

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

    provend_sandbox_drop_caps();
    provend_sandbox_seccomp();

    execvp(argv[0], argv);
    fprintf(stderr, "provend sandbox: cannot run %s: %s\n", argv[0],
            strerror(errno));
    return 127;
}
