/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"

/*
 * udsctl: udsd's admin client, as systemctl is systemd's.  One request per
 * connection to the admin socket (daemon/admin.c has the protocol): the
 * answer's first line is "ok" or "error", the text follows until the master
 * closes.  Exit status: 0 ok, 1 the request failed (the reason on stderr),
 * 2 usage.
 */

#ifndef CONFIG_DEFAULT_ADMIN
#define CONFIG_DEFAULT_ADMIN "/run/udsd/admin.sock"
#endif
#ifndef UDSD_VERSION
#define UDSD_VERSION "0"
#endif

#define REPLY_MAX (8u << 20)
/* A reload or an upgrade waits for new workers to be ready: udsd gives up after a minute. */
#define TIMEOUT_MS 90000
/* After an upgrade's exec, the new image binds the admin socket again: this long at most. */
#define RECONNECT_MS 60000

static const char *socket_path = CONFIG_DEFAULT_ADMIN;

static _noreturn_ void
usage(FILE *f, int status)
{
	fprintf(f, "Usage: udsctl [-s SOCKET] COMMAND\n\n"
		   "Ask a running udsd through its admin socket (default " CONFIG_DEFAULT_ADMIN ").\n\n"
		   "Commands:\n"
		   "  status [--json]   pools, generations and workers, with their counters\n"
		   "  metrics           the counters as OpenMetrics text (for Prometheus)\n"
		   "  reload            re-read the configuration; returns once the new\n"
		   "                    generation serves, or fails with the reason\n"
		   "  upgrade [BINARY]  replace udsd's binary in place (same PID); returns once\n"
		   "                    the new binary serves, or fails with the reason\n\n"
		   "  -s, --socket PATH the admin socket ([admin] path in udsd.conf)\n"
		   "  -V, --version     print the version and exit\n"
		   "  -h, --help        show this help\n");
	exit(status);
}

_printf_(1, 2) static _noreturn_ void
die(const char *fmt, ...)
{
	va_list ap;

	fputs("udsctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_FAILURE);
}

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connected socket, or -errno. */
static int
admin_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, e;

	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, socket_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	e = errno;
	close(fd);
	return -e;
}

static _noreturn_ void
die_connect(int err)
{
	die("cannot reach udsd at %s: %s%s", socket_path, strerror(err),
	    err == EACCES ? " (the admin socket is its owner's: try as root)" :
	    err == ENOENT || err == ECONNREFUSED ? " (is udsd running? see [admin] path)" : "");
}

/*
 * Send the request and read the whole answer (until udsd closes).  Returns
 * the answer's length; 0 (and NULL) when udsd closed without answering.
 */
static size_t
ask(int fd, const char *request, char **ret)
{
	size_t len = strlen(request), got = 0, cap = 65536;
	char *buf = malloc(cap + 1);
	long long end = now_ms() + TIMEOUT_MS;

	if (!buf)
		die("out of memory");
	/* A refused client's request meets a closed socket: the answer may still be there to read. */
	if (send(fd, request, len, MSG_NOSIGNAL) != (ssize_t)len && errno != EPIPE &&
	    errno != ECONNRESET)
		die("sending to %s: %s", socket_path, strerror(errno));
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long long left = end - now_ms();
		ssize_t n;

		if (left <= 0)
			die("no answer from udsd within %ds", TIMEOUT_MS / 1000);
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0 && errno == ECONNRESET)
			n = 0;
		if (n < 0)
			die("reading from %s: %s", socket_path, strerror(errno));
		if (n == 0)
			break;
		got += (size_t)n;
		if (got == cap) {
			if (cap >= REPLY_MAX)
				die("answer longer than %u bytes", REPLY_MAX);
			cap *= 2;
			if (!(buf = realloc(buf, cap + 1)))
				die("out of memory");
		}
	}
	if (got == 0) {
		free(buf);
		buf = NULL;
	} else {
		buf[got] = '\0';
	}
	*ret = buf;
	return got;
}

/* "ok\nTEXT": TEXT to stdout, exit 0; "error\nTEXT": to stderr as why command failed, exit 1. */
static _noreturn_ void
finish(const char *command, char *answer)
{
	char *text = strchr(answer, '\n');

	text = text ? text + 1 : answer + strlen(answer);
	if (strncmp(answer, "ok\n", 3) == 0) {
		fputs(text, stdout);
		free(answer);
		exit(fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
	}
	text[strcspn(text, "\n")] = '\0';
	fprintf(stderr, "udsctl: %s failed: %s\n",
		command, strncmp(answer, "error\n", 6) == 0 ? text : "a garbled answer");
	free(answer);
	exit(EXIT_FAILURE);
}

/*
 * The upgrade's answer comes from the new image: the old one's connection
 * closed with its exec.  Ask the new one once it listens.  Until the old
 * image's listening socket is gone for good, a connection may still reach
 * it, and be reset: that is "not yet" too.
 */
static _noreturn_ void
upgraded(void)
{
	long long end = now_ms() + RECONNECT_MS;
	char *answer;
	int fd;

	for (;;) {
		fd = admin_connect();
		if (fd >= 0 && ask(fd, "upgraded\n", &answer) > 0)
			break;
		if (fd >= 0)
			close(fd);
		else if (fd != -ENOENT && fd != -ECONNREFUSED)
			die_connect(-fd);
		if (now_ms() >= end)
			die("upgrade failed: udsd did not come back within %ds", RECONNECT_MS / 1000);
		poll(NULL, 0, 50); /* the new image binds the socket as it starts */
	}
	close(fd);
	finish("upgrade", answer);
}

int
main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char request[4096], *answer;
	const char *command;
	bool json = false;
	int opt, fd;

	while ((opt = getopt_long(argc, argv, "+s:Vh", options, NULL)) >= 0)
		switch (opt) {
		case 's':
			socket_path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'V':
			printf("udsctl %s\n", UDSD_VERSION);
			return EXIT_SUCCESS;
		case 'h':
			usage(stdout, EXIT_SUCCESS);
		default:
			usage(stderr, 2);
		}
	if (optind >= argc) {
		fputs("udsctl: no command given\n", stderr);
		usage(stderr, 2);
	}
	command = argv[optind++];
	/* "status --json" reads better after the command too. */
	for (; optind < argc && strcmp(argv[optind], "--json") == 0; optind++)
		json = true;
	if (strcmp(command, "status") == 0 && optind == argc)
		snprintf(request, sizeof(request), "%s\n", json ? "status json" : "status");
	else if ((strcmp(command, "metrics") == 0 || strcmp(command, "reload") == 0) &&
		 optind == argc && !json)
		snprintf(request, sizeof(request), "%s\n", command);
	else if (strcmp(command, "upgrade") == 0 && argc - optind <= 1 && !json &&
		 (optind == argc || !strpbrk(argv[optind], "\n")))
		snprintf(request, sizeof(request), "upgrade%s%s\n", optind < argc ? " " : "",
			 optind < argc ? argv[optind] : "");
	else {
		fprintf(stderr, "udsctl: unknown command or arguments: %s\n", command);
		usage(stderr, 2);
	}

	fd = admin_connect();
	if (fd < 0)
		die_connect(-fd);
	if (ask(fd, request, &answer) == 0) {
		if (strcmp(command, "upgrade") == 0)
			upgraded();
		die("%s: udsd closed the connection without an answer", command);
	}
	close(fd);
	finish(command, answer);
}
