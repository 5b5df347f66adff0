/* SPDX-License-Identifier: MIT */
/*
 * load.c without a master: workers, their channels and the shared counters
 * are plain structs here, and a "close" is the worker's counter moving.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "daemon.h"

#define N_WORKERS 3
#define N_THREADS 2

struct bench {
	struct generation gen, other;
	struct config config;
	struct config_pool pools[2];
	struct config_listener listeners[2];
	struct service services[2];
	struct mworker workers[N_WORKERS];
	struct mchannel chan[N_WORKERS][N_THREADS];
	struct mchannel *targets[N_WORKERS * N_THREADS];
	struct load_set set;
	struct load_caps caps;
	struct status *st;
};

static const struct udsd_service plain = { .name = "plain" };
static const struct udsd_service takes_fds = { .name = "fds", .flags = UDSD_SERVICE_RECV_FDS };

static int
setup(void **state)
{
	struct bench *b = calloc(1, sizeof(*b));

	assert_non_null(b);
	b->st = aligned_alloc(STATUS_PAGE, sizeof(*b->st));
	assert_non_null(b->st);
	memset(b->st, 0, sizeof(*b->st));
	b->pools[0] = b->pools[1] = (struct config_pool){ .threads = N_THREADS,
							   .max_connections = 100 };
	b->config = (struct config){ .pools = b->pools, .n_pools = 1, .listeners = b->listeners,
				     .n_listeners = 1 };
	b->listeners[0].type = b->listeners[1].type = SOCK_STREAM;
	b->services[0].ops = b->services[1].ops = &plain;
	b->gen = (struct generation){ .id = 1, .config = &b->config, .services = b->services };
	b->other = (struct generation){ .id = 2, .config = &b->config, .services = b->services };
	for (unsigned i = 0; i < N_WORKERS; i++) {
		b->workers[i] = (struct mworker){ .state = WORKER_RUNNING, .slot = i,
						  .gen = &b->gen, .n_threads = N_THREADS,
						  .chan = b->chan[i] };
		for (unsigned t = 0; t < N_THREADS; t++)
			b->chan[i][t] = (struct mchannel){ .worker = &b->workers[i] };
	}
	b->set = (struct load_set){ .targets = b->targets };
	b->caps = (struct load_caps){ .per_worker = 100 };
	load_set_build(&b->set, b->workers, N_WORKERS, &b->gen, 0);
	*state = b;
	return 0;
}

static int
teardown(void **state)
{
	struct bench *b = *state;

	free(b->st);
	free(b);
	return 0;
}

/* Hand n clients to worker i's thread t, as a flush would. */
static void
sent(struct bench *b, unsigned i, unsigned t, unsigned n)
{
	b->chan[i][t].sent += n;
}

/* Thread t of worker i closes n clients, as the worker would. */
static void
close_clients(struct bench *b, unsigned i, unsigned t, unsigned n)
{
	for (unsigned k = 0; k < n; k++)
		(void)load_closed(&b->st->slots[i].threads[t], b->st);
}

/* Every worker at a cap of one, its client on thread t. */
static void
all_full(struct bench *b, unsigned t)
{
	b->caps.per_worker = 1;
	for (unsigned i = 0; i < N_WORKERS; i++)
		sent(b, i, t, 1);
	load_refresh(&b->set, b->st->slots);
	assert_int_equal(load_room(&b->set, &b->caps), 0);
}

static void
test_load_is_sent_minus_closed_plus_pending(void **state)
{
	struct bench *b = *state;

	sent(b, 0, 1, 5);
	close_clients(b, 0, 1, 2);
	b->chan[0][1].n_pending = 3;
	assert_int_equal(load_thread(&b->chan[0][1]), 8); /* closed not read yet */
	load_refresh(&b->set, b->st->slots);
	assert_int_equal(load_thread(&b->chan[0][1]), 6);
	assert_int_equal(load_worker(&b->workers[0]), 6);
	assert_int_equal(load_worker(&b->workers[1]), 0);
}

/* A worker's counter can only make it look busier: never below what was read, never above sent. */
static void
test_refresh_distrusts_the_worker(void **state)
{
	struct bench *b = *state;
	_Atomic uint64_t *closed = &b->st->slots[2].threads[0].closed;

	/* What the worker writes, and the load the master then believes, of 4 sent. */
	static const unsigned steps[][2] = { { 3, 1 }, { 1, 1 } /* goes back */,
					     { 1000, 0 } /* passes sent */ };

	sent(b, 2, 0, 4);
	for (size_t k = 0; k < ELEMENTSOF(steps); k++) {
		atomic_store(closed, steps[k][0]);
		load_refresh(&b->set, b->st->slots);
		assert_int_equal(load_thread(&b->chan[2][0]), steps[k][1]);
	}
}

static void
test_set_holds_the_running_workers_of_its_generation(void **state)
{
	struct bench *b = *state;

	b->workers[0].state = WORKER_DRAINING;
	b->workers[2].gen = &b->other;
	load_set_build(&b->set, b->workers, N_WORKERS, &b->gen, 0);
	assert_int_equal(b->set.n_targets, N_THREADS);
	for (unsigned t = 0; t < N_THREADS; t++)
		assert_ptr_equal(b->set.targets[t], &b->chan[1][t]);
	b->workers[1].state = WORKER_FREE;
	load_set_build(&b->set, b->workers, N_WORKERS, &b->gen, 0);
	assert_int_equal(b->set.n_targets, 0);
	assert_null(load_pick(&b->set, &b->caps));
	assert_int_equal(load_room(&b->set, &b->caps), 0);
}

/* A pool's set holds its own workers, and none that is being replaced. */
static void
test_set_holds_its_pool_only(void **state)
{
	struct bench *b = *state;

	b->workers[0].pool = 1;
	b->workers[2].retiring = true;
	load_set_build(&b->set, b->workers, N_WORKERS, &b->gen, 0);
	assert_int_equal(b->set.n_targets, N_THREADS);
	assert_ptr_equal(b->set.targets[0], &b->chan[1][0]);
	load_set_build(&b->set, b->workers, N_WORKERS, &b->gen, 1);
	assert_int_equal(b->set.n_targets, N_THREADS);
	assert_ptr_equal(b->set.targets[0], &b->chan[0][0]);
}

static void
test_pick_least_loaded(void **state)
{
	struct bench *b = *state;

	static const unsigned loads[N_WORKERS][N_THREADS] = { { 3, 1 }, { 2, 4 }, { 5, 2 } };

	for (unsigned i = 0; i < N_WORKERS; i++)
		for (unsigned t = 0; t < N_THREADS; t++)
			sent(b, i, t, loads[i][t]);
	for (int round = 0; round < 10; round++)
		assert_ptr_equal(load_pick(&b->set, &b->caps), &b->chan[0][1]);
	b->chan[0][1].n_pending = 2; /* queued clients count: now 3, and 2 is least */
	struct mchannel *x = load_pick(&b->set, &b->caps), *y = load_pick(&b->set, &b->caps);
	assert_true((x == &b->chan[1][0] && y == &b->chan[2][1]) ||
		    (x == &b->chan[2][1] && y == &b->chan[1][0]));
}

/* Equal loads: successive picks go round every thread before any comes again. */
static void
test_ties_rotate(void **state)
{
	struct bench *b = *state;
	const unsigned n = N_WORKERS * N_THREADS;
	unsigned seen[N_WORKERS][N_THREADS] = { { 0 } };

	for (unsigned k = 0; k < 3 * n; k++) {
		struct mchannel *ch = load_pick(&b->set, &b->caps);
		unsigned i = (unsigned)(ch->worker - b->workers);

		seen[i][ch - b->chan[i]]++;
		for (unsigned w = 0; k % n == n - 1 && w < N_WORKERS; w++)
			for (unsigned t = 0; t < N_THREADS; t++)
				assert_int_equal(seen[w][t], k / n + 1);
	}
}

/* max_connections is per worker: a worker at it gets nothing, whatever its threads hold. */
static void
test_per_worker_cap(void **state)
{
	struct bench *b = *state;

	b->caps.per_worker = 4;
	sent(b, 0, 0, 4); /* worker 0 full on one thread; its other thread is empty */
	sent(b, 1, 0, 1);
	sent(b, 1, 1, 1);
	sent(b, 2, 0, 3);
	assert_int_equal(load_room(&b->set, &b->caps), 0 + 2 + 1);
	for (int k = 0; k < 20; k++)
		assert_ptr_not_equal(load_pick(&b->set, &b->caps)->worker, &b->workers[0]);
	b->chan[1][1].n_pending = 2; /* worker 1 full too */
	assert_int_equal(load_room(&b->set, &b->caps), 1);
	assert_ptr_equal(load_pick(&b->set, &b->caps), &b->chan[2][1]);
	b->chan[2][1].n_pending = 1;
	assert_int_equal(load_room(&b->set, &b->caps), 0);
	assert_null(load_pick(&b->set, &b->caps));
	close_clients(b, 0, 0, 1);
	load_refresh(&b->set, b->st->slots);
	assert_int_equal(load_room(&b->set, &b->caps), 1);
	assert_ptr_equal(load_pick(&b->set, &b->caps), &b->chan[0][1]);
}

/* max_connections_total bounds the sum, below what the workers' own caps leave. */
static void
test_total_cap(void **state)
{
	struct bench *b = *state;

	b->caps = (struct load_caps){ .per_worker = 10, .total = 12 };
	sent(b, 0, 0, 5);
	sent(b, 1, 1, 5);
	assert_int_equal(load_room(&b->set, &b->caps), 2);
	b->chan[2][0].n_pending = 2;
	assert_int_equal(load_room(&b->set, &b->caps), 0);
	sent(b, 2, 1, 3); /* past the total (a reload lowered it): no room, not a wrap */
	assert_int_equal(load_room(&b->set, &b->caps), 0);
	b->caps.total = 0;
	assert_int_equal(load_room(&b->set, &b->caps), 5 + 5 + 5);
}

/* A thread's queue holds CHANNEL_MAX_FDS: a full one is not picked, and bounds the room. */
static void
test_full_queue(void **state)
{
	struct bench *b = *state;

	b->caps.per_worker = 1000;
	for (unsigned i = 0; i < N_WORKERS; i++)
		for (unsigned t = 0; t < N_THREADS; t++)
			b->chan[i][t].n_pending = CHANNEL_MAX_FDS;
	b->chan[1][0].n_pending = CHANNEL_MAX_FDS - 1;
	b->chan[1][0].sent = 500; /* the most loaded, but the only one with queue room */
	assert_int_equal(load_room(&b->set, &b->caps), 1);
	assert_ptr_equal(load_pick(&b->set, &b->caps), &b->chan[1][0]);
}

/* No room: the master asks to be woken; a close then wakes it, and it finds the room. */
static void
test_handshake(void **state)
{
	struct bench *b = *state;

	all_full(b, 1);
	assert_false(load_closed(&b->st->slots[0].threads[0], b->st)); /* nobody waits */
	assert_true(load_wait_for_room(&b->set, &b->caps, b->st));
	assert_int_equal(atomic_load(&b->st->room_wanted), 1);
	assert_true(load_closed(&b->st->slots[2].threads[1], b->st)); /* wakes the master */
	assert_false(load_wait_for_room(&b->set, &b->caps, b->st));
	assert_int_equal(atomic_load(&b->st->room_wanted), 0);
	assert_int_equal(load_room(&b->set, &b->caps), 1);
	assert_ptr_equal(load_pick(&b->set, &b->caps)->worker, &b->workers[2]);
}

/* A close that raced with the master's count is found by its second look: no wakeup needed. */
static void
test_handshake_close_before_the_flag(void **state)
{
	struct bench *b = *state;

	all_full(b, 0);
	assert_false(load_closed(&b->st->slots[1].threads[0], b->st)); /* after the count */
	assert_false(load_wait_for_room(&b->set, &b->caps, b->st));
	assert_int_equal(atomic_load(&b->st->room_wanted), 0);
	load_wait_end(b->st);
	assert_int_equal(atomic_load(&b->st->room_wanted), 0);
}

struct race {
	struct bench *b;
	pthread_barrier_t go, done;
	bool woken; /* the worker saw room_wanted */
	int rounds;
};

static void *
race_worker(void *userdata)
{
	struct race *r = userdata;

	for (int k = 0; k < r->rounds; k++) {
		pthread_barrier_wait(&r->go);
		r->woken = load_closed(&r->b->st->slots[0].threads[0], r->b->st);
		pthread_barrier_wait(&r->done);
		pthread_barrier_wait(&r->done); /* the master checked and reset */
	}
	return NULL;
}

/*
 * The master and a thread at once, many times: whichever order the two
 * sides run in, the master either finds the room or gets woken.  Never both
 * missed (the master waits with nobody to wake it).
 */
static void
test_handshake_never_misses_a_close(void **state)
{
	struct bench *b = *state;
	struct race r = { .b = b, .rounds = 10000 };
	pthread_t th;

	b->caps.per_worker = 1;
	b->workers[1].state = b->workers[2].state = WORKER_FREE;
	load_set_build(&b->set, b->workers, N_WORKERS, &b->gen, 0);
	pthread_barrier_init(&r.go, NULL, 2);
	pthread_barrier_init(&r.done, NULL, 2);
	assert_int_equal(pthread_create(&th, NULL, race_worker, &r), 0);
	for (int k = 0; k < r.rounds; k++) {
		sent(b, 0, 0, 1); /* full again */
		load_refresh(&b->set, b->st->slots);
		assert_int_equal(load_room(&b->set, &b->caps), 0);
		pthread_barrier_wait(&r.go);
		bool waits = load_wait_for_room(&b->set, &b->caps, b->st);
		pthread_barrier_wait(&r.done);
		assert_false(waits && !r.woken);
		load_wait_end(b->st);
		pthread_barrier_wait(&r.done);
	}
	pthread_join(th, NULL);
	pthread_barrier_destroy(&r.go);
	pthread_barrier_destroy(&r.done);
}

/* max_connections, lowered to what a worker can hold open under the fd limit. */
static void
test_caps(void **state)
{
	struct bench *b = *state;
	struct load_caps caps;
	unsigned reserve = 16 + 2 * N_THREADS;

	b->pools[0].max_connections = 100;
	b->pools[0].max_connections_total = 250;
	load_caps_set(&caps, &b->gen, 0, 1024);
	assert_int_equal(caps.per_worker, 100);
	assert_int_equal(caps.total, 250);
	load_caps_set(&caps, &b->gen, 0, reserve + 40);
	assert_int_equal(caps.per_worker, 40);
	load_caps_set(&caps, &b->gen, 0, 8); /* below the reserve: still one, not zero or a wrap */
	assert_int_equal(caps.per_worker, 1);
	/* A listener that takes descriptors needs room for a message's worth of them per thread. */
	b->config.n_listeners = 2;
	b->services[1].flags = takes_fds.flags;
	load_caps_set(&caps, &b->gen, 0, reserve + N_THREADS * FDPASS_MAX_FDS + 40);
	assert_int_equal(caps.per_worker, 40);
	/* ... but only a listener of the same pool. */
	b->config.n_pools = 2;
	b->listeners[1].pool = 1;
	load_caps_set(&caps, &b->gen, 0, reserve + 40);
	assert_int_equal(caps.per_worker, 40);
	b->listeners[1].pool = 0;
	b->services[1].flags = plain.flags;
	b->listeners[1].type = SOCK_SEQPACKET;
	load_caps_set(&caps, &b->gen, 0, reserve + N_THREADS * FDPASS_MAX_FDS + 40);
	assert_int_equal(caps.per_worker, 40);
}

/* Each test on a fresh bench. */
#define TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		TEST(test_load_is_sent_minus_closed_plus_pending),
		TEST(test_refresh_distrusts_the_worker),
		TEST(test_set_holds_the_running_workers_of_its_generation),
		TEST(test_set_holds_its_pool_only),
		TEST(test_pick_least_loaded),
		TEST(test_ties_rotate),
		TEST(test_per_worker_cap),
		TEST(test_total_cap),
		TEST(test_full_queue),
		TEST(test_handshake),
		TEST(test_handshake_close_before_the_flag),
		TEST(test_handshake_never_misses_a_close),
		TEST(test_caps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
