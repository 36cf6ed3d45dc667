/*
 * The enclave's PID 1.  It makes the file system usable (proc, sys, dev,
 * run, tmp; the initramfs entered through a bind mount so that pivot_root
 * works for app sandboxes), loads the kernel modules the image lists, adds
 * the hardware RNG's bytes to the pool, brings up loopback (and, under
 * qemu, the virtual NIC), tells the Nitro launcher the enclave is up, then
 * runs the services of /etc/proven/services in order and keeps them up.
 *
 *   /etc/proven/services, one service a line, in dependency order:
 *     NAME once|always READY|- PROGRAM ARGS...
 *   once: must exit 0 before the next starts (set-up steps);
 *   always: restarted when it exits, after a backoff (0.1 s doubling to
 *   5 s, reset after 30 s up); READY: a path that exists once the service
 *   serves (its socket), waited for before the next starts.
 *
 * A service that cannot be kept up (6 starts in 60 s, or a set-up step or
 * a READY that fails) powers the enclave off: half a node must not serve.
 * SIGTERM, SIGINT (Ctrl-Alt-Del) or "shutdown" on the control socket
 * (/run/proven/init.sock) or on the control device the kernel command line
 * names (proven.control=/dev/ttyS1, the host's line under qemu) stops the
 * services in reverse order, each given 10 s after SIGTERM, and powers off.
 * init reaps every orphan.  It never exits: PID 1's exit is a panic.
 */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <linux/random.h>
#include <linux/vm_sockets.h>


#define INIT_SERVICES       "/etc/proven/services"
#define INIT_MODULES        "/etc/proven/modules"
#define INIT_CONTROL        "/run/proven/init.sock"
#define INIT_MAX_SERVICES   16
#define INIT_MAX_ARGS       64
#define INIT_LINE_MAX       4096

#define INIT_BACKOFF_MIN_MS   100
#define INIT_BACKOFF_MAX_MS   5000
#define INIT_STABLE_MS        30000     /* up so long: backoff starts over */
#define INIT_STARTS_MAX       6         /* starts in INIT_STARTS_WINDOW */
#define INIT_STARTS_WINDOW_MS 60000
#define INIT_READY_MS         60000     /* a READY path must appear by then */
#define INIT_STOP_MS          10000     /* SIGTERM to SIGKILL, unless
                                           "shutdown GRACE" says */
#define INIT_STOP_MAX_S       300
#define INIT_LOG_SOCKET       "/run/proven/log.sock"  /* proven-agent's */
#define INIT_LOG_LINE         1024      /* longer lines are cut */

/* Nitro: one byte to the parent (CID 3) on port 9000, echoed back. */
#define INIT_NITRO_CID        3
#define INIT_NITRO_PORT       9000
#define INIT_NITRO_HEARTBEAT  0xB7


typedef struct {
    char     line[INIT_LINE_MAX];       /* argv points into it */
    char    *name;
    int      once;
    char    *ready;                     /* NULL: none */
    char    *argv[INIT_MAX_ARGS + 1];
    pid_t    pid;
    int64_t  started_ms;
    int64_t  restart_at_ms;             /* 0: not waiting to restart */
    int      backoff_ms;
    int64_t  starts[INIT_STARTS_MAX];   /* ring of start times */
    int      start_count;
    int      out[2];                    /* its stdout and stderr: a pipe */
    char     out_buf[INIT_LOG_LINE];
    size_t   out_len;
} init_service_t;


static init_service_t  services[INIT_MAX_SERVICES];
static int             service_count;
static int             stopping;
static int             stop_ms = INIT_STOP_MS;

/* the log stream to proven-agent: one record a line, never waited for */
static int             log_fd = -1;
static unsigned long   log_dropped;
/* the console for services' lines, never waited for either: a console the
 * host drains slowly must not stall PID 1 (it did not stall init when the
 * services wrote to it themselves, it stalled them) */
static int             console_fd = -1;
static unsigned long   console_dropped;

static void log_ship(const char *line, size_t len);


static void
say(const char *fmt, ...)
{
    va_list  ap;
    char     buf[512];

    int      n;

    memcpy(buf, "init: ", 6);
    va_start(ap, fmt);
    n = vsnprintf(buf + 6, sizeof(buf) - 7, fmt, ap);
    va_end(ap);
    n = n < 0 ? 0 : n > (int) sizeof(buf) - 8 ? (int) sizeof(buf) - 8 : n;
    buf[6 + n] = '\n';
    if (console_fd < 0 || write(console_fd, buf, (size_t) n + 7) < 0) {
        (void) write(STDERR_FILENO, buf, (size_t) n + 7);
    }
    log_ship(buf, (size_t) n + 6);
}


/* ---- log lines ---------------------------------------------------------
 *
 * Every service's output comes to init through a pipe: each line goes to
 * the console as "NAME: line" and, as a record of its own, to proven-agent
 * (INIT_LOG_SOCKET), which ships it to the host.  init never waits for
 * the agent: a record it cannot take now is dropped and counted, and the
 * count goes out ahead of the next line that can.
 */

static void
log_ship(const char *line, size_t len)
{
    int                 fd;
    char                note[64];
    struct sockaddr_un  addr;

    if (log_fd < 0) {
        /* no agent yet, or a new one: a failed connect costs little */
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    0);
        memset(&addr, 0, sizeof(addr));
        addr.sun_family = AF_UNIX;
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", INIT_LOG_SOCKET);
        if (fd < 0 || connect(fd, (struct sockaddr *) &addr, sizeof(addr))
                      != 0)
        {
            if (fd >= 0) {
                close(fd);
            }
            log_dropped++;
            return;
        }
        log_fd = fd;
    }
    if (log_dropped > 0) {
        snprintf(note, sizeof(note), "init: %lu lines not shipped",
                 log_dropped);
        if (send(log_fd, note, strlen(note), MSG_DONTWAIT | MSG_NOSIGNAL)
            < 0)
        {
            goto failed;
        }
        log_dropped = 0;
    }
    if (send(log_fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
        return;
    }

failed:

    if (errno != EAGAIN) {
        close(log_fd);                  /* the agent went: connect again */
        log_fd = -1;
    }
    log_dropped++;
}


static void
log_line(const init_service_t *s, const char *text, size_t len)
{
    char    line[INIT_LOG_LINE + 64];
    size_t  n;

    size_t  i;

    n = (size_t) snprintf(line, sizeof(line) - 1, "%s: ", s->name);
    if (len > sizeof(line) - 2 - n) {
        len = sizeof(line) - 2 - n;
    }
    /* one line of text: no control byte of the service's (a CR, an
     * escape sequence) makes what looks like another's line */
    for (i = 0; i < len; i++) {
        line[n + i] = (unsigned char) text[i] < 0x20 && text[i] != '\t'
                      ? '?' : text[i] == 0x7f ? '?' : text[i];
    }
    n += len;
    line[n] = '\n';
    if (console_fd >= 0 && write(console_fd, line, n + 1) < 0) {
        console_dropped++;              /* the console is full: not waited */
    }
    log_ship(line, n);
}


/* What a service wrote: whole lines out, a line too long cut in pieces. */
static void
log_read(init_service_t *s)
{
    ssize_t  n;
    char    *p, *nl;

    int      reads;

    if (s->out[0] < 0) {
        return;
    }
    /* a few reads a turn: a service that writes without end must not keep
     * init from its other work (the pipe then holds it back) */
    for (reads = 0; reads < 4; reads++) {
        n = read(s->out[0], s->out_buf + s->out_len,
                 sizeof(s->out_buf) - s->out_len);
        if (n <= 0) {
            return;
        }
        s->out_len += (size_t) n;
        p = s->out_buf;
        while ((nl = memchr(p, '\n', s->out_len - (size_t) (p - s->out_buf)))
               != NULL)
        {
            log_line(s, p, (size_t) (nl - p));
            p = nl + 1;
        }
        s->out_len -= (size_t) (p - s->out_buf);
        memmove(s->out_buf, p, s->out_len);
        if (s->out_len == sizeof(s->out_buf)) {
            log_line(s, s->out_buf, s->out_len);
            s->out_len = 0;
        }
    }
}


static void
log_read_all(void)
{
    int  i;

    for (i = 0; i < service_count; i++) {
        log_read(&services[i]);
    }
}


static int64_t
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static void
power_off(void)
{
    sync();
    say("powering off");
    reboot(RB_POWER_OFF);
    /* a kernel that cannot power off: stay, and serve nothing */
    for (;;) {
        pause();
    }
}


/* ---- the file system --------------------------------------------------- */

static void
mount_one(const char *source, const char *target, const char *type,
    unsigned long flags, const char *data)
{
    mkdir(target, 0755);
    if (mount(source, target, type, flags, data) != 0 && errno != EBUSY) {
        say("cannot mount %s on %s: %s", type, target, strerror(errno));
    }
}


/*
 * The initramfs (rootfs) cannot be pivot_root'ed away from, and app
 * sandboxes pivot_root into their minimal roots.  A bind mount of it over
 * itself, entered with chroot, is a root that has a parent: the same files,
 * nothing copied.
 */
static void
enter_bound_root(void)
{
    mkdir("/sysroot", 0755);
    if (mount("/", "/sysroot", NULL, MS_BIND, NULL) != 0
        || chdir("/sysroot") != 0
        || mount(".", "/", NULL, MS_MOVE, NULL) != 0
        || chroot(".") != 0 || chdir("/") != 0)
    {
        say("cannot enter the root through a bind mount: %s "
            "(app sandboxes will not start)", strerror(errno));
        return;
    }
    rmdir("/sysroot");
}


/* Standard input, output and error open, whatever the kernel gave. */
static void
standard_fds(void)
{
    int  fd;

    for (fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0
            && open(fd == 0 ? "/dev/null" : "/dev/console", fd == 0
                    ? O_RDONLY : O_WRONLY) != fd)
        {
            /* no console: output goes nowhere rather than into a file */
            (void) open("/dev/null", O_RDWR);
        }
    }
}


static void
mount_all(void)
{
    mount_one("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              NULL);
    mount_one("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              NULL);
    mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_one("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
              "mode=1777");
    mount_one("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "mode=0620,ptmxmode=0666");
    mount_one("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    mount_one("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mkdir("/run/proven", 0700);
    standard_fds();
    console_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_NONBLOCK
                                      | O_CLOEXEC);
}


/* ---- kernel modules ---------------------------------------------------- */

/*
 * Loads every module /etc/proven/modules names (paths under
 * /lib/modules/RELEASE/, or absolute), in rounds: one that needs another not loaded yet
 * fails and is tried again after the others.  No depmod, no modprobe.
 */
static void
load_modules(void)
{
    FILE     *f;
    char      line[512], release[128], path[768];
    char     *names[64];
    int       count, loaded, round, i, fd;
    FILE     *r;

    f = fopen(INIT_MODULES, "r");
    if (f == NULL) {
        return;
    }

    r = fopen("/proc/sys/kernel/osrelease", "r");
    if (r == NULL || fgets(release, sizeof(release), r) == NULL) {
        say("no kernel release: modules not loaded");
        if (r) {
            fclose(r);
        }
        fclose(f);
        return;
    }
    fclose(r);
    release[strcspn(release, "\n")] = '\0';

    count = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n#")] = '\0';
        if (line[0] == '\0') {
            continue;
        }
        if (count == 64) {
            say("%s: more than 64 modules: the rest not loaded",
                INIT_MODULES);
            break;
        }
        if ((names[count] = strdup(line)) != NULL) {
            count++;
        }
    }
    fclose(f);

    for (round = 0, loaded = 1; loaded > 0 && round < 16; round++) {
        loaded = 0;
        for (i = 0; i < count; i++) {
            if (names[i] == NULL) {
                continue;
            }
            if (names[i][0] == '/') {
                snprintf(path, sizeof(path), "%s", names[i]);
            } else {
                snprintf(path, sizeof(path), "/lib/modules/%s/%s", release,
                         names[i]);
            }
            fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                say("module %s: %s", names[i], strerror(errno));
                free(names[i]);
                names[i] = NULL;
                continue;
            }
            if (syscall(SYS_finit_module, fd, "", 0) == 0
                || errno == EEXIST)
            {
                free(names[i]);
                names[i] = NULL;
                loaded++;
            }
            close(fd);
        }
    }

    for (i = 0; i < count; i++) {
        if (names[i] != NULL) {
            say("module %s not loaded", names[i]);
            free(names[i]);
        }
    }
}


/* The hardware RNG (Nitro's NSM registers one) stirred into the pool. */
static void
add_entropy(void)
{
    int      in, out;
    ssize_t  n;
    uint8_t  buf[64];

    in = open("/dev/hwrng", O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (in < 0) {
        return;
    }
    n = read(in, buf, sizeof(buf));
    close(in);
    out = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (n > 0 && out >= 0 && write(out, buf, (size_t) n) == n) {
        say("%zd bytes of the hardware RNG added to the pool", n);
    }
    if (out >= 0) {
        close(out);
    }
}


/* ---- network ----------------------------------------------------------- */

static int
interface_up(int sock, const char *name)
{
    struct ifreq  ifr;

    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) != 0) {
        return -1;
    }
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(sock, SIOCSIFFLAGS, &ifr);
}


static int
interface_address(int sock, const char *name, const char *cidr)
{
    char                 addr[32], *slash;
    long                 prefix;
    struct ifreq         ifr;
    struct sockaddr_in  *sin;

    snprintf(addr, sizeof(addr), "%s", cidr);
    slash = strchr(addr, '/');
    prefix = slash ? strtol(slash + 1, NULL, 10) : 24;
    if (slash) {
        *slash = '\0';
    }
    if (prefix < 1 || prefix > 32) {
        return -1;
    }

    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    sin = (struct sockaddr_in *) &ifr.ifr_addr;
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1
        || ioctl(sock, SIOCSIFADDR, &ifr) != 0)
    {
        return -1;
    }
    sin->sin_addr.s_addr = htonl(~((1u << (32 - prefix)) - 1));
    if (prefix == 32) {
        sin->sin_addr.s_addr = 0xffffffff;
    }
    if (ioctl(sock, SIOCSIFNETMASK, &ifr) != 0) {
        return -1;
    }
    return interface_up(sock, name);
}


/* The value of NAME=VALUE on the kernel command line, or NULL. */
static char *
cmdline_value(const char *name, char *buf, size_t size)
{
    FILE    *f;
    char     line[4096], *word, *save;
    size_t   len;

    f = fopen("/proc/cmdline", "r");
    if (f == NULL || fgets(line, sizeof(line), f) == NULL) {
        if (f) {
            fclose(f);
        }
        return NULL;
    }
    fclose(f);

    len = strlen(name);
    for (word = strtok_r(line, " \n", &save); word != NULL;
         word = strtok_r(NULL, " \n", &save))
    {
        if (strncmp(word, name, len) == 0 && word[len] == '=') {
            snprintf(buf, size, "%s", word + len + 1);
            return buf;
        }
    }
    return NULL;
}


static void
network_up(void)
{
    int   sock;
    char  cidr[32], device[IFNAMSIZ];

    sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        say("no sockets: %s", strerror(errno));
        return;
    }
    if (interface_up(sock, "lo") != 0) {
        say("loopback: %s", strerror(errno));
    }
    /* under qemu the host's user network: proven.ip=10.0.2.15/24 */
    if (cmdline_value("proven.ip", cidr, sizeof(cidr)) != NULL) {
        if (cmdline_value("proven.ifname", device, sizeof(device)) == NULL)
        {
            snprintf(device, sizeof(device), "eth0");
        }
        if (interface_address(sock, device, cidr) != 0) {
            say("%s %s: %s", device, cidr, strerror(errno));
        } else {
            say("%s is %s", device, cidr);
        }
    }
    close(sock);
}


/* Nitro's launcher waits for this byte; without vsock there is none. */
static void
nitro_heartbeat(void)
{
    int                  sock;
    uint8_t              byte;
    struct sockaddr_vm   addr;
    struct timeval       tv = { 5, 0 };

    sock = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        say("no vsock: no Nitro heartbeat");
        return;
    }
    memset(&addr, 0, sizeof(addr));
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = INIT_NITRO_CID;
    addr.svm_port = INIT_NITRO_PORT;
    byte = INIT_NITRO_HEARTBEAT;
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(sock, (struct sockaddr *) &addr, sizeof(addr)) != 0
        || write(sock, &byte, 1) != 1)
    {
        say("no Nitro parent on vsock %d:%d: %s", INIT_NITRO_CID,
            INIT_NITRO_PORT, strerror(errno));
    } else if (read(sock, &byte, 1) != 1 || byte != INIT_NITRO_HEARTBEAT) {
        say("the Nitro parent did not echo the heartbeat");
    } else {
        say("heartbeat sent to the Nitro parent");
    }
    close(sock);
}


/* ---- services ---------------------------------------------------------- */

static int
read_services(void)
{
    FILE            *f;
    char            *p, *word, *save, line[INIT_LINE_MAX];
    int              argc, lineno;
    init_service_t  *s;

    f = fopen(INIT_SERVICES, "r");
    if (f == NULL) {
        say("%s: %s", INIT_SERVICES, strerror(errno));
        return -1;
    }

    for (lineno = 1; ; lineno++) {
        if (service_count == INIT_MAX_SERVICES) {
            if (fgets(line, sizeof(line), f) != NULL) {
                say("%s: more than %d services", INIT_SERVICES,
                    INIT_MAX_SERVICES);
                fclose(f);
                return -1;
            }
            break;
        }
        s = &services[service_count];
        if (fgets(s->line, sizeof(s->line), f) == NULL) {
            break;
        }
        if (strchr(s->line, '\n') == NULL && !feof(f)) {
            say("%s:%d: a line over %d bytes", INIT_SERVICES, lineno,
                INIT_LINE_MAX - 1);
            fclose(f);
            return -1;
        }
        p = s->line + strcspn(s->line, "#\n");
        *p = '\0';

        argc = -3;
        for (word = strtok_r(s->line, " \t", &save); word != NULL;
             word = strtok_r(NULL, " \t", &save))
        {
            if (argc == -3) {
                if (strlen(word) > 32) {
                    say("%s:%d: a name over 32 bytes", INIT_SERVICES, lineno);
                    fclose(f);
                    return -1;
                }
                s->name = word;
            } else if (argc == -2) {
                if (strcmp(word, "once") != 0 && strcmp(word, "always") != 0)
                {
                    say("%s:%d: once or always, not %s", INIT_SERVICES,
                        lineno, word);
                    fclose(f);
                    return -1;
                }
                s->once = word[0] == 'o';
            } else if (argc == -1) {
                s->ready = strcmp(word, "-") == 0 ? NULL : word;
            } else if (argc < INIT_MAX_ARGS) {
                s->argv[argc] = word;
            } else {
                say("%s:%d: too many arguments", INIT_SERVICES, lineno);
                fclose(f);
                return -1;
            }
            argc++;
        }
        if (argc == -3) {
            continue;                           /* empty or a comment */
        }
        if (argc < 1) {
            say("%s:%d: NAME once|always READY|- PROGRAM ARGS...",
                INIT_SERVICES, lineno);
            fclose(f);
            return -1;
        }
        s->argv[argc] = NULL;
        s->out[0] = s->out[1] = -1;
        service_count++;
    }

    fclose(f);
    return 0;
}


static pid_t
spawn(init_service_t *s)
{
    int       fd;
    pid_t     pid;
    sigset_t  none;

    /* one pipe for the service's life, across its restarts */
    if (s->out[0] < 0 && pipe2(s->out, O_CLOEXEC) == 0) {
        (void) fcntl(s->out[0], F_SETFL, O_NONBLOCK);
    }
    pid = fork();
    if (pid == 0) {
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setsid();
        if (s->out[1] >= 0) {
            (void) dup2(s->out[1], STDOUT_FILENO);
            (void) dup2(s->out[1], STDERR_FILENO);
        }
        /* the memory killer takes app workers (provend's sandbox sets
         * theirs to 1000) before a service: a worker filling memory must
         * not make init power the node off */
        fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            (void) write(fd, "-900", 4);
            close(fd);
        }
        execve(s->argv[0], s->argv, (char *[]) {
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root", "LANG=C.UTF-8", NULL });
        say("%s: cannot run %s: %s", s->name, s->argv[0], strerror(errno));
        _exit(127);
    }
    if (pid < 0) {
        say("%s: cannot fork: %s", s->name, strerror(errno));
        return -1;
    }

    s->pid = pid;
    s->started_ms = now_ms();
    s->starts[s->start_count++ % INIT_STARTS_MAX] = s->started_ms;
    say("%s started (%d)", s->name, (int) pid);
    return pid;
}


static void reap(void);


/* Waits for a set-up step's exit or an always-service's READY path. */
static int
wait_ready(init_service_t *s)
{
    int64_t  deadline;

    deadline = now_ms() + INIT_READY_MS;
    while (now_ms() < deadline) {
        if (s->once ? s->pid == 0 : access(s->ready, F_OK) == 0) {
            return 0;
        }
        if (!s->once && s->pid == 0) {
            return -1;                          /* died before ready */
        }
        usleep(20000);
        reap();
        log_read_all();
    }
    return -1;
}


static void
service_exited(pid_t pid, int status)
{
    int              i;
    int64_t          now, up;
    init_service_t  *s;

    for (i = 0; i < service_count; i++) {
        s = &services[i];
        if (s->pid != pid) {
            continue;
        }
        s->pid = 0;
        if (WIFEXITED(status)) {
            say("%s exited (%d)", s->name, WEXITSTATUS(status));
        } else {
            say("%s killed by signal %d", s->name, WTERMSIG(status));
        }
        if (s->once) {
            if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
                s->once = -1;                   /* failed */
            }
            return;
        }
        if (stopping) {
            return;
        }

        now = now_ms();
        up = now - s->started_ms;
        if (s->start_count >= INIT_STARTS_MAX
            && now - s->starts[s->start_count % INIT_STARTS_MAX]
               < INIT_STARTS_WINDOW_MS)
        {
            say("%s cannot be kept up (%d starts in %d s)", s->name,
                INIT_STARTS_MAX, INIT_STARTS_WINDOW_MS / 1000);
            stopping = 2;
            return;
        }
        s->backoff_ms = up >= INIT_STABLE_MS || s->backoff_ms == 0
                        ? INIT_BACKOFF_MIN_MS
                        : s->backoff_ms * 2 > INIT_BACKOFF_MAX_MS
                          ? INIT_BACKOFF_MAX_MS : s->backoff_ms * 2;
        s->restart_at_ms = now + s->backoff_ms;
        say("%s restarts in %d ms", s->name, s->backoff_ms);
        return;
    }
}


/* Every child that exited, services and orphans alike. */
static void
reap(void)
{
    int    status;
    pid_t  pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        service_exited(pid, status);
    }
}


static void
stop_services(void)
{
    int              i;
    int64_t          deadline;
    init_service_t  *s;

    stopping = stopping ? stopping : 1;
    for (i = service_count - 1; i >= 0; i--) {
        s = &services[i];
        s->restart_at_ms = 0;
        if (s->pid <= 0) {
            continue;
        }
        say("stopping %s", s->name);
        kill(s->pid, SIGTERM);
        deadline = now_ms() + stop_ms;
        while (s->pid > 0 && now_ms() < deadline) {
            usleep(20000);
            reap();
            log_read_all();
        }
        if (s->pid > 0) {
            say("%s did not stop: killed", s->name);
            kill(-s->pid, SIGKILL);
            kill(s->pid, SIGKILL);
            while (s->pid > 0 && waitpid(s->pid, NULL, 0) < 0
                   && errno == EINTR)
            {
                /* again */
            }
            s->pid = 0;
        }
    }

    /* orphans */
    kill(-1, SIGTERM);
    usleep(200000);
    kill(-1, SIGKILL);
    reap();
}


/* ---- control ----------------------------------------------------------- */

static int
control_listen(void)
{
    int                 fd;
    struct sockaddr_un  addr;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -1;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", INIT_CONTROL);
    unlink(INIT_CONTROL);
    if (bind(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0
        || chmod(INIT_CONTROL, 0600) != 0 || listen(fd, 4) != 0)
    {
        say("%s: %s", INIT_CONTROL, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}


static int
control_device(void)
{
    int             fd;
    char            path[128];
    struct termios  tio;

    if (cmdline_value("proven.control", path, sizeof(path)) == NULL) {
        return -1;
    }
    fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        say("control %s: %s", path, strerror(errno));
        return -1;
    }
    if (tcgetattr(fd, &tio) == 0) {
        cfmakeraw(&tio);
        tcsetattr(fd, TCSANOW, &tio);
    }
    say("control on %s", path);
    return fd;
}


/* "status": a line a service, then "end". */
static void
control_status(int fd)
{
    int              i;
    char             line[256];
    int64_t          now;
    init_service_t  *s;

    now = now_ms();
    for (i = 0; i < service_count; i++) {
        s = &services[i];
        if (s->pid > 0) {
            snprintf(line, sizeof(line), "%s running pid %d starts %d up %ld s\n",
                     s->name, (int) s->pid, s->start_count,
                     (long) ((now - s->started_ms) / 1000));
        } else if (s->restart_at_ms) {
            snprintf(line, sizeof(line), "%s restarting in %ld ms starts %d\n",
                     s->name, (long) (s->restart_at_ms - now), s->start_count);
        } else {
            snprintf(line, sizeof(line), "%s %s\n", s->name,
                     s->once > 0 ? "done" : s->once < 0 ? "failed"
                     : s->start_count ? "stopped" : "not started");
        }
        (void) write(fd, line, strlen(line));
    }
    (void) write(fd, "end\n", 4);
}


/* "shutdown" or "shutdown GRACE" (seconds before SIGKILL, 1 to 300). */
static int
control_shutdown(const char *arg)
{
    char  *end;
    long   grace;

    if (*arg == '\0') {
        return 0;
    }
    grace = strtol(arg, &end, 10);
    if (*end != '\0' || grace < 1 || grace > INIT_STOP_MAX_S) {
        return -1;
    }
    stop_ms = (int) grace * 1000;
    return 0;
}


/* A command from the control socket or device: 1 for shutdown. */
static int
control_command(int fd, char *pending, size_t *len, size_t size)
{
    ssize_t  n;
    char    *nl;

    n = read(fd, pending + *len, size - *len - 1);
    if (n <= 0) {
        return n == 0 ? -1 : 0;
    }
    *len += (size_t) n;
    pending[*len] = '\0';
    while ((nl = strchr(pending, '\n')) != NULL) {
        *nl = '\0';
        if (nl > pending && nl[-1] == '\r') {
            nl[-1] = '\0';
        }
        if ((strcmp(pending, "shutdown") == 0
             || strncmp(pending, "shutdown ", 9) == 0)
            && control_shutdown(pending + 8 + (pending[8] == ' ')) == 0)
        {
            (void) write(fd, "ok\n", 3);
            return 1;
        }
        if (strcmp(pending, "status") == 0) {
            control_status(fd);
        } else if (pending[0] != '\0') {
            (void) write(fd, "unknown command\n", 16);
        }
        *len -= (size_t) (nl + 1 - pending);
        memmove(pending, nl + 1, *len + 1);
    }
    if (*len >= size - 1) {
        *len = 0;                               /* a line too long: dropped */
    }
    return 0;
}


/* ---- main -------------------------------------------------------------- */

static void
start_all(void)
{
    int              i;
    init_service_t  *s;

    for (i = 0; i < service_count && !stopping; i++) {
        s = &services[i];
        if (spawn(s) < 0) {
            stopping = 2;
            break;
        }
        if (s->once || s->ready) {
            if (wait_ready(s) != 0 || s->once < 0) {
                say("%s %s", s->name, s->once ? "failed"
                    : "did not become ready");
                stopping = 2;
                break;
            }
        }
    }
    if (!stopping) {
        say("up: %d services", service_count);
    }
}


int
main(void)
{
    int               i, sfd, lfd, dfd, cfd, timeout;
    char              dev_buf[256], sock_buf[256];
    size_t            dev_len, sock_len;
    int64_t           now, next;
    sigset_t          mask;
    struct pollfd     fds[4 + INIT_MAX_SERVICES];
    init_service_t   *s;
    struct signalfd_siginfo  si;

    if (getpid() != 1) {
        say("not PID 1: this is the enclave's init");
        return 2;
    }

    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGPIPE);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    /* Ctrl-Alt-Del: SIGINT to init, not an abrupt reboot */
    reboot(RB_DISABLE_CAD);

    enter_bound_root();
    mount_all();
    load_modules();
    add_entropy();
    network_up();
    nitro_heartbeat();

    lfd = control_listen();
    dfd = control_device();
    dev_len = 0;
    sock_len = 0;
    cfd = -1;

    if (sfd < 0 || read_services() != 0) {
        power_off();
    }
    start_all();

    while (!stopping) {
        now = now_ms();
        next = now + 1000;
        for (i = 0; i < service_count; i++) {
            s = &services[i];
            if (s->restart_at_ms && s->restart_at_ms <= now) {
                s->restart_at_ms = 0;
                if (spawn(s) < 0) {
                    stopping = 2;
                }
            } else if (s->restart_at_ms && s->restart_at_ms < next) {
                next = s->restart_at_ms;
            }
        }
        timeout = (int) (next - now);

        fds[0] = (struct pollfd) { .fd = sfd, .events = POLLIN };
        fds[1] = (struct pollfd) { .fd = lfd, .events = POLLIN };
        fds[2] = (struct pollfd) { .fd = dfd, .events = POLLIN };
        fds[3] = (struct pollfd) { .fd = cfd, .events = POLLIN };
        for (i = 0; i < service_count; i++) {
            fds[4 + i] = (struct pollfd) { .fd = services[i].out[0],
                                           .events = POLLIN };
        }
        if (poll(fds, (nfds_t) (4 + service_count), timeout < 0 ? 0 : timeout)
            < 0 && errno != EINTR)
        {
            break;
        }
        log_read_all();

        if (fds[0].revents & POLLIN) {
            while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
                    say("signal %d: shutting down", (int) si.ssi_signo);
                    stopping = 1;
                }
            }
            reap();
        }
        if (fds[1].revents & POLLIN) {
            if (cfd >= 0) {
                close(cfd);
            }
            cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            sock_len = 0;
        }
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            i = control_command(dfd, dev_buf, &dev_len, sizeof(dev_buf));
            if (i > 0) {
                say("shutdown asked on the control device");
                stopping = 1;
            } else if (i < 0 || fds[2].revents & POLLERR) {
                /* hung up: polled no more (it would spin) */
                say("the control device is gone");
                close(dfd);
                dfd = -1;
            }
        }
        if (cfd >= 0 && fds[3].revents & (POLLIN | POLLHUP)) {
            i = control_command(cfd, sock_buf, &sock_len, sizeof(sock_buf));
            if (i > 0) {
                say("shutdown asked on %s", INIT_CONTROL);
                stopping = 1;
            } else if (i < 0) {
                close(cfd);
                cfd = -1;
            }
        }
    }

    stop_services();
    power_off();
    return 0;
}
