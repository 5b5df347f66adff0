/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * udsd service API.
 *
 * A service answers the clients of one listener.  udsd owns everything around
 * it: the socket, its permissions, the worker processes and their threads,
 * reloads and shutdown.  A service sees connected clients only, one thread at
 * a time per connection, and never blocks: writes are buffered by udsd and
 * flushed when the client can take them.
 *
 * A service built as a shared object exports one symbol,
 *
 *     const struct udsd_service udsd_service_v1 = { .api_version = UDSD_SERVICE_API_VERSION, ... };
 *
 * and is named in the config as "service = /path/to/name.so".
 *
 * Threading: every callback of one connection runs on the same worker thread.
 * init/fini run once per worker thread and listener, so a service can keep
 * per-thread tables without locks.
 *
 * Datagrams: on a "type = dgram" listener there are no connections.  Every
 * worker thread reads the one bound socket, and each datagram is handed to
 * on_datagram() on whichever thread read it, with its sender's credentials,
 * address and descriptors; udsd_dgram_reply() answers it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define UDSD_SERVICE_API_VERSION 1
#define UDSD_SERVICE_SYMBOL "udsd_service_v1"

struct sockaddr_un;
/*
 * The functions below are all a service sees of udsd: udsd is built with
 * every other symbol hidden and exports exactly these (its dynamic symbol
 * list is made from this file), so a service's own globals and functions
 * stay its own whatever they are called.
 */
#define UDSD_API __attribute__((visibility("default")))

struct udsd_conn;
struct udsd_dgram;

struct udsd_kv {
	const char *key;
	const char *value;
};

/* What a service learns of its configuration: its listener's section, minus udsd's own keys. */
struct udsd_service_config {
	const char *listener; /* the [listener NAME] */
	const char *address;  /* its path, @name or tcp:host:port */
	const struct udsd_kv *keys;
	size_t n_keys;
};

enum {
	/* Receive SCM_RIGHTS descriptors that clients send with their bytes. */
	UDSD_SERVICE_RECV_FDS = 1 << 0,
	/* The service has a deadline_reply (a struct built before it had none, has not). */
	UDSD_SERVICE_DEADLINE_REPLY = 1 << 1,
	/* The service has on_datagram, likewise: it serves dgram listeners. */
	UDSD_SERVICE_DATAGRAMS = 1 << 2,
	/*
	 * A client may move to another worker between two messages (on reload,
	 * binary upgrade, or when the pool shrinks) instead of being drained:
	 * the service's per-connection state then starts afresh (on_close here,
	 * on_open there).  udsd moves a connection only when every byte it read
	 * was consumed and every answer has left; bytes the client sent since
	 * stay in the kernel and go with it.  A service with state that spans
	 * messages says "not now" with can_migrate.
	 */
	UDSD_SERVICE_MIGRATE = 1 << 3,
};

struct udsd_service {
	unsigned api_version; /* UDSD_SERVICE_API_VERSION */
	const char *name;
	unsigned flags;

	/*
	 * Validate the configuration; runs in the master at start, on "udsd -t"
	 * and on reload, so a bad key fails before anything is applied.  Return
	 * 0, or -errno with a message in err ("key: what is wrong").  Optional.
	 */
	int (*check)(const struct udsd_service_config *config, char *err, size_t errlen);

	/* Per worker thread.  Return 0 or -errno (the worker then exits). Optional. */
	int (*init)(const struct udsd_service_config *config, void **ret_state);
	void (*fini)(void *state);

	/* A client was handed to this thread.  Return <0 to close it.  Optional. */
	int (*on_open)(struct udsd_conn *conn);

	/*
	 * Bytes arrived.  Return how many were consumed (0..len); the rest is kept
	 * and presented again, followed by new bytes.  Return <0 to close the
	 * connection.  A service whose answers can outgrow the requests (several
	 * requests in one read, say) stops consuming once udsd_conn_congested():
	 * udsd then stops reading that client and, once it has taken enough of
	 * its output, presents the kept bytes again by themselves.  On a
	 * seqpacket listener each call is one whole message (possibly empty) and
	 * unconsumed bytes are dropped.  Required on stream and seqpacket
	 * listeners (a service for dgram listeners alone may leave it NULL).
	 */
	ssize_t (*on_data)(struct udsd_conn *conn, const void *data, size_t len);

	/* The connection is about to be freed; release user data here.  Optional. */
	void (*on_close)(struct udsd_conn *conn);

	/*
	 * The worker is draining (reload or stop): finish what is in progress
	 * and close.  If NULL, udsd waits for the client to close, up to the
	 * shutdown timeout.
	 */
	void (*on_drain)(struct udsd_conn *conn);

	/*
	 * The connection was idle for its timeout (udsd_conn_set_timeout), or
	 * its deadline passed (udsd_conn_set_deadline).  The service may write a
	 * last word (an HTTP 408, say); the connection is closed after it either
	 * way.  If NULL it is just closed.  Not called for a client that took no
	 * output for a whole timeout: it is closed at once, nothing would reach it.
	 */
	void (*on_timeout)(struct udsd_conn *conn);

	/*
	 * What a client is sent when a callback for it ran past its pool's
	 * request_timeout (an HTTP 503, say), before its connection is shut
	 * down and the stuck worker replaced: sent as is, from a signal
	 * handler, and only if none of the stuck callback's output reached the
	 * client and none waits for it.  Read only with
	 * UDSD_SERVICE_DEADLINE_REPLY in flags.  Optional.
	 */
	const char *deadline_reply;

	/*
	 * One datagram arrived on a dgram listener: len bytes, whole (one larger
	 * than the listener's max_datagram never gets here: it is dropped and
	 * counted), from a sender the allow-lists admit.  d and what it refers
	 * to are valid during the call only; the datagram's descriptors that the
	 * service did not take are closed after it.  Return 0, or <0 to count
	 * the datagram as failed.  Read only with UDSD_SERVICE_DATAGRAMS in
	 * flags; required on dgram listeners, which a service without it cannot
	 * serve ("udsd -t" says so).
	 */
	int (*on_datagram)(struct udsd_dgram *d, const void *data, size_t len);

	/*
	 * With UDSD_SERVICE_MIGRATE (read only then, so older plugins without
	 * this member stay valid): may the connection move now?  Return false
	 * while the service holds state that would be lost (half a request, a
	 * body still to skip); udsd asks again after the next callback.  A
	 * connection that never agrees is closed at shutdown_timeout.  Must not
	 * write.  Optional: without it, every boundary is fine.
	 */
	bool (*can_migrate)(struct udsd_conn *conn);
};

/*
 * Queue bytes for the client.  Never blocks; output is flushed after the
 * callback returns.  On a seqpacket listener each call is one message.
 * Returns 0 or -ENOMEM.
 */
UDSD_API int udsd_conn_write(struct udsd_conn *conn, const void *data, size_t len);

/* Close once the queued output is flushed.  No callback but on_close follows. */
UDSD_API void udsd_conn_close(struct udsd_conn *conn);

/* Bytes queued and not yet taken by the client. */
UDSD_API size_t udsd_conn_pending(const struct udsd_conn *conn);

/*
 * True while so much output waits for the client (256 KiB) that the service
 * should stop consuming input: return from on_data with what it consumed so
 * far, and udsd hands the rest back once the client has read enough.  udsd
 * itself stops reading such a client, so a client that sends without reading
 * cannot grow the worker's memory, and one that takes nothing for a whole
 * idle timeout is closed.
 */
UDSD_API bool udsd_conn_congested(const struct udsd_conn *conn);

UDSD_API void udsd_conn_set_data(struct udsd_conn *conn, void *data);
UDSD_API void *udsd_conn_get_data(const struct udsd_conn *conn);

/* The per-thread state that init returned. */
UDSD_API void *udsd_conn_state(const struct udsd_conn *conn);

/* The client's credentials (SO_PEERCRED), taken when it connected. */
UDSD_API int udsd_conn_peer(const struct udsd_conn *conn, pid_t *ret_pid, uid_t *ret_uid,
			    gid_t *ret_gid);

/*
 * Descriptors that arrived with the bytes of the current on_data call
 * (UDSD_SERVICE_RECV_FDS).  udsd_conn_take_fd() transfers ownership of fd i
 * to the service (-EBADF if already taken); udsd closes the rest after on_data.
 */
UDSD_API size_t udsd_conn_n_fds(const struct udsd_conn *conn);
UDSD_API int udsd_conn_take_fd(struct udsd_conn *conn, size_t i);
/* Look at fd i without taking it (-EBADF if taken or out of range). */
UDSD_API int udsd_conn_fd(const struct udsd_conn *conn, size_t i);

/*
 * Close the connection once it has been idle for usec (0: back to the
 * listener's idle_timeout): no byte arrived and, while output waits, the
 * client took none of it.  Every read pushes this timeout back.
 */
UDSD_API void udsd_conn_set_timeout(struct udsd_conn *conn, unsigned long long usec);

/*
 * Close the connection usec from now, whatever arrives meanwhile (0: no
 * deadline); on_timeout is called first.  Reads do not push it back, so a
 * client trickling a byte at a time cannot hold it off: for header timeouts
 * and the like, set it when the first byte of a request arrives.
 */
UDSD_API void udsd_conn_set_deadline(struct udsd_conn *conn, unsigned long long usec);

/*
 * True once the worker drains: finish the current exchange and close.  A
 * connection that will migrate (UDSD_SERVICE_MIGRATE) is not draining.
 */
UDSD_API bool udsd_conn_draining(const struct udsd_conn *conn);

/* Count one request in the worker's live counters (shown by /status). */
UDSD_API void udsd_conn_count_request(struct udsd_conn *conn);

/*
 * The sender's credentials as the kernel attached them to this datagram
 * (SCM_CREDENTIALS): its process, and its real (or, if it chose, effective)
 * user and group.  Supplementary groups do not travel with a datagram.  pid
 * is 0 when the kernel knows none: a sender in a pid namespace udsd cannot
 * see, or a datagram queued before SO_PASSCRED was set on a socket that
 * systemd passed without PassCredentials=yes (its uid and gid then read
 * 65534); the allow-lists refuse such a datagram.  -ENODATA if none came.
 */
UDSD_API int udsd_dgram_sender(const struct udsd_dgram *d, pid_t *ret_pid, uid_t *ret_uid,
			       gid_t *ret_gid);

/*
 * The sender's address, where replies go: 0, or -EDESTADDRREQ for a sender
 * that bound none (it can send but not be answered).  An abstract address
 * starts with a NUL byte; ret_len counts it.
 */
UDSD_API int udsd_dgram_address(const struct udsd_dgram *d,
				const struct sockaddr_un **ret_addr, socklen_t *ret_len);

/*
 * Send one datagram to the sender's address, from the listener's socket.
 * Never blocks: a reply the sender's queue (or the socket's send buffer)
 * cannot take now is dropped and counted, as is one to a sender that bound
 * no address or is gone.  Returns 0, or the -errno why it was dropped
 * (-EAGAIN, -EDESTADDRREQ, -ECONNREFUSED, -EMSGSIZE, ...; -EACCES when the
 * worker's user may not write to the sender's socket file).  Any number of
 * replies may be sent during on_datagram.
 */
UDSD_API int udsd_dgram_reply(struct udsd_dgram *d, const void *data, size_t len);

/*
 * Descriptors that came with the datagram (SCM_RIGHTS), for a service with
 * UDSD_SERVICE_RECV_FDS (for others the kernel refuses them where it can,
 * else udsd closes them): udsd_dgram_take_fd() makes fd i the service's
 * (-EBADF if taken or out of range); udsd closes the rest after on_datagram.
 * udsd_dgram_fd() looks without taking.
 */
UDSD_API size_t udsd_dgram_n_fds(const struct udsd_dgram *d);
UDSD_API int udsd_dgram_take_fd(struct udsd_dgram *d, size_t i);
UDSD_API int udsd_dgram_fd(const struct udsd_dgram *d, size_t i);

/* The per-thread state that init returned for the datagram's listener. */
UDSD_API void *udsd_dgram_state(const struct udsd_dgram *d);

/*
 * The daemon's live status as JSON (version, uptime, listeners, per-worker
 * counters).  Returns the length it needed, like snprintf.
 */
UDSD_API size_t udsd_status_json(char *buf, size_t size);

/*
 * A service's own keys, in the syntax of udsd's: durations "30us", "250ms",
 * "10s", "5min", "1h" (a bare number is seconds); sizes in bytes, "8192",
 * "64k", "1M", "1G" (k/K/KiB, M/MiB, G/GiB: powers of 1024).  Both return 0,
 * or -EINVAL / -ERANGE, and write the result only on success.
 */
UDSD_API int udsd_parse_duration(const char *s, uint64_t *ret_usec);
UDSD_API int udsd_parse_size(const char *s, uint64_t *ret_bytes);

/*
 * A service's keys as a table, the shape of udsd's own schema: check() and
 * init() hand it to udsd_keys_parse(), which starts from every default and
 * then applies the listener's keys, so that defaults live in the table alone.
 */
enum udsd_key_type {
	UDSD_KEY_UINT,	   /* a decimal number */
	UDSD_KEY_SIZE,	   /* bytes, with an optional k, M or G */
	UDSD_KEY_DURATION, /* microseconds, written with a unit */
	UDSD_KEY_PATH,	   /* a URL path such as /status: a char array of max bytes */
};

#define UDSD_KEY_OFF 1u /* "off" is accepted and stored as 0 (a path: as "") */

struct udsd_key {
	const char *key;
	enum udsd_key_type type;
	size_t offset;	   /* of a uint64_t (a path: a char array) in the service's settings */
	uint64_t min, max; /* inclusive; max 0: no upper bound (a path: the array's size) */
	unsigned flags;	   /* UDSD_KEY_OFF */
	const char *def;   /* the default as written in a config file; NULL: none */
	const char *doc;   /* one line, for the service's documentation */
};

/*
 * Fill settings from the table's defaults, then from config's keys.  Returns
 * 0, or -errno with "key: what is wrong" in err (an unknown key is an error);
 * settings may then be partly written.
 */
UDSD_API int udsd_keys_parse(const struct udsd_key *keys, size_t n_keys,
			     const struct udsd_service_config *config, void *settings, char *err,
			     size_t errlen);
