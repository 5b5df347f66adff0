/* SPDX-License-Identifier: MIT */
/*
 * kv: a line-based key/value store, showing per-thread and per-connection
 * state in a service.
 *
 *   SET key value   -> OK
 *   GET key         -> VALUE value | NOT_FOUND
 *   DEL key         -> DELETED | NOT_FOUND
 *   STATS           -> STATS commands=N keys=M   (N: this connection's, M: this thread's table)
 *
 * Each worker thread has its own table (init/fini), so nothing is locked;
 * a client sees the table of the thread that serves it.  Partial lines are
 * left unconsumed and udsd presents them again with the next bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <udsd.h>

#define KV_MAX_LINE 4096

struct kv_entry {
	char *key;
	char *value;
	struct kv_entry *next;
};

struct kv_table {
	struct kv_entry *buckets[1024];
	size_t n;
};

struct kv_conn {
	unsigned long long commands;
};

static struct kv_entry **
kv_find(struct kv_table *t, const char *key)
{
	unsigned h = 5381;

	for (const char *p = key; *p; p++)
		h = h * 33 + (unsigned char)*p;
	struct kv_entry **e = &t->buckets[h % 1024];
	while (*e && strcmp((*e)->key, key) != 0)
		e = &(*e)->next;
	return e;
}

static const char *
kv_set(struct kv_table *t, const char *key, const char *value)
{
	struct kv_entry **e = kv_find(t, key);
	char *v = strdup(value);

	if (!v)
		return "ERROR out of memory\n";
	if (*e) {
		free((*e)->value);
		(*e)->value = v;
		return "OK\n";
	}
	struct kv_entry *n = calloc(1, sizeof(*n));
	if (!n || !(n->key = strdup(key))) {
		free(n);
		free(v);
		return "ERROR out of memory\n";
	}
	n->value = v;
	*e = n;
	t->n++;
	return "OK\n";
}

static void
kv_command(struct udsd_conn *conn, struct kv_table *t, char *line)
{
	char *save = NULL, out[64];
	char *cmd = strtok_r(line, " ", &save), *key = strtok_r(NULL, " ", &save);
	const char *reply = "ERROR unknown command\n";

	if (!cmd)
		reply = "ERROR empty line\n";
	else if (strcmp(cmd, "SET") == 0 && key && save && *save)
		reply = kv_set(t, key, save);
	else if (strcmp(cmd, "GET") == 0 && key) {
		struct kv_entry *e = *kv_find(t, key);
		if (e) {
			udsd_conn_write(conn, "VALUE ", 6);
			udsd_conn_write(conn, e->value, strlen(e->value));
			reply = "\n";
		} else
			reply = "NOT_FOUND\n";
	} else if (strcmp(cmd, "DEL") == 0 && key) {
		struct kv_entry **e = kv_find(t, key), *d = *e;
		reply = "NOT_FOUND\n";
		if (d) {
			*e = d->next;
			free(d->key);
			free(d->value);
			free(d);
			t->n--;
			reply = "DELETED\n";
		}
	} else if (strcmp(cmd, "STATS") == 0) {
		struct kv_conn *c = udsd_conn_get_data(conn);
		snprintf(out, sizeof(out), "STATS commands=%llu keys=%zu\n", c->commands, t->n);
		reply = out;
	}
	udsd_conn_write(conn, reply, strlen(reply));
}

static ssize_t
kv_data(struct udsd_conn *conn, const void *data, size_t len)
{
	struct kv_conn *c = udsd_conn_get_data(conn);
	const char *p = data, *nl;
	size_t used = 0;
	char line[KV_MAX_LINE];

	while ((nl = memchr(p + used, '\n', len - used))) {
		size_t n = (size_t)(nl - (p + used));
		if (n > 0 && p[used + n - 1] == '\r')
			n--;
		if (n >= sizeof(line)) {
			udsd_conn_write(conn, "ERROR line too long\n", 20);
			return -1;
		}
		memcpy(line, p + used, n);
		line[n] = '\0';
		c->commands++;
		kv_command(conn, udsd_conn_state(conn), line);
		used = (size_t)(nl - p) + 1;
	}
	if (len - used >= KV_MAX_LINE) {
		udsd_conn_write(conn, "ERROR line too long\n", 20);
		return -1;
	}
	return (ssize_t)used;
}

static int
kv_open(struct udsd_conn *conn)
{
	struct kv_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	udsd_conn_set_data(conn, c);
	return 0;
}

static void
kv_close(struct udsd_conn *conn)
{
	free(udsd_conn_get_data(conn));
}

static int
kv_init(const struct udsd_service_config *config, void **ret_state)
{
	struct kv_table *t = calloc(1, sizeof(*t));

	(void)config;
	if (!t)
		return -ENOMEM;
	*ret_state = t;
	return 0;
}

static void
kv_fini(void *state)
{
	struct kv_table *t = state;

	for (size_t i = 0; i < 1024; i++)
		for (struct kv_entry *e = t->buckets[i], *next; e; e = next) {
			next = e->next;
			free(e->key);
			free(e->value);
			free(e);
		}
	free(t);
}

const struct udsd_service udsd_service_v1 = {
	.api_version = UDSD_SERVICE_API_VERSION,
	.name = "kv",
	.init = kv_init,
	.fini = kv_fini,
	.on_open = kv_open,
	.on_data = kv_data,
	.on_close = kv_close,
};
