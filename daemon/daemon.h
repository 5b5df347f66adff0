/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The one internal header of the udsd executable, in three parts, one file
 * per concept:
 *
 * Shared memory and wire protocol (both processes)
 *   status.c     counters in shared memory, one sealed memfd per slot; /status JSON;
 *                what only the master knows, published there (master_status_publish())
 *   metrics.c    the same counters as OpenMetrics text; a listener's backlog (sock_diag)
 *   channel.c    the master<->worker channel, both ends: the wire format; the
 *                master's open, close, queue, flush, read and reclaim of a dead
 *                worker's fds; a worker thread's receive and dispatch
 *   service.c    built-in and loadable services: built-ins resolved in the master,
 *                plugins loaded only in their pool's workers
 *   plugin.c     a pool's plugins loaded and checked in a child with its credentials
 *   log.c        one line per event, journal-aware
 * Worker process
 *   credentials.c  a pool's user and groups, for its workers and plugin checks
 *   worker.c     the process (privileges, threads) and its threads' event loops
 *   conn.c       a client connection in a worker thread (the udsd_conn API)
 *   dgram.c      a dgram listener's socket in a worker thread (the udsd_dgram API)
 *   echo.c, http.c, http-parser.c, http-settings.c: the built-in services
 * Master process
 *   main.c       setup, signals, reload (the pending generation), shutdown, sd_notify
 *   listeners.c  sockets bound here or passed by systemd, kept across reloads
 *   pool.c       generations and pools; forking, reaping, respawning; stuck and hung
 *                workers (request_timeout); recycling (max_requests, max_rss); the
 *                dynamic pool
 *   accept.c     accept, admission, hand-off to a worker thread, clients waiting for one
 *   peer.c       who a client is: credentials, groups, systemd unit, per-uid counts
 *   load.c       load, least-loaded choice, room, caps, the room_wanted handshake
 *   upgrade.c    same-PID binary upgrade: check, state hand-off across execve, rollback
 *   fdstore.c    the sockets udsd binds, kept in systemd's fd store across restarts
 *   startlimit.c idle exits no more often than the unit's start limit allows
 *   admin.c      the admin socket: udsctl's requests, answered without blocking the loop
 * udsctl.c is a program of its own (libc only), the admin socket's client.
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"
#include "fdpass.h"
#include "listener.h"
#include "macro.h"
#include "sockact.h"
#include "udsd.h"

#ifndef UDSD_VERSION
#define UDSD_VERSION "0"
#endif

/* ======== Shared memory and wire protocol ======== */

/* log.c */
void log_open(void);
void log_set_level(int level);
void log_set_prefix(const char *prefix);
_printf_(2, 3) void log_msg(int level, const char *fmt, ...);
_printf_(1, 2) _noreturn_ void fatalx(const char *fmt, ...);
#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

uint64_t now_usec(void);
/* Async-signal-safe, for the stuck-thread handler. */
void fmt_long(char *buf, long v);
void log_signal_safe(int level, const char *const *parts);
void log_backtrace_prepare(void);
void log_backtrace(void);

/* Why the master turned a client away, counted apart in /status. */
enum refuse_reason {
	REFUSE_UID,	 /* not on allow_uids/allow_gids */
	REFUSE_UNIT,	 /* not in one of allow_units */
	REFUSE_PER_UID, /* max_connections_per_uid reached */
	REFUSE_REASONS,
};

extern const char *const refuse_reason_names[REFUSE_REASONS];

/*
 * status.c: one shared mapping, made by the master before any fork.  Each
 * worker slot sits on pages of its own, so that a worker can be left write
 * access to its slot alone (status_restrict()).
 */
#define STATUS_MAX_SLOTS 256
#define STATUS_PAGE 4096

/* dgram.c: what a thread did with the datagrams it read from dgram listeners. */
struct status_dgram {
	_Atomic uint64_t received;  /* read from a socket, whatever came of them */
	_Atomic uint64_t refused;   /* dropped: the sender is not on the allow-lists */
	_Atomic uint64_t oversize;  /* dropped: larger than max_datagram */
	_Atomic uint64_t truncated; /* dropped: its control data (descriptors) did not fit */
	_Atomic uint64_t failed;    /* on_datagram returned an error */
	_Atomic uint64_t replies;
	_Atomic uint64_t replies_dropped; /* would have blocked, or nowhere to go */
};

struct status_thread {
	_Atomic uint64_t open;
	_Atomic uint64_t accepted;
	_Atomic uint64_t requests;
	_Atomic uint64_t refused;
	_Atomic uint64_t closed; /* clients this thread is done with, ever: for load.c */
	_Atomic uint64_t heartbeat_usec;
	_Atomic uint64_t busy_since; /* when the current service callback began; 0: in none */
	_Atomic uint32_t busy_listener; /* whose service that callback is */
	_Atomic int32_t tid;	       /* the thread, for the master's stuck signal */
	struct status_dgram dgram;
} __attribute__((aligned(64))); /* whole cache lines each: threads never share a line */

struct status_worker {
	_Atomic pid_t pid; /* 0: free slot */
	char pool_name[64]; /* its pool's, written by the master before the fork */
	/* Written by the master (status_publish()): clients handed to it, and queued for it. */
	_Atomic uint64_t handed;
	_Atomic uint32_t queued;
	unsigned generation;
	unsigned pool;	/* index in its generation's config */
	unsigned index; /* position in its pool */
	unsigned n_threads;
	uint64_t started_usec;
	struct status_thread threads[CONFIG_MAX_THREADS];
} __attribute__((aligned(STATUS_PAGE)));

/*
 * The master's counters of a listener of the current generation, carried by
 * name across reloads (status_publish_config()); what metrics.c shows.
 */
struct status_listener {
	char name[64];
	char address[112];
	int type;	/* SOCK_STREAM, ... */
	bool tcp;
	uint64_t inode; /* of its socket, for the backlog (sock_diag); 0: not known */
	_Atomic uint64_t accepted;
	_Atomic uint64_t refused_by[REFUSE_REASONS];
	_Atomic uint64_t handoffs; /* clients queued to a worker thread: new, migrated or reclaimed */
};

/* The master's counters of a pool of the current generation, carried by name likewise. */
struct status_pool {
	char name[64];
	_Atomic uint64_t crashes;
	_Atomic uint64_t accept_pauses; /* its listeners left unpolled: every worker full */
	_Atomic uint64_t reclaimed;	/* clients taken back from its dead workers' channels */
	_Atomic uint32_t waiting;	/* clients waiting in the master for one of its workers */
};

struct status {
	pid_t master_pid;
	uint64_t start_usec;
	_Atomic unsigned generation;
	_Atomic uint64_t refused; /* clients the master turned away (allow-lists) */
	_Atomic uint64_t refused_by[REFUSE_REASONS]; /* the same, by reason (accept.c) */
	_Atomic int room_wanted;   /* the master waits for a worker to have room (load.c) */
	_Atomic uint64_t reloads_ok, reloads_failed;
	_Atomic uint64_t accept_backoffs; /* accepts paused for lack of descriptors or memory */
	_Atomic uint64_t migrated;	  /* clients moved from an old generation to a new one */
	char reload_error[192]; /* the last failed reload's reason until the next good one */
	unsigned n_listeners, n_pools;
	struct status_listener listeners[CONFIG_MAX_LISTENERS];
	struct status_pool pools[CONFIG_MAX_POOLS];
	struct status_worker slots[STATUS_MAX_SLOTS];
};

extern struct status *status;
extern const struct config *status_config; /* the listeners /status shows */
int status_map(void);
int status_restrict(unsigned slot);
void status_forget(void);
void status_totals(uint64_t *ret_open, uint64_t *ret_accepted, unsigned *ret_workers);
uint64_t status_datagrams(void);
unsigned status_pool_workers(unsigned pool);
/* Clients handed to a worker's threads (or queued for them) and not yet taken in. */
uint64_t status_in_flight(const struct status_worker *w);

/* snprintf into a moving window that remembers how much it would have needed (status.c). */
struct out {
	char *buf;
	size_t size, len;
};

_printf_(2, 3) void out_printf(struct out *o, const char *fmt, ...);
void out_json_string(struct out *o, const char *s);

/* metrics.c: OpenMetrics text from the shared counters (either process). */
#define METRICS_CONTENT_TYPE "application/openmetrics-text; version=1.0.0; charset=utf-8"
size_t metrics_text(char *buf, size_t size);
int metrics_backlog(uint64_t inode, uint32_t *ret_queued, uint32_t *ret_max);

/* channel.c: one SOCK_SEQPACKET socketpair per worker thread. */
enum channel_type {
	CHANNEL_FDS = 1, /* m→w: count fds, listener index of each */
	CHANNEL_DRAIN,   /* m→w: take no more, finish, exit; count bytes: listeners that migrate */
	CHANNEL_CLOSED,  /* w→m: a client closed while the master waits for room */
	CHANNEL_READY,   /* w→m: this thread serves */
	CHANNEL_GONE,    /* w→m: a client of uid (arg) on the listener closed (max_connections_per_uid) */
	CHANNEL_DGRAM,   /* m→w, once: the dgram listeners' sockets, listener index of each */
	CHANNEL_MIGRATED, /* w→m: count fds handed back at a message boundary, listener of each */
};

/*
 * The channel's protocol version, carried across a binary upgrade: an image
 * that adopts workers of another version speaks theirs (version 1 knows no
 * CHANNEL_DRAIN payload and no CHANNEL_MIGRATED).
 */
#define CHANNEL_VERSION 2

#define CHANNEL_MAX_FDS 64

struct channel_msg {
	uint16_t type;
	uint16_t count;
	uint32_t arg;
	uint8_t listener[CHANNEL_MAX_FDS]; /* CHANNEL_DRAIN: 1 if that listener's clients migrate */
};

int channel_pair(int *ret_master, int *ret_worker);
int channel_send(int fd, unsigned type, uint32_t arg, const int *fds, const uint8_t *listeners,
		 size_t n);
int channel_decode(const void *buf, size_t len, size_t n_fds, size_t n_listeners,
		   struct channel_msg *ret);
int channel_recv(int fd, size_t n_listeners, struct channel_msg *ret_msg, int *fds);
/* The two sides' own functions are under their process below. */

/* service.c */
struct service {
	/* A built-in's everywhere; a plugin's only in its pool's workers (service_open()). */
	const struct udsd_service *ops;
	void *dl; /* dlopen handle, or NULL for a built-in */
	char name[64];	/* ops->name, also where ops is not known */
	unsigned flags; /* ops->flags, likewise */
	struct udsd_service_config config;
	struct udsd_kv *kv;
};

extern const struct udsd_service service_echo;
extern const struct udsd_service service_http;

bool service_is_plugin(const struct config_listener *l);
int service_resolve(const struct config *c, struct service **ret, char *err, size_t errlen);
int service_load_plugin(struct service *s, const struct config *c, const struct config_listener *l,
			char *err, size_t errlen);
int service_check(const struct service *s, const struct config *c, const struct config_listener *l,
		  char *err, size_t errlen);
int service_open(struct service *s, const struct config *c, unsigned pool, char *err, size_t errlen);
void service_free(struct service *s, size_t n);

/* plugin.c: each pool's plugins loaded and checked in a child with its credentials. */
int plugin_check(const struct config *c, struct service *s, char *err, size_t errlen);

/* ======== Worker process ======== */

/* credentials.c: a pool's user and groups, taken for good (fatal on failure). */
void credentials_drop(const struct config_pool *pool);
void credentials_log(void);

/* worker.c */
struct worker_spec {
	const struct config *config;
	const struct config_pool *pool; /* the one this worker serves */
	unsigned pool_index;
	const struct service *services;
	unsigned slot;
	unsigned generation;
	const int *channels; /* config->threads worker ends */
};

_noreturn_ void worker_main(const struct worker_spec *spec);

/* The master's word to a worker thread stuck in a service callback (request_timeout). */
#define SIGNAL_STUCK (SIGRTMIN + 1)

/* worker.c and conn.c: one worker thread and the connections it serves. */
struct wthread {
	const struct worker_spec *spec;
	unsigned index;
	pthread_t self;
	int epfd;
	int chan;
	struct status_thread *stats;
	void **state; /* per listener: what its service's init returned */
	struct udsd_conn *conns; /* every open connection, for drain and timeouts */
	unsigned n_conns;
	struct udsd_conn *closed; /* closed during this round, freed at its end */
	struct udsd_conn *spare; /* freed connections kept for the next clients (conn_new) */
	unsigned n_spare;
	size_t freed; /* buffer bytes freed since the last malloc_trim() */
	bool wake_master;
	/* dgram.c: per listener, this thread's copy of its datagram socket (-EBADF: none). */
	int dgram[CONFIG_MAX_LISTENERS];
	unsigned dgram_wanted; /* dgram listeners: READY once every socket is here */
	uint8_t *dgram_buf;    /* max_datagram bytes, when more than ibuf holds */
	/* Closed clients of max_connections_per_uid listeners, not yet told to the master. */
	struct { uint8_t listener; uid_t uid; } *gone;
	size_t n_gone, cap_gone;
	int last_events; /* of the previous epoll round, for busy_poll */
	bool draining;
	bool done;
	/* Migration (reload): clients of listener i at a message boundary go back to the master. */
	bool migrate[CONFIG_MAX_LISTENERS];
	bool migrate_retry; /* a client at a boundary found the batch full: look again */
	size_t n_migrated;
	int migrated[CHANNEL_MAX_FDS]; /* handed back, sent at the round's end */
	uint8_t migrated_listener[CHANNEL_MAX_FDS];
	/* The service callback running now (conn.c), for the stuck handler. */
	struct udsd_conn *current;
	const char *current_callback;
	uint64_t now;
	uint64_t last_tick;
	/* Output of the connection inside a callback, flushed with one send() after it. */
	uint8_t *cork;
	size_t cork_len, cork_cap;
	uint8_t ibuf[64 * 1024];
};

struct udsd_conn {
	int fd;
	uint8_t listener;
	bool seqpacket;
	bool in_callback;
	bool closing; /* close once the output is flushed */
	bool eof;
	bool dead; /* closed or failed: discard further output */
	bool closed; /* fd closed and unlinked; only the memory is left, until the round ends */
	bool lingering; /* output done, discarding input until the client closes */
	bool read_full; /* the last read filled its buffer: more was likely coming */
	bool stalled; /* the service left input while congested: hand it over again first */
	bool sent_in_callback; /* the running callback's output reached the socket already */
	bool counted; /* the service counted a request (udsd_conn_count_request()) */
	size_t lingered;
	uint32_t events;
	struct wthread *thread;
	const struct service *service;
	void *state;
	void *data;
	uint8_t *in; /* bytes the service left unconsumed */
	size_t in_len, in_cap;
	uint8_t *out; /* bytes the client has not taken yet */
	size_t out_off, out_len, out_cap;
	int *fds;
	size_t n_fds;
	uint64_t timeout_usec; /* 0: the listener's idle_timeout */
	uint64_t deadline; /* idle: pushed back by reads, and by sends while output waits */
	uint64_t fixed_deadline; /* the service's (udsd_conn_set_deadline): nothing pushes it back */
	struct udsd_conn *prev, *next;
	struct udsd_conn *next_closed;
};

void conn_open(struct wthread *t, int fd, unsigned listener);
void worker_client_done(struct wthread *t);
void conn_event(struct udsd_conn *c, uint32_t events);
void conn_drain(struct udsd_conn *c);
bool conn_migrate(struct udsd_conn *c);
void conn_timeout(struct udsd_conn *c);
bool conn_expired(const struct udsd_conn *c, uint64_t now);
void conn_trim(struct udsd_conn *c);
void conn_close(struct udsd_conn *c);
void conn_reap(struct wthread *t);
void conn_free_spares(struct wthread *t);
void conn_stuck(struct wthread *t);

/* worker.c, for channel.c */
void worker_thread_drain(struct wthread *t, const struct channel_msg *msg);

/* dgram.c */
extern char dgram_tags[CONFIG_MAX_LISTENERS];

/* Is this epoll tag a dgram listener's (rather than a connection's)? */
static inline bool
dgram_is_tag(const void *ptr)
{
	uintptr_t p = (uintptr_t)ptr, tags = (uintptr_t)dgram_tags;

	return p - tags < sizeof(dgram_tags);
}

int dgram_thread_setup(struct wthread *t);
int dgram_thread_add(struct wthread *t, int fd, unsigned listener);
bool dgram_thread_has_all(const struct wthread *t);
void dgram_event(struct wthread *t, const void *tag);
void dgram_thread_drain(struct wthread *t);
void dgram_thread_teardown(struct wthread *t);

/* channel.c, a worker thread's end */
void channel_thread_read(struct wthread *t);
int channel_thread_ready(struct wthread *t);
void channel_thread_wake(struct wthread *t);
void channel_thread_gone(struct wthread *t);
void channel_thread_migrated(struct wthread *t);

/* load.c, a worker thread's side of the room_wanted handshake */
bool load_closed(struct status_thread *th, struct status *st);

/* ======== Master process ======== */

enum watch_kind { WATCH_SIGNAL, WATCH_LISTENER, WATCH_CHANNEL, WATCH_ADMIN, WATCH_ADMIN_CLIENT };

struct watch {
	enum watch_kind kind;
};

/* A config and its resolved services; workers started with it keep it alive. */
struct generation {
	unsigned id;
	unsigned refs;
	struct config *config;
	struct service *services;
};

struct mlistener {
	struct watch watch;
	unsigned index; /* in the current config: the byte a hand-off carries */
	char *address;
	int type;
	int fd;
	struct listener_file file; /* ours: the socket file, only ever reached through this */
	bool ours;      /* udsd created the file: it unlinks it at exit (unless stored) */
	bool passed;    /* systemd passed it: never unlinked, chmod'ed or re-bound */
	char *stored;   /* in systemd's fd store under this listener name (fdstore.c), or NULL */
	bool polling;
};

struct mchannel {
	struct watch watch;
	struct mworker *worker;
	int fd;   /* the master's end */
	int peer; /* the worker's end, kept so fds it never read can be taken back */
	/* load.c: the thread's load is sent - closed + n_pending (load_thread()). */
	uint64_t sent;	/* clients handed over, ever */
	uint64_t closed; /* the thread's closed count as last read, kept within 0..sent */
	bool ready;	/* the thread said READY */
	bool drain_wanted;
	bool want_out;
	size_t n_pending;
	int pending[CHANNEL_MAX_FDS];
	uint8_t pending_listener[CHANNEL_MAX_FDS];
};

enum worker_state { WORKER_FREE, WORKER_RUNNING, WORKER_DRAINING };

/* max_connections_per_uid: a worker holds n clients of uid on a listener of its config. */
struct uid_count {
	uint8_t listener;
	uid_t uid;
	unsigned n;
};

struct mworker {
	enum worker_state state;
	pid_t pid;
	unsigned slot; /* in status->slots and master->workers */
	unsigned pool;	/* in its generation's config */
	unsigned index; /* in its pool, for respawn */
	struct generation *gen;
	unsigned n_threads;
	unsigned ready;
	uint64_t started_usec;
	uint64_t kill_at; /* draining: SIGKILL after shutdown_timeout */
	/* Draining: the listeners (of its config) whose clients migrate, sent with CHANNEL_DRAIN. */
	uint8_t migrate[CONFIG_MAX_LISTENERS];
	unsigned n_migrate; /* 0: none migrate (stop, or a service that cannot) */
	bool killed;	  /* the master stopped it on purpose: its SIGKILL is no crash */
	uint64_t idle_since; /* no clients since then (0: busy) */
	/*
	 * Being replaced (recycled, or stuck past request_timeout): it takes no
	 * new client, and drains once a worker of the same pool and index is
	 * ready in its place.
	 */
	bool retiring;
	bool recycling; /* replaced for max_requests or max_rss: one per pool at a time */
	unsigned max_requests; /* its pool's, plus its own jitter; 0: no limit */
	uint64_t next_rss_check;
	uint64_t stuck; /* its threads found stuck in a callback, one bit each */
	struct uid_count *uids; /* clients of listeners with max_connections_per_uid */
	size_t n_uids, cap_uids;
	struct mchannel *chan;
	unsigned chan_version; /* CHANNEL_VERSION, or an adopted worker's own */
};

/* load.c: one balancer's targets and caps, one per pool. */
struct load_set {
	struct mchannel **targets; /* threads that take clients, each worker's together */
	size_t n_targets;
	size_t next; /* where the next pick starts, so that ties rotate */
};

struct load_caps {
	unsigned per_worker; /* max_connections, capped by what a worker can hold open */
	unsigned total;	     /* max_connections_total; 0: no cap */
};

/* A client taken back from a dead worker, waiting for a worker that can take it. */
struct orphan {
	int fd;
	uint8_t listener;
	uint64_t since;
};

/* A worker not READY this long after its start is hung (or a new generation failed). */
#define WORKER_READY_TIMEOUT_USEC (10 * USEC_PER_SEC)

/* One pool of the current generation, as the master runs it. */
struct mpool {
	unsigned index; /* in the current config's pools */
	struct load_set load; /* its running workers */
	struct load_caps caps;
	unsigned size; /* workers wanted now: workers, or workers_min..workers_max */
	uint64_t next_spawn_at;
	uint64_t respawn_at[CONFIG_MAX_WORKERS];
	uint64_t backoff_usec[CONFIG_MAX_WORKERS];
	unsigned crashes;
	bool waiting_for_room;
	bool polling; /* its listeners are polled (accept.c) */
	/* Clients no worker of the pool can take yet (accept.c): a FIFO. */
	struct orphan *orphans;
	size_t n_orphans, cap_orphans;
};

/* upgrade.c: a same-PID binary upgrade in progress, and what it needs. */
struct master_upgrade {
	char **argv;	 /* ours, for the next exec */
	char **old_argv; /* the first image's: a rollback runs the old binary as it was started */
	char *exe_path;	 /* where our binary was started from: a new one is looked for there */
	int exe_fd;	 /* our binary, open for a rollback even once the file is replaced */
	int old_exe_fd;	 /* while adopting: the binary we came from, to roll back to */
	char *binary;	 /* the one being checked */
	pid_t check_pid; /* its "-t" run */
	int check_out;
	uint64_t check_deadline;
	bool adopting; /* new image: the adopted workers wait for our generation */
	uint64_t adopt_deadline;
	bool rolled_back; /* this image is a rollback: never roll back again */
	bool wanted;	  /* SIGUSR2 came while a reload ran: the upgrade starts once it is over */
	dev_t target_dev; /* the binary being checked or, in a new image, the one running */
	ino_t target_ino;
	char *env_rollback;
	char error[192]; /* why the last upgrade failed, in STATUS= until the next good one */
};

struct admin;

struct master {
	int epfd;
	struct watch signal_watch;
	int sigfd;
	const char *config_file;
	unsigned last_gen_id;
	struct generation *gen;
	struct mlistener *listeners; /* parallel to gen->config->listeners */
	size_t n_listeners;
	/* A reload in progress: gen serves until every thread of pending is READY. */
	struct generation *pending;
	struct mlistener *pending_listeners; /* installed only at the switch */
	uint64_t pending_deadline;
	char pending_error[128]; /* why pending failed, set where a worker of it is reaped */
	char reload_error[192];	 /* why the last reload failed; cleared by the next good one */
	size_t max_orphans, orphans_dropped; /* clients waiting for a worker, per pool at most */
	struct mworker workers[STATUS_MAX_SLOTS];
	unsigned n_slots; /* 1 + the highest slot ever used: where loops over workers stop */
	struct mpool pools[CONFIG_MAX_POOLS]; /* the current generation's */
	size_t n_pools;
	bool activated; /* started by socket activation: systemd passed sockets */
	bool stopping;
	bool reload_wanted; /* SIGHUP came while an upgrade's generation started: reload after it */
	bool ready_sent;
	unsigned stop_signals;
	uint64_t stop_deadline;
	uint64_t accept_resume_at; /* after EMFILE and friends */
	bool waiting_for_room; /* some pool is */
	uint64_t idle_since; /* exit_idle_time: no client anywhere since then */
	bool has_dgram;	     /* a dgram listener: STATUS= and idleness count datagrams */
	uint64_t datagrams_seen; /* status_datagrams() at the last idleness check */
	uint64_t started_usec;
	uint64_t idle_exit_at; /* no idle exit before (startlimit.c); UINT64_MAX: not asked yet */
	unsigned fd_limit;
	uint64_t next_status;
	uint64_t watchdog_usec;
	uint64_t next_watchdog;
	uint64_t refused_logged_at;
	unsigned refused_unlogged;
	char status_text[512];
	struct master_upgrade up;
	struct admin *admin; /* admin.c; NULL: no admin socket */
};

/* channel.c, the master's end */
typedef bool channel_hand_fn(struct master *m, const struct mworker *w, int fd, unsigned listener);
int channel_open(struct master *m, struct mworker *w);
void channel_close(struct master *m, struct mworker *w);
void channel_queue(struct master *m, struct mchannel *ch, int fd, unsigned listener);
void channel_flush(struct master *m, struct mchannel *ch);
void channel_flush_all(struct master *m);
void channel_drain(struct master *m, struct mworker *w);
void channel_read(struct master *m, struct mchannel *ch, channel_hand_fn *migrated);
int channel_adopt(struct master *m, struct mworker *w);
size_t channel_reclaim(struct master *m, struct mworker *w, channel_hand_fn *hand);
int channel_send_dgram(struct mworker *w, const struct mlistener *ls, size_t n);

/* load.c */
unsigned load_thread(const struct mchannel *ch);
unsigned load_worker(const struct mworker *w);
void load_set_build(struct load_set *set, struct mworker *workers, size_t n,
		    const struct generation *g, unsigned pool);
void load_refresh(struct load_set *set, const struct status_worker *slots);
void load_refresh_worker(struct mworker *w, const struct status_worker *slot);
unsigned load_room(const struct load_set *set, const struct load_caps *caps);
struct mchannel *load_pick(struct load_set *set, const struct load_caps *caps);
bool load_wait_for_room(struct load_set *set, const struct load_caps *caps, struct status *st);
void load_wait_end(struct status *st);
void load_caps_set(struct load_caps *ret, const struct generation *g, unsigned pool,
		   unsigned fd_limit);

/* listeners.c */
int listeners_take_passed(void);
void listeners_warn_unused_passed(void);
void listeners_free_passed(void);
void listeners_passed_get(struct sockact_fd **ret, size_t *ret_n);
void listeners_passed_set(struct sockact_fd *fds, size_t n);
int listeners_build(const struct config *c, struct mlistener *old, size_t n_old,
		    struct mlistener **ret);
void listeners_install(struct master *m, struct mlistener *ls, size_t n);
void listeners_discard(struct mlistener *ls, size_t n, const struct mlistener *in_use,
		       size_t n_in_use);
void listeners_apply_perms(const struct config *c, struct mlistener *ls);
void listeners_apply_passrights(const struct generation *g, struct mlistener *ls,
				bool only_enable);
void listeners_close_one(struct master *m, struct mlistener *l, bool unlink_file);
bool listeners_pending(const struct master *m);
bool listeners_all_passed(const struct master *m);
bool listeners_has_dgram(const struct master *m);
int listeners_remap(const struct config *to, const struct config *from, unsigned index);

/*
 * upgrade.c.  master_upgrade_start() is what SIGUSR2 runs, for an admin
 * command too: 0 means the check of the new binary started; the outcome is
 * asynchronous.  Failure: m->up.error says why (also in the log and STATUS=),
 * m->up.check_pid is 0 again.  Success: the process re-executes itself, and
 * the new image's READY=1 (generation + 1, same PID) follows RELOADING=1; a
 * rollback shows in its m->up.error.  -EBUSY: a reload, upgrade or stop runs.
 */
void upgrade_init(struct master *m, char **argv);
int upgrade_check_version(long version);
int master_upgrade_start(struct master *m, const char *binary, char *err, size_t errlen);
void upgrade_request(struct master *m);
bool upgrade_reaped(struct master *m, pid_t pid, int wstatus);
void upgrade_tick(struct master *m);
int upgrade_adopt(struct master *m, int fd, struct generation *g);
_noreturn_ void upgrade_adopt_failed(struct master *m, int fd, const char *why);
void upgrade_rollback(struct master *m, const char *why);


/* status.c, the master's side: what it knows, shown in the shared counters. */
void master_status_publish_config(const struct master *m);
void master_status_publish(const struct master *m);

/*
 * admin.c: the admin socket ([admin] path) and its clients, served by the
 * master without ever blocking on them.
 */
int admin_open(struct master *m);
void admin_close(struct master *m);
void admin_event(struct master *m, struct watch *w, uint32_t events);
void admin_tick(struct master *m);
uint64_t admin_next_deadline(const struct master *m);
void admin_reload_done(struct master *m, const char *error);
void admin_reconfigure(struct master *m);

/* main.c, for admin.c */
int master_reload(struct master *m, char *err, size_t errlen);

/* startlimit.c */
uint64_t startlimit_min_run(void);

/* fdstore.c */
bool fdstore_enabled(void);
const char *fdstore_listener(const char *fdname);
int fdstore_put(const char *listener, int fd);
void fdstore_remove(const char *listener);

/* accept.c */
void accept_listener(struct master *m, struct mlistener *l);
void accept_dispatch(struct master *m, int fd, unsigned listener);
void accept_update_polling(struct master *m);
void accept_orphans_flush(struct master *m);
void accept_orphans_remap(struct master *m, struct mpool *old, size_t n_old,
			  const struct generation *from);
void accept_orphans_drop(struct master *m, const char *why);
void accept_orphans_take_pending(struct master *m);
void accept_orphans_free(struct mpool *p);

/* peer.c */
bool peer_ids_allowed(const struct config_listener *cl, int fd, const struct ucred *cred);
int peer_unit(int fd, pid_t pid, char **ret_unit);
unsigned peer_open(const struct master *m, const struct config_listener *l, uid_t uid);
void peer_count(struct mworker *w, unsigned listener, uid_t uid);
void peer_gone(struct mworker *w, unsigned listener, uid_t uid);

/* pool.c */
int pool_spawn(struct master *m, struct generation *g, unsigned pool, unsigned index);
void pools_setup(struct master *m, const struct generation *old);
unsigned pools_wanted(const struct master *m);
unsigned pools_crashes(const struct master *m);
void pool_drain(struct master *m, struct mworker *w, bool migrate);
int pool_migrate_index(const struct generation *to, const struct generation *from, unsigned index);
bool pool_migrated(struct master *m, const struct mworker *from, int fd, unsigned listener);
void pool_kill(struct mworker *w);
void pool_reap(struct master *m);
void pool_check(struct master *m);
void pool_adjust(struct master *m);
void pool_targets_update(struct master *m);
unsigned pool_count(const struct master *m, enum worker_state state);
int generation_new(struct master *m, struct config *c, struct service *s, struct generation **ret);
void generation_unref(struct generation *g);
bool generation_ready(const struct master *m, const struct generation *g, const struct mpool *sizes);

static inline void
generation_unrefp(struct generation **g)
{
	generation_unref(*g);
}

static inline void
config_freep(struct config **c)
{
	config_free(*c);
}
