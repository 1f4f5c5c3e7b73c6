/*
 * helper.c — runs a filter program (xdelta3) without temporary files and
 * without deadlocks.
 *
 * How it works: the read-only input (the base) is copied into a memfd that
 * the child receives as fd 3, so it can open /dev/fd/3 and seek in it. Three
 * pipes carry stdin, stdout and stderr. The child is started with
 * posix_spawn[p]: file actions dup the pipe ends and the memfd to 0..3 and
 * close everything from 4 up (no descriptor of the proxy leaks into it); its
 * signal mask and the dispositions of the common signals are reset; the
 * XDELTA environment variable (extra xdelta3 options) is removed. The parent
 * then runs one poll() loop that writes stdin while it reads stdout and
 * stderr, so neither side can block the other whatever the pipe buffer
 * sizes. stdin is closed when the input is exhausted (or the child stops
 * reading it: EPIPE, with SIGPIPE blocked in this thread for the duration
 * and any resulting pending SIGPIPE consumed). The loop ends at EOF on both
 * output pipes; the child is then reaped and must have exited 0. On any error
 * the child is killed with SIGKILL and reaped before returning.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"

extern char **environ;

#define IO_CHUNK (64 * 1024)

/* Moves fd to a number >= 10 (never one of 0..3 that the child's file
 * actions target), close-on-exec. */
static int fd_high(int fd)
{
    if (fd < 0)
        return -1;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return h;
}

static int make_pipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    p[0] = fd_high(p[0]);
    p[1] = fd_high(p[1]);
    return (p[0] < 0 || p[1] < 0) ? -1 : 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* A memfd holding file[0..len), or -1. */
static int make_memfd(const uint8_t *file, size_t len)
{
    int fd = fd_high(memfd_create("sluice-delta-base", MFD_CLOEXEC));
    if (fd < 0)
        return -1;
    if (write_all(fd, file, len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* environ without XDELTA=..., which would add options to xdelta3. */
static char **child_env(void)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = calloc(n + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "XDELTA=", 7) != 0)
            env[k++] = environ[i];
    return env;
}

typedef struct {
    int in_w, out_r, err_r; /* parent ends */
    int child_fds[4];       /* child ends: stdin, stdout, stderr, file */
    pid_t pid;
} proc;

static int setup_actions(posix_spawn_file_actions_t *fa, const proc *p)
{
    if (posix_spawn_file_actions_init(fa) != 0)
        return -1;
    for (int i = 0; i < 4; i++) {
        if (p->child_fds[i] >= 0 && posix_spawn_file_actions_adddup2(fa, p->child_fds[i], i) != 0)
            return -1;
    }
    return posix_spawn_file_actions_addclosefrom_np(fa, 4) == 0 ? 0 : -1;
}

static int setup_attr(posix_spawnattr_t *attr)
{
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    static const int sigs[] = {SIGPIPE, SIGINT,  SIGTERM, SIGHUP,
                               SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&defaults, sigs[i]);
    if (posix_spawnattr_init(attr) != 0)
        return -1;
    if (posix_spawnattr_setsigmask(attr, &none) != 0 ||
        posix_spawnattr_setsigdefault(attr, &defaults) != 0 ||
        posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) != 0)
        return -1;
    return 0;
}

static int spawn_child(proc *p, const char *const *argv)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    char **env = child_env();
    int rc = ENOMEM;
    if (env && setup_actions(&fa, p) == 0) {
        if (setup_attr(&attr) == 0) {
            char *const *av = (char *const *)argv;
            if (strchr(argv[0], '/'))
                rc = posix_spawn(&p->pid, argv[0], &fa, &attr, av, env);
            else
                rc = posix_spawnp(&p->pid, argv[0], &fa, &attr, av, env);
            posix_spawnattr_destroy(&attr);
        }
        posix_spawn_file_actions_destroy(&fa);
    }
    free(env);
    if (rc != 0)
        p->pid = -1;
    return rc;
}

static void close_child_ends(proc *p)
{
    for (int i = 0; i < 4; i++)
        close_fd(&p->child_fds[i]);
}

static int open_pipes(proc *p, const helper_job *job)
{
    int in[2], out[2], err[2];
    if (make_pipe(in) != 0 || make_pipe(out) != 0 || make_pipe(err) != 0)
        return -1;
    p->child_fds[0] = in[0];
    p->in_w = in[1];
    p->out_r = out[0];
    p->child_fds[1] = out[1];
    p->err_r = err[0];
    p->child_fds[2] = err[1];
    p->child_fds[3] = job->file ? make_memfd(job->file, job->file_len) : -1;
    if (job->file && p->child_fds[3] < 0)
        return -1;
    int fl = O_NONBLOCK;
    if (fcntl(p->in_w, F_SETFL, fl) != 0 || fcntl(p->out_r, F_SETFL, fl) != 0 ||
        fcntl(p->err_r, F_SETFL, fl) != 0)
        return -1;
    return 0;
}

/* ---- the I/O loop ---- */

typedef struct {
    helper_job *job;
    proc *p;
    uint8_t *inbuf; /* pending stdin bytes when reading from a delta_src */
    const uint8_t *pend;
    size_t pend_len;
    size_t mem_pos;
    int in_done;
    size_t err_len;
    uint8_t *obuf;
} loop_state;

/* Makes the next stdin bytes available in pend; sets in_done at the end. */
static delta_status refill(loop_state *s)
{
    helper_job *job = s->job;
    if (s->pend_len > 0 || s->in_done)
        return DELTA_OK;
    if (job->in_mem) {
        size_t n = job->in_len - s->mem_pos;
        s->pend = job->in_mem + s->mem_pos;
        s->pend_len = n > IO_CHUNK ? IO_CHUNK : n;
        s->mem_pos += s->pend_len;
    } else if (job->in_src) {
        long r = delta_src_read(job->in_src, s->inbuf, IO_CHUNK);
        if (r < 0)
            return DELTA_ESOURCE;
        s->pend = s->inbuf;
        s->pend_len = (size_t)r;
    }
    if (s->pend_len == 0)
        s->in_done = 1;
    return DELTA_OK;
}

static delta_status pump_stdin(loop_state *s)
{
    delta_status st = refill(s);
    if (st != DELTA_OK)
        return st;
    if (s->in_done) {
        close_fd(&s->p->in_w);
        return DELTA_OK;
    }
    ssize_t w = write(s->p->in_w, s->pend, s->pend_len);
    if (w < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return DELTA_OK;
        /* EPIPE: the child stopped reading; its exit status will tell why. */
        s->in_done = 1;
        close_fd(&s->p->in_w);
        return DELTA_OK;
    }
    s->pend += w;
    s->pend_len -= (size_t)w;
    return DELTA_OK;
}

static delta_status pump_stdout(loop_state *s)
{
    ssize_t r = read(s->p->out_r, s->obuf, IO_CHUNK);
    if (r < 0)
        return (errno == EAGAIN || errno == EINTR) ? DELTA_OK : DELTA_EHELPER;
    if (r == 0) {
        close_fd(&s->p->out_r);
        return DELTA_OK;
    }
    return delta_sink_put(s->job->out, s->obuf, (size_t)r);
}

static void pump_stderr(loop_state *s)
{
    char tmp[1024];
    ssize_t r = read(s->p->err_r, tmp, sizeof tmp);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        close_fd(&s->p->err_r);
        return;
    }
    size_t room = sizeof s->job->err - 1 - s->err_len;
    size_t n = (size_t)r < room ? (size_t)r : room;
    memcpy(s->job->err + s->err_len, tmp, n);
    s->err_len += n;
    s->job->err[s->err_len] = '\0';
}

static delta_status io_loop(loop_state *s)
{
    proc *p = s->p;
    while (p->out_r >= 0 || p->err_r >= 0) {
        struct pollfd fds[3];
        int nfds = 0, iw = -1, io = -1, ie = -1;
        if (p->in_w >= 0)
            fds[iw = nfds++] = (struct pollfd){p->in_w, POLLOUT, 0};
        if (p->out_r >= 0)
            fds[io = nfds++] = (struct pollfd){p->out_r, POLLIN, 0};
        if (p->err_r >= 0)
            fds[ie = nfds++] = (struct pollfd){p->err_r, POLLIN, 0};
        if (poll(fds, (nfds_t)nfds, -1) < 0) {
            if (errno == EINTR)
                continue;
            return DELTA_EHELPER;
        }
        delta_status st = DELTA_OK;
        if (iw >= 0 && fds[iw].revents)
            st = pump_stdin(s);
        if (st == DELTA_OK && io >= 0 && fds[io].revents)
            st = pump_stdout(s);
        if (st != DELTA_OK)
            return st;
        if (ie >= 0 && fds[ie].revents)
            pump_stderr(s);
    }
    return DELTA_OK;
}

/* ---- process end ---- */

static int reap(pid_t pid, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, 0);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

static void kill_and_reap(proc *p)
{
    if (p->pid <= 0)
        return;
    int status;
    kill(p->pid, SIGKILL);
    reap(p->pid, &status);
    p->pid = -1;
}

static delta_status finish(proc *p, helper_job *job, delta_report *rep)
{
    int status = 0;
    if (reap(p->pid, &status) != 0) {
        p->pid = -1;
        return delta_fail(rep, DELTA_EHELPER, "%s: waitpid failed", job->argv[0]);
    }
    p->pid = -1;
    if (WIFEXITED(status)) {
        job->exit_code = WEXITSTATUS(status);
        if (job->exit_code == 0)
            return DELTA_OK;
        return delta_fail(rep, DELTA_EHELPER, "%s exited with status %d: %s", job->argv[0],
                          job->exit_code, job->err);
    }
    return delta_fail(rep, DELTA_EHELPER, "%s killed by signal %d: %s", job->argv[0],
                      WIFSIGNALED(status) ? WTERMSIG(status) : 0, job->err);
}

/* Blocks SIGPIPE for this thread; remembers whether one was already pending. */
static void block_sigpipe(sigset_t *old, int *was_pending)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, old);
    sigpending(&pending);
    *was_pending = sigismember(&pending, SIGPIPE);
}

static void restore_sigpipe(const sigset_t *old, int was_pending)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    if (!was_pending && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

static delta_status run_started(proc *p, helper_job *job, delta_report *rep)
{
    loop_state s = {.job = job, .p = p};
    s.obuf = malloc(IO_CHUNK);
    s.inbuf = job->in_mem ? NULL : malloc(IO_CHUNK);
    delta_status st = DELTA_ENOMEM;
    if (s.obuf && (job->in_mem || s.inbuf)) {
        sigset_t old;
        int was_pending;
        block_sigpipe(&old, &was_pending);
        st = io_loop(&s);
        restore_sigpipe(&old, was_pending);
    }
    free(s.obuf);
    free(s.inbuf);
    close_fd(&p->in_w);
    close_fd(&p->out_r);
    close_fd(&p->err_r);
    if (st != DELTA_OK) {
        kill_and_reap(p);
        return st;
    }
    return finish(p, job, rep);
}

delta_status helper_run(helper_job *job, delta_report *rep)
{
    proc p = {.in_w = -1, .out_r = -1, .err_r = -1, .child_fds = {-1, -1, -1, -1}, .pid = -1};
    job->exit_code = -1;
    job->err[0] = '\0';
    delta_status st;
    if (open_pipes(&p, job) != 0) {
        st = delta_fail(rep, DELTA_EHELPER, "cannot set up pipes for %s: %s", job->argv[0],
                        strerror(errno));
    } else {
        int rc = spawn_child(&p, job->argv);
        close_child_ends(&p);
        if (rc != 0)
            st = delta_fail(rep, DELTA_EHELPER, "cannot run %s: %s", job->argv[0], strerror(rc));
        else
            st = run_started(&p, job, rep);
    }
    close_child_ends(&p);
    close_fd(&p.in_w);
    close_fd(&p.out_r);
    close_fd(&p.err_r);
    return st;
}
