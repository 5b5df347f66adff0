/* SPDX-License-Identifier: MIT */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * Each listener's service.  A built-in one (udsd's own code) is resolved and
 * checked in the master.  A plugin is never loaded there: the master only
 * knows its path, and what a short-lived process with the pool's
 * credentials reported of it (plugin.c); the pool's workers load it
 * themselves, after they dropped privileges (service_open()).
 */

static const struct udsd_service *const builtins[] = {
	&service_echo,
	&service_http,
};

bool
service_is_plugin(const struct config_listener *l)
{
	return l->service[0] == '/';
}

static int
service_builtin(struct service *s, const struct config *c, const struct config_listener *l,
		char *err, size_t errlen)
{
	for (size_t i = 0; i < ELEMENTSOF(builtins); i++)
		if (strcmp(builtins[i]->name, l->service) == 0) {
			s->ops = builtins[i];
			return 0;
		}
	snprintf(err, errlen, "%s:%u: service: unknown service '%s' (built in: echo, http; or /path/to/service.so)",
		 c->file, l->service_line, l->service);
	return -ENOENT;
}

/*
 * The service has what its listener's type needs: on_data for streams and
 * seqpacket, on_datagram (and UDSD_SERVICE_DATAGRAMS, which says the table has
 * it) for datagrams.  Only where ops is known: for a plugin, in a child with
 * the pool's credentials or in the pool's workers.
 */
static int
service_fits(const struct udsd_service *ops, const struct config *c,
	     const struct config_listener *l, char *err, size_t errlen)
{
	bool dgram = l->type == SOCK_DGRAM;

	if (dgram ? ops->flags & UDSD_SERVICE_DATAGRAMS && ops->on_datagram : ops->on_data != NULL)
		return 0;
	snprintf(err, errlen, "%s:%u: service: %s has no %s, so it cannot serve a %s listener",
		 c->file, l->service_line, ops->name, dgram ? "on_datagram" : "on_data",
		 dgram ? "dgram" : l->type == SOCK_SEQPACKET ? "seqpacket" : "stream");
	return -EINVAL;
}

/* dlopen() and dlsym() a plugin, and hold it to the API; in a child of the master only. */
int
service_load_plugin(struct service *s, const struct config *c, const struct config_listener *l,
		    char *err, size_t errlen)
{
	const char *name = l->service;

	/* RTLD_NOW: a missing symbol is an error at start, not a crash at the first client. */
	s->dl = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!s->dl) {
		snprintf(err, errlen, "%s:%u: service: %s", c->file, l->service_line, dlerror());
		return -ENOENT;
	}
	s->ops = dlsym(s->dl, UDSD_SERVICE_SYMBOL);
	if (!s->ops) {
		snprintf(err, errlen, "%s:%u: service: %s exports no %s", c->file, l->service_line,
			 name, UDSD_SERVICE_SYMBOL);
		return -ENOENT;
	}
	if (s->ops->api_version != UDSD_SERVICE_API_VERSION) {
		snprintf(err, errlen, "%s:%u: service: %s is built for service API %u, udsd has %u",
			 c->file, l->service_line, name, s->ops->api_version,
			 UDSD_SERVICE_API_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (!s->ops->name) {
		snprintf(err, errlen, "%s:%u: service: %s has no name", c->file, l->service_line,
			 name);
		return -EINVAL;
	}
	return service_fits(s->ops, c, l, err, errlen);
}

/* The listener's own keys, as the service sees them (no service code runs here). */
static int
service_config(struct service *s, const struct config_listener *l)
{
	s->kv = calloc(l->n_extra + 1, sizeof(*s->kv));
	if (!s->kv)
		return -ENOMEM;
	for (size_t i = 0; i < l->n_extra; i++)
		s->kv[i] = (struct udsd_kv){ l->extra[i].key, l->extra[i].value };
	s->config = (struct udsd_service_config){ .listener = l->name, .address = l->address,
						  .keys = s->kv, .n_keys = l->n_extra };
	return 0;
}

/*
 * The listener's access log, opened here in the master each time the config
 * is read (so a reload reopens it, after logrotate); the generation's
 * workers inherit it (close_inherited() keeps it).
 */
static int
service_open_access_log(struct service *s, const struct config *c, const struct config_listener *l,
			char *err, size_t errlen)
{
	int r;

	if (!l->access_log)
		return 0;
	r = accesslog_open(l->access_log, &s->access_log_fd);
	if (r < 0)
		snprintf(err, errlen, "%s:%u: access_log: %s: %s", c->file, l->access_log_line, l->access_log,
			 strerror(-r));
	return r;
}

/* For the built-in http service: its listener's access log fd, or -EBADF. */
int
service_access_log(const struct udsd_service_config *cfg)
{
	const struct service *s =
		(const struct service *)((const char *)cfg - offsetof(struct service, config));

	return s->access_log_fd;
}

/* The service's check() on the listener's keys; the message points at the key it names. */
int
service_check(const struct service *s, const struct config *c, const struct config_listener *l,
	      char *err, size_t errlen)
{
	char msg[256] = "";
	int r;

	if (!s->ops->check) {
		if (l->n_extra == 0)
			return 0;
		snprintf(err, errlen, "%s:%u: unknown key '%s' in [listener %s]", c->file,
			 l->extra[0].line, l->extra[0].key, l->name);
		return -EINVAL;
	}
	r = s->ops->check(&s->config, msg, sizeof(msg));
	if (r < 0) {
		unsigned line = l->line;
		for (size_t i = 0; i < l->n_extra; i++)
			if (strncmp(msg, l->extra[i].key, strlen(l->extra[i].key)) == 0)
				line = l->extra[i].line;
		snprintf(err, errlen, "%s:%u: %s", c->file, line, msg[0] ? msg : strerror(-r));
	}
	return r;
}

static void
service_learn(struct service *s)
{
	snprintf(s->name, sizeof(s->name), "%s", s->ops->name);
	s->flags = s->ops->flags;
}

/* n services (at least one), knowing nothing yet; service_free() frees them. */
struct service *
service_new(size_t n)
{
	struct service *s = calloc(MAX(n, 1), sizeof(*s));

	for (size_t i = 0; s && i < MAX(n, 1); i++)
		s[i].access_log_fd = -EBADF;
	return s;
}

/*
 * Resolve and check every listener's service; the config's strings must
 * outlive them.  Plugins are checked by plugin_check(), which runs no code
 * of theirs in this process.
 */
int
service_resolve(const struct config *c, struct service **ret, char *err, size_t errlen)
{
	struct service *s = service_new(c->n_listeners);
	int r = 0;

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_listeners && r >= 0; i++) {
		const struct config_listener *l = &c->listeners[i];

		r = service_config(&s[i], l);
		if (r >= 0)
			r = service_open_access_log(&s[i], c, l, err, errlen);
		if (r < 0 || service_is_plugin(l))
			continue;
		r = service_builtin(&s[i], c, l, err, errlen);
		if (r >= 0)
			r = service_fits(s[i].ops, c, l, err, errlen);
		if (r >= 0)
			r = service_check(&s[i], c, l, err, errlen);
		if (r >= 0)
			service_learn(&s[i]);
	}
	if (r >= 0)
		r = plugin_check(c, s, err, errlen);
	if (r < 0) {
		service_free(s, c->n_listeners);
		return r;
	}
	*ret = s;
	return 0;
}

/*
 * In a worker, with the pool's credentials: load its pool's plugins and run
 * their check() once more (the file may have changed since the master's
 * check), so that a worker serves only what passed.
 */
int
service_open(struct service *s, const struct config *c, unsigned pool, char *err, size_t errlen)
{
	for (size_t i = 0; i < c->n_listeners; i++) {
		const struct config_listener *l = &c->listeners[i];
		int r;

		if (l->pool != pool || !service_is_plugin(l))
			continue;
		r = service_load_plugin(&s[i], c, l, err, errlen);
		if (r >= 0)
			r = service_check(&s[i], c, l, err, errlen);
		if (r < 0)
			return r;
		service_learn(&s[i]);
	}
	return 0;
}

void
service_free(struct service *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++) {
		free(s[i].kv);
		safe_close(s[i].access_log_fd);
		if (s[i].dl)
			dlclose(s[i].dl);
	}
	free(s);
}
