/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-login.h>

#include "daemon.h"

/*
 * On demand (exit_idle_time), every idle exit costs the next client a start,
 * and systemd counts starts against the unit's start limit: more than
 * StartLimitBurst= within StartLimitIntervalSec= and the unit fails, and
 * udsd.socket with it (Result=service-start-limit-hit), refusing every
 * client until an operator acts.  So a run lasts at least interval/burst:
 * then no window of the interval can hold more than burst starts.
 *
 * systemd's ratelimit (ratelimit_below()) opens a window at the first start
 * and resets it only once strictly more than the interval has passed: starts
 * exactly interval/burst apart put burst + 1 of them in one window.  Hence a
 * margin; and the time from systemd's start to ours (ExecStartPre=, exec)
 * only adds to the distance between two starts.
 */

/* systemd's defaults (DefaultStartLimitIntervalSec=, DefaultStartLimitBurst=). */
#define DEFAULT_INTERVAL_USEC (10 * USEC_PER_SEC)
#define DEFAULT_BURST 5
#define MARGIN_MIN_USEC (100 * USEC_PER_MSEC)

/* The system bus; without a bus daemon, systemd's own socket (root only), as systemctl does. */
static int
bus_open(sd_bus **ret)
{
	sd_bus *bus = NULL;
	int r = sd_bus_open_system(ret);

	if (r >= 0)
		return r;
	r = sd_bus_new(&bus);
	if (r >= 0)
		r = sd_bus_set_address(bus, "unix:path=/run/systemd/private");
	if (r >= 0)
		r = sd_bus_start(bus);
	if (r < 0) {
		sd_bus_unref(bus);
		return r;
	}
	*ret = bus;
	return 0;
}

/* The unit's StartLimitIntervalUSec and StartLimitBurst, read over D-Bus. */
static int
read_limits(const char *unit, uint64_t *ret_interval, unsigned *ret_burst)
{
	_cleanup_free_ char *path = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus *bus = NULL;
	uint64_t interval;
	uint32_t burst;
	int r;

	r = sd_bus_path_encode("/org/freedesktop/systemd1/unit", unit, &path);
	if (r >= 0)
		r = bus_open(&bus);
	if (r >= 0)
		r = sd_bus_get_property_trivial(bus, "org.freedesktop.systemd1", path,
						"org.freedesktop.systemd1.Unit",
						"StartLimitIntervalUSec", &error, 't', &interval);
	if (r >= 0)
		r = sd_bus_get_property_trivial(bus, "org.freedesktop.systemd1", path,
						"org.freedesktop.systemd1.Unit", "StartLimitBurst",
						&error, 'u', &burst);
	sd_bus_error_free(&error);
	sd_bus_flush_close_unref(bus);
	if (r < 0)
		return r;
	*ret_interval = interval;
	*ret_burst = burst;
	return 0;
}

/*
 * How long a run must last before an idle exit: interval/burst of our
 * unit's start limit and a margin; systemd's defaults when the unit cannot
 * be asked; 0 when the unit has no limit or we run outside systemd.
 */
uint64_t
startlimit_min_run(void)
{
	_cleanup_free_ char *unit = NULL;
	uint64_t interval = DEFAULT_INTERVAL_USEC, run;
	unsigned burst = DEFAULT_BURST;
	int r;

	/* Not started by systemd as a unit (INVOCATION_ID): nobody counts our starts. */
	if (!getenv("INVOCATION_ID"))
		return 0;
	r = sd_pid_get_unit(0, &unit);
	if (r >= 0)
		r = read_limits(unit, &interval, &burst);
	if (r < 0)
		log_notice("start limit of %s: %s; assuming systemd's default, %u starts in %llus",
			   unit ? unit : "our unit", strerror(-r), burst,
			   (unsigned long long)(interval / USEC_PER_SEC));
	if (interval == 0 || burst == 0 || interval == UINT64_MAX)
		return 0;
	run = interval / burst;
	run += MAX(MARGIN_MIN_USEC, run / 10);
	log_info("start limit: %u starts in %llums; "
		 "an idle exit comes %llums after the start at the earliest", burst,
		 (unsigned long long)(interval / USEC_PER_MSEC), (unsigned long long)(run / USEC_PER_MSEC));
	return run;
}
