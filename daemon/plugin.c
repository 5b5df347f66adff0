/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * The master runs as root and never loads a plugin: a plugin's constructors,
 * its dlopen() and its check() would all run as root there, with the
 * listeners, the workers' channels and the shared counters in reach.  So at
 * start, on "udsd -t" and on reload, each pool with plugins gets a
 * short-lived child of its own: it closes everything, drops to the pool's
 * credentials exactly as a worker does, loads the pool's plugins, runs their
 * check(), reports each one's name and flags (or the FILE:LINE error) over a
 * pipe, and exits.  The master waits for it (check() is a validation and must
 * be quick), and learns nothing else about the plugin.
 */

/* How long a pool's plugins may take to load and check. */
#define PLUGIN_CHECK_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define REPORT_MAX 8192

static _noreturn_ void
check_child(const struct config *c, struct service *s, unsigned pool, int out)
{
	char err[512], prefix[64];
	FILE *f;

	if (dup2(out, 3) < 0)
		_exit(EXIT_FAILURE);
	close_range(4, ~0U, 0);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		_exit(EXIT_FAILURE);
	status_forget();
	snprintf(prefix, sizeof(prefix), "checking pool %s", c->pools[pool].name);
	log_set_prefix(prefix);
	credentials_drop(&c->pools[pool]);
	f = fdopen(3, "w");
	if (!f)
		_exit(EXIT_FAILURE);
	for (size_t i = 0; i < c->n_listeners; i++) {
		const struct config_listener *l = &c->listeners[i];

		if (l->pool != pool || !service_is_plugin(l))
			continue;
		if (service_load_plugin(&s[i], c, l, err, sizeof(err)) < 0 ||
		    service_check(&s[i], c, l, err, sizeof(err)) < 0) {
			fprintf(f, "!%s", err);
			fclose(f);
			_exit(EXIT_FAILURE);
		}
		/* One line per plugin; the name last, as it may hold spaces. */
		fprintf(f, "%zu %u %.63s\n", i, s[i].ops->flags, s[i].ops->name);
	}
	_exit(fclose(f) == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}

/* Everything the child writes, until it closes the pipe or the time is up; -ETIMEDOUT then. */
static int
read_report(int fd, char *buf, size_t size)
{
	uint64_t deadline = now_usec() + PLUGIN_CHECK_TIMEOUT_USEC;
	size_t len = 0;

	for (;;) {
		uint64_t now = now_usec();
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, (int)((deadline - now + 999) / 1000)) < 0 && errno != EINTR)
			return negative_errno();
		n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0 || (len += (size_t)n) == size - 1) {
			buf[len] = '\0';
			return 0;
		}
	}
}

/* The child's lines into s; false if one is not what check_child() writes. */
static bool
parse_report(const struct config *c, struct service *s, unsigned pool, char *buf)
{
	char *save = NULL;

	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t i;
		unsigned flags;
		int name = 0;

		if (sscanf(line, "%zu %u %n", &i, &flags, &name) != 2 || !name ||
		    i >= c->n_listeners || c->listeners[i].pool != pool)
			return false;
		snprintf(s[i].name, sizeof(s[i].name), "%s", line + name);
		s[i].flags = flags;
	}
	return true;
}

/* The first plugin listener of the pool: where an error with no line of its own points. */
static const struct config_listener *
first_plugin(const struct config *c, unsigned pool)
{
	for (size_t i = 0; i < c->n_listeners; i++)
		if (c->listeners[i].pool == pool && service_is_plugin(&c->listeners[i]))
			return &c->listeners[i];
	return NULL;
}

/* Why the child failed without a word: how it ended. */
static void
child_failed(const struct config *c, unsigned pool, int wstatus, int r, char *err, size_t errlen)
{
	const struct config_listener *l = first_plugin(c, pool);
	char how[64];

	if (r == -ETIMEDOUT)
		snprintf(how, sizeof(how), "took longer than %llus",
			 (unsigned long long)(PLUGIN_CHECK_TIMEOUT_USEC / USEC_PER_SEC));
	else if (WIFSIGNALED(wstatus))
		snprintf(how, sizeof(how), "was killed by signal %s", sigabbrev_np(WTERMSIG(wstatus)));
	else
		snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(wstatus));
	snprintf(err, errlen, "%s:%u: service: loading and checking the plugins of pool %s %s",
		 c->file, l->service_line, c->pools[pool].name, how);
}

static int
check_pool(const struct config *c, struct service *s, unsigned pool, char *err, size_t errlen)
{
	_cleanup_close_ int in = -EBADF;
	_cleanup_free_ char *buf = malloc(REPORT_MAX);
	const char *bang;
	int p[2], wstatus = 0, r;
	pid_t pid;

	if (!buf || pipe2(p, O_CLOEXEC) < 0)
		return buf ? negative_errno() : -ENOMEM;
	pid = fork();
	if (pid == 0)
		check_child(c, s, pool, p[1]);
	safe_close(p[1]);
	in = p[0];
	if (pid < 0) {
		snprintf(err, errlen, "checking the plugins of pool %s: fork: %s", c->pools[pool].name,
			 strerror(errno));
		return -errno;
	}
	r = read_report(in, buf, REPORT_MAX);
	if (r < 0)
		kill(pid, SIGKILL);
	while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
		;
	/* The error, after the lines of the plugins that passed. */
	bang = buf[0] == '!' ? buf : strstr(buf, "\n!");
	if (r >= 0 && bang) {
		snprintf(err, errlen, "%s", bang + 1 + (bang != buf));
		return -EINVAL;
	}
	if (r < 0 || !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 ||
	    !parse_report(c, s, pool, buf)) {
		child_failed(c, pool, wstatus, r, err, errlen);
		return r < 0 ? r : -EINVAL;
	}
	return 0;
}

/* Every pool's plugins, each pool in a child with its credentials; the first error wins. */
int
plugin_check(const struct config *c, struct service *s, char *err, size_t errlen)
{
	for (unsigned pool = 0; pool < c->n_pools; pool++) {
		int r;

		if (!first_plugin(c, pool))
			continue;
		/* The pool's credentials are root's: say so, every time they are checked. */
		if (geteuid() == 0 && (c->pools[pool].user == (uid_t)-1 || c->pools[pool].user == 0))
			log_warning("pool %s runs plugin code as root (%s:%u: %s); set user in the pool "
				    "to run it unprivileged", c->pools[pool].name, c->file,
				    first_plugin(c, pool)->service_line, first_plugin(c, pool)->service);
		r = check_pool(c, s, pool, err, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}
