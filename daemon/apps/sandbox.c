/*
 * The process around an app's runtime worker: `provend --sandbox-exec --
 * PROGRAM ARGS...` applies what the kernel allows, then execs PROGRAM.
 *
 *   - no new privileges (setuid binaries gain nothing);
 *   - a session of its own (setsid): no controlling terminal;
 *   - network, mount and PID namespaces of its own (as root, or through an
 *     unprivileged user namespace mapped to the caller's uid): no network
 *     interface but a down loopback, so no TCP or UDP anywhere (unix
 *     sockets on the file system still work, which is how nginx and
 *     provend reach the worker); a fresh /proc shows no other process;
 *     every capability dropped;
 *   - with --hide DIR (the data directory), a minimal root entered with
 *     pivot_root: the system's /usr, /etc and library directories, the
 *     program's own install and --keep-ro DIR (the runtime) read-only,
 *     --keep DIR (the app's socket directory) at its place, /dev with
 *     null, zero and urandom only, its own empty /tmp and /var/tmp, and
 *     nothing else: no keys, storage or provend socket, no other node's
 *     data, no /run, no /home;
 *   - a seccomp filter: socket() of any family but AF_UNIX, io_uring,
 *     ptrace and other process inspection, mounts (old and new API),
 *     namespaces (unshare, setns, clone with CLONE_NEW*), modules,
 *     keyrings, BPF, ioctl TIOCSTI and TIOCLINUX and the like fail with
 *     EPERM/EACCES;
 *   - rlimits: no core dumps, a bounded number of open files;
 *   - when provend runs as root the program runs as nobody (uid and gid
 *     65534): root without capabilities still owns most of the file
 *     system.
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
#include <sys/ioctl.h>
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


/* Processes and threads of one app's user, at most. */
#define PROVEND_SANDBOX_NPROC  2048

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

    /* IPC and UTS too: no System V or POSIX queues shared with anyone */
    flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC
            | CLONE_NEWUTS;
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


/*
 * What the minimal root shows of the host, read-only: its programs,
 * libraries and configuration (a merged /usr's links as links).
 */
static const char  *provend_sandbox_system[] = {
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"
};

/* The only devices a worker needs. */
static const char  *provend_sandbox_devices[] = {
    "null", "zero", "urandom"
};


/* Whether path is dir or below it. */
static int
provend_sandbox_under(const char *path, const char *dir)
{
    size_t  len = strlen(dir);

    return strncmp(path, dir, len) == 0
           && (path[len] == '/' || path[len] == '\0');
}


/* root ‖ path, made with its parents (0755: nobody walks down). */
static int
provend_sandbox_mkpath(const char *root, const char *path, char *out,
    size_t size)
{
    char  *p;

    if ((size_t) snprintf(out, size, "%s%s", root, path) >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (p = out + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        (void) mkdir(out, 0755);
        *p = '/';
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        return -1;
    }
    return 0;
}


/* Binds what from (a path, or an O_PATH fd: "/proc/self/fd/N") at to. */
static int
provend_sandbox_bind(const char *from, const char *to, int readonly)
{
    struct mount_attr  attr;

    if (mount(from, to, NULL, MS_BIND | MS_REC, NULL) != 0) {
        return -1;
    }
    if (!readonly) {
        return 0;
    }
    /* read-only all the way down: the mounts below it too */
    memset(&attr, 0, sizeof(attr));
    attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (mount_setattr(AT_FDCWD, to, AT_RECURSIVE, &attr, sizeof(attr)) == 0)
    {
        return 0;
    }
    if (errno != ENOSYS) {
        return -1;
    }
    /* a kernel before 5.12: the top mount at least */
    return mount(NULL, to, NULL,
                 MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                 NULL);
}


/* The directory open as fd, at the same path under root. */
static int
provend_sandbox_bind_fd(int fd, const char *root, const char *path,
    int readonly)
{
    char  to[4096], from[64];

    if (provend_sandbox_mkpath(root, path, to, sizeof(to)) != 0) {
        return -1;
    }
    snprintf(from, sizeof(from), "/proc/self/fd/%d", fd);
    return provend_sandbox_bind(from, to, readonly);
}


/* An empty tmpfs of its own at path under root. */
static int
provend_sandbox_scratch(const char *root, const char *path)
{
    char  to[4096];

    return provend_sandbox_mkpath(root, path, to, sizeof(to)) != 0
           || mount("tmpfs", to, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                    "size=1m,mode=1777") != 0 ? -1 : 0;
}


/* The host's system directories under root, read-only. */
static int
provend_sandbox_system_dirs(const char *root)
{
    char         to[4096], link[4096];
    size_t       i;
    ssize_t      n;
    struct stat  st;

    for (i = 0; i < sizeof(provend_sandbox_system) / sizeof(char *); i++) {
        if (lstat(provend_sandbox_system[i], &st) != 0) {
            continue;                   /* not on this system */
        }
        snprintf(to, sizeof(to), "%s%s", root, provend_sandbox_system[i]);
        if (S_ISLNK(st.st_mode)) {
            n = readlink(provend_sandbox_system[i], link, sizeof(link) - 1);
            if (n < 0) {
                return -1;
            }
            link[n] = '\0';
            if (symlink(link, to) != 0) {
                return -1;
            }
        } else if (S_ISDIR(st.st_mode)) {
            if (mkdir(to, 0755) != 0
                || provend_sandbox_bind(provend_sandbox_system[i], to, 1)
                   != 0)
            {
                return -1;
            }
        }
    }
    return 0;
}


/* /dev: a tmpfs with null, zero and urandom (the host's), and the links. */
static int
provend_sandbox_dev(const char *root)
{
    int     fd;
    char    dev[4096], node[4200], from[64];
    size_t  i;
    static const char  *links[][2] = {
        { "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" },
        { "stdout", "/proc/self/fd/1" }, { "stderr", "/proc/self/fd/2" }
    };

    snprintf(dev, sizeof(dev), "%s/dev", root);
    if (mkdir(dev, 0755) != 0
        || mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC,
                 "size=16k,mode=0755") != 0)
    {
        return -1;
    }
    for (i = 0; i < sizeof(provend_sandbox_devices) / sizeof(char *); i++) {
        snprintf(node, sizeof(node), "%s/%s", dev,
                 provend_sandbox_devices[i]);
        snprintf(from, sizeof(from), "/dev/%s", provend_sandbox_devices[i]);
        fd = open(node, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
        if (fd < 0) {
            return -1;
        }
        close(fd);
        if (mount(from, node, NULL, MS_BIND, NULL) != 0) {
            return -1;
        }
    }
    for (i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        snprintf(node, sizeof(node), "%s/%s", dev, links[i][0]);
        if (symlink(links[i][1], node) != 0) {
            return -1;
        }
    }
    return mount(NULL, dev, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID
                 | MS_NOEXEC, "size=16k,mode=0755");
}


/*
 * The directory a program not under the system directories runs from,
 * opened (its install's top: bin/.. of its real path), or -1 when the
 * system directories hold it.  name: as execvp takes it.
 */
static int
provend_sandbox_program_dir(const char *name, char *dir, size_t size)
{
    char         found[4096], real[4096], *path, *p, *slash;
    size_t       i;
    const char  *s;

    if (strchr(name, '/') != NULL) {
        snprintf(found, sizeof(found), "%s", name);
    } else {
        s = getenv("PATH");
        path = strdup(s != NULL ? s : "/usr/bin:/bin");
        found[0] = '\0';
        for (p = strtok(path, ":"); p != NULL; p = strtok(NULL, ":")) {
            snprintf(found, sizeof(found), "%s/%s", p, name);
            if (access(found, X_OK) == 0) {
                break;
            }
            found[0] = '\0';
        }
        free(path);
    }
    if (found[0] == '\0' || realpath(found, real) == NULL) {
        return -1;
    }
    for (i = 0; i < sizeof(provend_sandbox_system) / sizeof(char *); i++) {
        if (provend_sandbox_under(real, provend_sandbox_system[i])) {
            return -1;
        }
    }
    /* .../bin/node: its libraries are beside bin, under its parent */
    for (i = 0; i < 2 && (slash = strrchr(real, '/')) != NULL
                && slash != real; i++)
    {
        *slash = '\0';
    }
    snprintf(dir, size, "%s", real);
    return open(real, O_PATH | O_DIRECTORY | O_CLOEXEC);
}


/*
 * With --hide: the program's root is a minimal one, made on a tmpfs over
 * hide and entered with pivot_root: the system directories and
 * --keep-ro (the runtime) and the program's own install read-only, --keep
 * (its socket directory) at its place, a fresh /proc, /dev with null, zero
 * and urandom only, its own /tmp and /var/tmp.  Nothing else of the host
 * is there: no data directory (its own or another node's), no /run, no
 * /home.  Without --hide: only the namespaces' own /proc.  -1: must not
 * run.
 */
static int
provend_sandbox_mounts(const char *hide, const char *keep,
    const char *keep_ro, const char *program)
{
    int          kept, shown, own;
    char         path[4096], own_dir[4096];
    const char  *failed;

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

    if (keep != NULL && !provend_sandbox_under(keep, hide)) {
        fprintf(stderr, "provend sandbox: --keep must be inside --hide\n");
        return -1;
    }

    /* what is put back is opened before the tmpfs covers any of it */
    kept = keep != NULL ? open(keep, O_PATH | O_DIRECTORY | O_CLOEXEC) : -2;
    shown = keep_ro != NULL
            ? open(keep_ro, O_PATH | O_DIRECTORY | O_CLOEXEC) : -2;
    own = provend_sandbox_program_dir(program, own_dir, sizeof(own_dir));
    failed = NULL;

    if (kept == -1 || shown == -1) {
        failed = "cannot open the directories to keep";
    } else if (mount("tmpfs", hide, "tmpfs", MS_NOSUID | MS_NODEV,
                     "size=256k,mode=0755") != 0)
    {
        failed = "cannot hide the data directory";
    } else if (provend_sandbox_scratch(hide, "/tmp") != 0
               || provend_sandbox_scratch(hide, "/var/tmp") != 0)
    {
        /* first: what is kept may be below them (a checkout in /tmp) */
        failed = "cannot make /tmp";
    } else if (provend_sandbox_system_dirs(hide) != 0) {
        failed = "cannot show the system directories";
    } else if (own >= 0 && provend_sandbox_bind_fd(own, hide, own_dir, 1)
                           != 0)
    {
        failed = "cannot show the program's directory";
    } else if (shown >= 0 && provend_sandbox_bind_fd(shown, hide, keep_ro, 1)
                             != 0)
    {
        failed = "cannot show the runtime directory";
    } else if (kept >= 0 && provend_sandbox_bind_fd(kept, hide, keep, 0)
                            != 0)
    {
        failed = "cannot keep the socket directory";
    } else if (provend_sandbox_dev(hide) != 0) {
        failed = "cannot make /dev";
    } else if (provend_sandbox_mkpath(hide, "/proc", path, sizeof(path))
               != 0
               || mount("proc", path, "proc",
                        MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
    {
        failed = "cannot mount /proc";
    } else if (provend_sandbox_mkpath(hide, "/.old", path, sizeof(path))
               != 0
               || syscall(SYS_pivot_root, hide, path) != 0
               || chdir("/") != 0
               || umount2("/.old", MNT_DETACH) != 0
               || rmdir("/.old") != 0)
    {
        failed = "cannot enter the minimal root";
    } else if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID
                     | MS_NODEV, "size=256k,mode=0755") != 0)
    {
        failed = "cannot make the root read-only";
    }

    if (failed != NULL) {
        (void) provend_sandbox_refused(failed, errno);
    }
    if (kept >= 0) {
        close(kept);
    }
    if (shown >= 0) {
        close(shown);
    }
    if (own >= 0) {
        close(own);
    }
    return failed != NULL ? -1 : 0;
}


/*
 * Root without capabilities still owns most files outside: the program
 * runs as nobody instead.  The bounding set goes first (dropping from it
 * needs CAP_SETPCAP, which setuid takes away).
 */
static int
provend_sandbox_drop_caps(int switch_user, uid_t uid)
{
    int                               cap;
    struct __user_cap_header_struct   header;
    struct __user_cap_data_struct     data[2];

    for (cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno == EINVAL) {
            break;
        }
    }

    /*
     * The first the memory killer takes: an app filling memory dies, not
     * provend or nginx (the image's init restarts those, then gives up).
     */
    if (provend_sandbox_write("/proc/self/oom_score_adj", "1000") != 0
        && provend_sandbox_refused("oom_score_adj", errno) != 0)
    {
        return -1;
    }

    /*
     * An app's own uid: its processes and threads, all of them, bounded
     * (a fork bomb stays the app's); set before the uid is taken.
     */
    if (switch_user && uid != PROVEND_SANDBOX_UID) {
        struct rlimit  procs = { PROVEND_SANDBOX_NPROC, PROVEND_SANDBOX_NPROC };

        if (setrlimit(RLIMIT_NPROC, &procs) != 0
            && provend_sandbox_refused("RLIMIT_NPROC", errno) != 0)
        {
            return -1;
        }
    }

    if (switch_user
        && (setgroups(0, NULL) != 0
            || setresgid(uid, uid, uid) != 0
            || setresuid(uid, uid, uid) != 0)
        && provend_sandbox_refused("cannot become the app's user", errno)
           != 0)
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

/* The low 32 bits of a 64-bit argument. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PROVEND_ARG_LOW(n)  offsetof(struct seccomp_data, args[n])
#else
#define PROVEND_ARG_LOW(n)  (offsetof(struct seccomp_data, args[n]) + 4)
#endif

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

        /* ioctl(): no typing into a terminal (TIOCSTI) or console tricks
           (TIOCLINUX); the kernel reads the request as 32 bits */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, PROVEND_ARG_LOW(1)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCLINUX, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),

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
    uid_t          run_as;
    const char    *hide, *keep, *keep_ro;
    struct rlimit  none = { 0, 0 }, files;

    hide = NULL;
    keep = NULL;
    keep_ro = NULL;
    run_as = PROVEND_SANDBOX_UID;
    for (i = 0; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--hide") == 0) {
            hide = argv[i + 1];
        } else if (strcmp(argv[i], "--keep") == 0) {
            keep = argv[i + 1];
        } else if (strcmp(argv[i], "--keep-ro") == 0) {
            keep_ro = argv[i + 1];
        } else if (strcmp(argv[i], "--uid") == 0) {
            run_as = (uid_t) strtoul(argv[i + 1], NULL, 10);
            if (run_as == 0) {
                fprintf(stderr, "provend sandbox: --uid must not be 0\n");
                return 127;
            }
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

    /* no controlling terminal: nothing to type into, no signals from it
       (a session leader already, spawned detached, is left as it is) */
    (void) setsid();

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
        if (provend_sandbox_mounts(hide, keep, keep_ro, argv[0]) != 0) {
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

    if (provend_sandbox_drop_caps(as_root && hide != NULL, run_as) != 0
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
