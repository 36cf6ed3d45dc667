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
 *     ptrace and other process inspection, mounts (old and new API),
 *     namespaces (unshare, setns, clone with CLONE_NEW*), modules,
 *     keyrings, BPF and the like fail with EPERM/EACCES;
 *   - rlimits: no core dumps, a bounded number of open files;
 *   - with --hide, /tmp, /var/tmp and /dev/shm are empty tmpfs of its own
 *     (apps cannot leave files for each other; --keep-ro DIR, the runtime,
 *     is put back read-only if one held it), and when provend runs as
 *     root the program runs as nobody (uid and gid 65534): root without
 *     capabilities still owns most of the file system.
 *
 * With --hide (how provend runs workers) a layer the kernel refuses stops
 * the program before it runs: a worker that could read the keys must not
 * start.  `provend --app-sandbox off` is the explicit way to run without.
 * Without --hide (a test or a tool) a refused layer is reported and
 * skipped.
 */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
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


/* --hide was given: every layer is required */
static int  provend_sandbox_strict;


/* Reports a refused layer; returns -1 if that stops the program. */
static int
provend_sandbox_refused(const char *what, int err)
{
    if (provend_sandbox_strict) {
        fprintf(stderr, "provend sandbox: %s: %s: the worker does not run "
                "without it (provend --app-sandbox off runs workers with no "
                "sandbox)\n", what, strerror(err));
        return -1;
    }
    fprintf(stderr, "provend sandbox: %s: %s (that layer is skipped)\n",
            what, strerror(err));
    return 0;
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
 * of our own.  Returns 1 if all three exist, 0 if fewer do (and that is
 * allowed), -1 if the program must not run.
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
        if (provend_sandbox_refused("no mount and PID namespaces", errno)
            != 0)
        {
            return -1;
        }
        full = 0;
        if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
            if (unshare(CLONE_NEWNET) != 0) {
                (void) provend_sandbox_refused("no network namespace",
                                               errno);
            }
            return 0;
        }
    }

    /* the same uid and gid inside, so files are reached as before */
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned) uid, (unsigned) uid);
    if (provend_sandbox_write("/proc/self/setgroups", "deny") != 0
        || provend_sandbox_write("/proc/self/uid_map", map) != 0)
    {
        return provend_sandbox_refused("cannot map the user namespace",
                                       errno) == 0 ? 0 : -1;
    }
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned) gid, (unsigned) gid);
    if (provend_sandbox_write("/proc/self/gid_map", map) != 0
        && provend_sandbox_refused("cannot map the group", errno) != 0)
    {
        return -1;
    }
    return full;
}


static const char  *provend_sandbox_scratch_dirs[] = {
    "/tmp", "/var/tmp", "/dev/shm"
};


/* Whether path is dir or below it. */
static int
provend_sandbox_under(const char *path, const char *dir)
{
    size_t  len = strlen(dir);

    return strncmp(path, dir, len) == 0
           && (path[len] == '/' || path[len] == '\0');
}


/*
 * In the new mount namespace: hide is covered by an empty tmpfs, keep
 * (inside hide) bound back at its place, the scratch directories are
 * empty, and /proc is this PID namespace's own.  -1: must not run.
 */
/*
 * Mounts the directory open as fd at path again, under the tmpfs that
 * now covers it (the way down made on that tmpfs); read-only if asked.
 */
static int
provend_sandbox_bind_back(int fd, const char *where, int readonly)
{
    char  path[4096], fdpath[64], *p;

    snprintf(path, sizeof(path), "%s", where);
    for (p = path + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        (void) mkdir(path, 0711);
        *p = '/';
    }
    (void) mkdir(path, 0711);
    snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
    if (mount(fdpath, path, NULL, MS_BIND | MS_REC, NULL) != 0
        || (readonly
            && mount(NULL, path, NULL,
                     MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                     NULL) != 0))
    {
        return -1;
    }
    return 0;
}


static int
provend_sandbox_mounts(const char *hide, const char *keep,
    const char *keep_ro)
{
    int          kept, shown;
    int          hidden;
    size_t       i, hide_len;
    struct stat  before, now;
    const char  *dir;

    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        /* mounts made now would show outside: none is made */
        return provend_sandbox_refused("cannot make mounts private", errno);
    }

    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              NULL) != 0
        && provend_sandbox_refused("no /proc of its own", errno) != 0)
    {
        return -1;
    }

    if (hide == NULL) {
        return 0;
    }

    kept = -1;
    shown = -1;
    hide_len = strlen(hide);

    /* the runtime: if a scratch directory holds it (a checkout in /tmp),
       it is put back, read-only */
    if (keep_ro != NULL) {
        shown = open(keep_ro, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (shown < 0 || fstat(shown, &before) != 0) {
            (void) provend_sandbox_refused("cannot open the runtime "
                                           "directory", errno);
            goto refused;
        }
    }

    if (keep != NULL) {
        if (strncmp(keep, hide, hide_len) != 0 || keep[hide_len] != '/') {
            fprintf(stderr, "provend sandbox: --keep must be inside --hide\n");
            return -1;
        }
        kept = open(keep, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (kept < 0) {
            (void) provend_sandbox_refused("cannot open the kept directory",
                                           errno);
            goto refused;
        }
    }

    /*
     * Empty scratch directories; one that holds the data directory (a
     * test's) hides it too.  0711 on the tmpfs: the program may be
     * another user (nobody) by the time it walks down to the kept one.
     */
    hidden = 0;
    for (i = 0; i < sizeof(provend_sandbox_scratch_dirs) / sizeof(char *);
         i++)
    {
        dir = provend_sandbox_scratch_dirs[i];
        if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "size=1m,mode=1777") != 0)
        {
            if (errno != ENOENT && provend_sandbox_refused(dir, errno) != 0) {
                goto refused;
            }
        } else if (provend_sandbox_under(hide, dir)) {
            hidden = 1;
        }
    }

    if (!hidden && mount("tmpfs", hide, "tmpfs",
                         MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         "size=64k,mode=0711") != 0)
    {
        (void) provend_sandbox_refused("cannot hide the data directory",
                                       errno);
        goto refused;
    }

    if (kept >= 0 && provend_sandbox_bind_back(kept, keep, 0) != 0) {
        (void) provend_sandbox_refused("cannot keep the socket directory",
                                       errno);
        goto refused;
    }

    if (shown >= 0
        && (stat(keep_ro, &now) != 0 || now.st_dev != before.st_dev
            || now.st_ino != before.st_ino)
        && provend_sandbox_bind_back(shown, keep_ro, 1) != 0)
    {
        (void) provend_sandbox_refused("cannot show the runtime directory",
                                       errno);
        goto refused;
    }

    if (kept >= 0) {
        close(kept);
    }
    if (shown >= 0) {
        close(shown);
    }
    return 0;

refused:

    if (kept >= 0) {
        close(kept);
    }
    if (shown >= 0) {
        close(shown);
    }
    return -1;
}


/*
 * Root without capabilities still owns most files outside: the program
 * runs as nobody instead.  The bounding set goes first (dropping from it
 * needs CAP_SETPCAP, which setuid takes away).
 */
static int
provend_sandbox_drop_caps(int switch_user)
{
    int                               cap;
    struct __user_cap_header_struct   header;
    struct __user_cap_data_struct     data[2];

    for (cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno == EINVAL) {
            break;
        }
    }

    if (switch_user
        && (setgroups(0, NULL) != 0
            || setresgid(PROVEND_SANDBOX_UID, PROVEND_SANDBOX_UID,
                         PROVEND_SANDBOX_UID) != 0
            || setresuid(PROVEND_SANDBOX_UID, PROVEND_SANDBOX_UID,
                         PROVEND_SANDBOX_UID) != 0)
        && provend_sandbox_refused("cannot become nobody", errno) != 0)
    {
        return -1;
    }

    memset(&header, 0, sizeof(header));
    memset(data, 0, sizeof(data));
    header.version = _LINUX_CAPABILITY_VERSION_3;
    if (syscall(SYS_capset, &header, data) != 0) {
        return provend_sandbox_refused("cannot drop capabilities", errno);
    }
    return 0;
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
provend_sandbox_wait(const sigset_t *unblock)
{
    int  status;

    signal(SIGTERM, provend_sandbox_forward);
    signal(SIGINT, provend_sandbox_forward);
    signal(SIGHUP, provend_sandbox_forward);
    sigprocmask(SIG_UNBLOCK, unblock, NULL);

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

#define PROVEND_CLONE_NEW                                                    \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC             \
     | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)

#define PROVEND_DENY(nr)                                                     \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1),                         \
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

static int
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

        /* clone(): no new namespaces (the flags are its first argument;
           the low byte is the exit signal, so CLONE_NEWTIME is not here) */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                 offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROVEND_CLONE_NEW, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),

        /* clone3() keeps its flags in memory a filter cannot read:
           "not implemented" makes the C library fall back to clone() */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),

        PROVEND_DENY(__NR_ptrace),
        PROVEND_DENY(__NR_process_vm_readv),
        PROVEND_DENY(__NR_process_vm_writev),
        PROVEND_DENY(__NR_io_uring_setup),
        PROVEND_DENY(__NR_mount),
        PROVEND_DENY(__NR_open_tree),
        PROVEND_DENY(__NR_move_mount),
        PROVEND_DENY(__NR_fsopen),
        PROVEND_DENY(__NR_fsconfig),
        PROVEND_DENY(__NR_fsmount),
        PROVEND_DENY(__NR_fspick),
        PROVEND_DENY(__NR_mount_setattr),
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
        return provend_sandbox_refused("no seccomp filter", errno);
    }
    return 0;
}

#else

static int
provend_sandbox_seccomp(void)
{
    return provend_sandbox_refused("no seccomp filter for this "
                                   "architecture", ENOSYS);
}

#endif


int
provend_sandbox_exec(int argc, char **argv)
{
    int            i, isolated, as_root, waiter[2];
    sigset_t       forwarded;
    const char    *hide, *keep, *keep_ro;
    struct rlimit  none = { 0, 0 }, files;

    hide = NULL;
    keep = NULL;
    keep_ro = NULL;
    for (i = 0; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--hide") == 0) {
            hide = argv[i + 1];
        } else if (strcmp(argv[i], "--keep") == 0) {
            keep = argv[i + 1];
        } else if (strcmp(argv[i], "--keep-ro") == 0) {
            keep_ro = argv[i + 1];
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
    provend_sandbox_strict = (hide != NULL);
    as_root = (getuid() == 0);

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        && provend_sandbox_refused("no_new_privs", errno) != 0)
    {
        return 126;
    }
    (void) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);

    isolated = provend_sandbox_namespaces();
    if (isolated < 0) {
        return 126;
    }

    if (isolated) {
        /*
         * The program is the new PID namespace's first process.  The
         * signals this process forwards are held until it can forward
         * them, and until the child has asked to die with it.
         */
        sigemptyset(&forwarded);
        sigaddset(&forwarded, SIGTERM);
        sigaddset(&forwarded, SIGINT);
        sigaddset(&forwarded, SIGHUP);
        sigprocmask(SIG_BLOCK, &forwarded, NULL);

        /* the child sees the waiter gone when this pipe's write end
           closes (getppid() is 0 in a new PID namespace) */
        if (pipe2(waiter, O_CLOEXEC) != 0) {
            fprintf(stderr, "provend sandbox: pipe: %s\n", strerror(errno));
            return 127;
        }
        provend_sandbox_child = fork();
        if (provend_sandbox_child < 0) {
            fprintf(stderr, "provend sandbox: cannot fork: %s\n",
                    strerror(errno));
            return 127;
        }
        if (provend_sandbox_child > 0) {
            /* _exit: nothing of this process's own to clean up or report
               (a sanitizer's exit-time checks cannot work across the
               namespaces made above) */
            close(waiter[0]);
            _exit(provend_sandbox_wait(&forwarded));
        }
        close(waiter[1]);
        sigprocmask(SIG_UNBLOCK, &forwarded, NULL);
        if (provend_sandbox_mounts(hide, keep, keep_ro) != 0) {
            _exit(126);
        }
    }

    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_max > 4096) {
        files.rlim_max = 4096;
    }
    if (files.rlim_cur > files.rlim_max) {
        files.rlim_cur = files.rlim_max;
    }
    if ((setrlimit(RLIMIT_CORE, &none) != 0
         || setrlimit(RLIMIT_NOFILE, &files) != 0)
        && provend_sandbox_refused("rlimits", errno) != 0)
    {
        _exit(126);
    }

    if (provend_sandbox_drop_caps(as_root && hide != NULL) != 0
        || provend_sandbox_seccomp() != 0)
    {
        _exit(126);
    }

    /* a working directory inside --hide would still reach its files */
    if (chdir("/") != 0) {
        fprintf(stderr, "provend sandbox: chdir: %s\n", strerror(errno));
        _exit(126);
    }

    /*
     * Dies with the waiter (or provend): set here, as a change of user
     * clears it.  Then, if the waiter is already gone, it is too late for
     * the signal: leave.
     */
    (void) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (isolated) {
        struct pollfd  gone = { .fd = waiter[0], .events = POLLIN };

        if (poll(&gone, 1, 0) != 0) {
            _exit(126);
        }
        close(waiter[0]);
    }

    execvp(argv[0], argv);
    fprintf(stderr, "provend sandbox: cannot run %s: %s\n", argv[0],
            strerror(errno));
    _exit(127);
}
