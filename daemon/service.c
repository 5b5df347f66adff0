/* SPDX-License-Identifier: MIT */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "daemon.h"

static const struct udsd_service *const builtins[] = {
	&service_echo,
	&service_http,
};

static int
service_load(struct service *s, const struct config *c, const struct config_listener *l,
	     char *err, size_t errlen)
{
	const char *name = l->service;

	if (name[0] != '/') {
		for (size_t i = 0; i < ELEMENTSOF(builtins); i++)
			if (strcmp(builtins[i]->name, name) == 0) {
				s->ops = builtins[i];
				return 0;
			}
		snprintf(err, errlen, "%s:%u: service: unknown service '%s' (built in: echo, http; or /path/to/service.so)",
			 c->file, l->service_line, name);
		return -ENOENT;
	}
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
	if (s->ops->api_version == 1) {
		/* Its table ends before on_datagram: read no further than it goes. */
		memcpy(&s->ops_v1, s->ops, offsetof(struct udsd_service, on_datagram));
		s->ops = &s->ops_v1;
	} else if (s->ops->api_version != UDSD_SERVICE_API_VERSION) {
		snprintf(err, errlen, "%s:%u: service: %s is built for service API %u, udsd has %u (and loads 1)",
			 c->file, l->service_line, name, s->ops->api_version,
			 UDSD_SERVICE_API_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (!s->ops->name) {
		snprintf(err, errlen, "%s:%u: service: %s has no name", c->file, l->service_line,
			 name);
		return -EINVAL;
	}
	return 0;
}

/* The service has the callback its listener's type needs: on_data, or on_datagram. */
static int
service_fits(const struct service *s, const struct config *c, const struct config_listener *l,
	     char *err, size_t errlen)
{
	bool dgram = l->type == SOCK_DGRAM;

	if (dgram ? s->ops->on_datagram != NULL : s->ops->on_data != NULL)
		return 0;
	snprintf(err, errlen, "%s:%u: service: %s has no %s, so it cannot serve a %s listener",
		 c->file, l->service_line, s->ops->name, dgram ? "on_datagram" : "on_data",
		 dgram ? "dgram" : l->type == SOCK_SEQPACKET ? "seqpacket" : "stream");
	return -EINVAL;
}

static int
service_configure(struct service *s, const struct config *c, const struct config_listener *l,
		  char *err, size_t errlen)
{
	char msg[256] = "";
	int r;

	s->kv = calloc(l->n_extra + 1, sizeof(*s->kv));
	if (!s->kv)
		return -ENOMEM;
	for (size_t i = 0; i < l->n_extra; i++)
		s->kv[i] = (struct udsd_kv){ l->extra[i].key, l->extra[i].value };
	s->config = (struct udsd_service_config){ .listener = l->name, .address = l->address,
						  .keys = s->kv, .n_keys = l->n_extra };
	if (!s->ops->check) {
		if (l->n_extra == 0)
			return 0;
		snprintf(err, errlen, "%s:%u: unknown key '%s' in [listener %s]", c->file,
			 l->extra[0].line, l->extra[0].key, l->name);
		return -EINVAL;
	}
	r = s->ops->check(&s->config, msg, sizeof(msg));
	if (r < 0) {
		/* Point at the key the message names, else at the listener. */
		unsigned line = l->line;
		for (size_t i = 0; i < l->n_extra; i++)
			if (strncmp(msg, l->extra[i].key, strlen(l->extra[i].key)) == 0)
				line = l->extra[i].line;
		snprintf(err, errlen, "%s:%u: %s", c->file, line, msg[0] ? msg : strerror(-r));
	}
	return r;
}

/* Resolve and check every listener's service; the config's strings must outlive them. */
int
service_resolve(const struct config *c, struct service **ret, char *err, size_t errlen)
{
	struct service *s = calloc(c->n_listeners, sizeof(*s));
	int r = 0;

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_listeners && r >= 0; i++) {
		r = service_load(&s[i], c, &c->listeners[i], err, errlen);
		if (r >= 0)
			r = service_fits(&s[i], c, &c->listeners[i], err, errlen);
		if (r >= 0)
			r = service_configure(&s[i], c, &c->listeners[i], err, errlen);
	}
	if (r < 0) {
		service_free(s, c->n_listeners);
		return r;
	}
	*ret = s;
	return 0;
}

void
service_free(struct service *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++) {
		free(s[i].kv);
		if (s[i].dl)
			dlclose(s[i].dl);
	}
	free(s);
}
